"""CromSS's settings: the typed config, the ``tiny`` / ``small`` / ``full`` profiles, the paper's values.

Liu, Albrecht, Wang & Zhu (2025), Sec. IV-A, and the authors' code (zhu-xlab/CromSS, see
``shared/papers/NOTES.md``): the pretraining script ``train_SSL4EO_unet_pl_pretrain_mm_sscom.py``, the transfer
scripts ``train_SSL4EO_pl_ft_{DFC2020,DWOSM}.py`` with ``models/pl_finetune{,_mask}.py`` and the launchers
``train_SSL4EO_pl_ft_{DFC2020,DW,OSM}.sh``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...config import (ChapterConfig, ConfigError, Paper, check_choice, check_non_negative, check_positive,
                       check_range)

#: The three transfer tasks of Sec. IV-A, in the paper's order (Tables II, III, IV).
TRANSFER_TASKS = ("dfc2020", "dw", "osm")


@dataclass(frozen=True)
class CromSSConfig(ChapterConfig):
    """CromSS (Liu et al., 2025, IEEE TGRS): U-Nets pretrained on Dynamic World noisy labels, S1 + S2.

    Data under ``<root>`` (``data_root``, or the sample world): ``SSL4EO-S12/`` for the pretraining
    (SSL4EO-S12@NoL: S1 GRD, S2 L1C and the Dynamic World masks of all four seasons), ``DFC2020/`` and
    ``NoLDO-S12/`` (SSL4EO-S12@DW and @OSM) for the transfer, ``EuroSAT-MS/`` for Fig. 13 (the sample
    world's when ``<root>`` has none).
    """

    #: "middle" (CromSS-midF: two encoders share one U-Net decoder and head), "late" (CromSS-lateF: two
    #: U-Nets) or "single" (one U-Net on ``single_modality``, the single-modal baseline of Table V).
    fusion: str = "middle"
    #: Weight the losses with the selection masks W_l, W_e (CromSS); False = the midF/lateF ablation.
    sample_selection: bool = True
    #: Modality of ``fusion="single"``: "s2" or "s1".
    single_modality: str = "s2"
    #: Sentinel-2 input bands: 13 (all L1C bands) or 9 (B2-B8, B11, B12, "9B" in the tables).
    s2_bands: int = 13
    #: Classes C of the noisy labels (Dynamic World: 9).
    num_classes: int = 9
    #: smp encoder of the U-Nets (ResNet-50 in the paper), its depth (stages) and the decoder widths.
    encoder: str = "resnet50"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    #: Final selection ratio alpha_0 of the label-based mask (eq. 11); alpha ramps 1 -> alpha_0.
    alpha_0: float = 0.5
    #: Ramp length n_s in epochs for alpha and gamma (exp(-5 (1 - e/n_s)^2)).
    rampup_epochs: float = 80.0
    #: Label smoothing (eq. 13): beta (uniform part), mu (spatial-temporal part), Gaussian sigma in px.
    beta: float = 0.05
    mu: float = 0.15
    smoothing_sigma: float = 3.0
    #: Random crop side in px (256 of the 264 px tiles; tiles smaller than this are used whole), flip and
    #: 90-degree rotation probabilities of the pretraining.
    crop_size: int = 256
    flip_prob: float = 0.5
    rotate_prob: float = 0.2
    #: ReduceLROnPlateau (lr_schedule="plateau"): patience 30 epochs, factor 0.5 (NOTES.md).
    plateau_patience: int = 30
    #: Also pretrain the single-modal S2 baseline (Table V, Fig. 8 c-d) beside the CromSS run.
    pretrain_baseline: bool = True

    # ---- transfer (Sec. IV-A): PSPNet on DFC2020, DeepLabV3+ on SSL4EO-S12@DW, FPN on SSL4EO-S12@OSM ----
    #: The transfer tasks to run, any of "dfc2020" (Table II), "dw" (SSL4EO-S12@DW, Table III) and "osm"
    #: (SSL4EO-S12@OSM, Table IV).
    transfer_tasks: tuple[str, ...] = TRANSFER_TASKS
    #: Downstream epochs, Adam learning rate (cosine to ``downstream_min_lr``), Adam weight decay, seeds (mean
    #: +/- std; the random-init rows use one randomly initialised encoder per seed).
    downstream_epochs: int = 50
    downstream_lr: float = 5e-4
    downstream_min_lr: float = 1e-5
    downstream_weight_decay: float = 1e-8
    downstream_seeds: int = 3
    #: Cap on the optimiser steps of each transfer epoch (0 = the whole training set; CPU demos only).
    downstream_max_steps: int = 0
    #: Flip and 90-degree rotation probabilities of the transfer's training batches.
    downstream_flip_prob: float = 0.5
    downstream_rotate_prob: float = 0.2
    #: Frozen encoders: their batch-norm running statistics follow the downstream training data (True: the
    #: encoder's parameters are frozen, the network trains in train mode) or stay as pretrained (False).
    frozen_bn_update: bool = True
    #: DFC2020: batch size; head size: 10 (DFC2020's simplified-IGBP ids) or 8 (the 8 classes that occur,
    #: savanna and snow / ice then count as unlabelled); the class means run over those 8 either way.
    dfc2020_batch_size: int = 32
    dfc2020_classes: int = 10
    #: PSPNet: encoder stages it uses and its width (``psp_out_channels``).
    pspnet_encoder_depth: int = 3
    pspnet_channels: int = 512
    #: SSL4EO-S12@DW: batch size, random training crop in px (of the 510 px tiles; 0 = none), DeepLabV3+
    #: decoder width.
    dw_batch_size: int = 56
    dw_crop_size: int = 496
    deeplab_channels: int = 256
    #: SSL4EO-S12@OSM: batch size, random training crop in px (0 = none), FPN pyramid width.
    osm_batch_size: int = 32
    osm_crop_size: int = 480
    fpn_channels: int = 256

    # ---- analyses ----
    #: Fig. 13: images per feature set (a seeded choice when a set has more; capped, never the whole test
    #: split in memory) and pixels per image for the pixel-level curves.
    pca_images: int = 2048
    pca_pixels_per_image: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "fusion", ("middle", "late", "single"))
        check_choice(self, "single_modality", ("s1", "s2"))
        check_choice(self, "s2_bands", (9, 13))
        check_choice(self, "dfc2020_classes", (8, 10))
        check_range(self, "encoder_depth", 3, 5)
        check_range(self, "pspnet_encoder_depth", 1, self.encoder_depth)
        check_range(self, "alpha_0", 0.0, 1.0)
        check_range(self, "beta", 0.0, 1.0)
        check_range(self, "mu", 0.0, 1.0)
        for name in ("flip_prob", "rotate_prob", "downstream_flip_prob", "downstream_rotate_prob"):
            check_range(self, name, 0.0, 1.0)
        check_positive(self, "num_classes", "crop_size", "downstream_epochs", "downstream_lr", "downstream_seeds",
                       "dfc2020_batch_size", "dw_batch_size", "osm_batch_size", "pspnet_channels",
                       "deeplab_channels", "fpn_channels", "pca_images", "pca_pixels_per_image")
        check_non_negative(self, "rampup_epochs", "smoothing_sigma", "downstream_min_lr", "downstream_weight_decay",
                           "downstream_max_steps", "dw_crop_size", "osm_crop_size")
        if self.beta + self.mu > 1:
            raise ConfigError(f"beta, mu: expected beta + mu <= 1, got {self.beta} + {self.mu}")
        if len(self.decoder_channels) != self.encoder_depth:
            raise ConfigError(f"decoder_channels: expected {self.encoder_depth} values (encoder_depth), "
                              f"got {self.decoder_channels}")
        unknown = [t for t in self.transfer_tasks if t not in TRANSFER_TASKS]
        if unknown or len(set(self.transfer_tasks)) != len(self.transfer_tasks):
            raise ConfigError(f"transfer_tasks: expected distinct names out of {list(TRANSFER_TASKS)}, "
                              f"got {list(self.transfer_tasks)}")


# Sec. IV-A: Adam 5e-3, batch 512 (4 GPUs x 128), 200 epochs, ReduceLROnPlateau (patience 30, x0.5).
_FULL = CromSSConfig(
    epochs=200, batch_size=512, optimizer="adam", lr=5e-3, weight_decay=1e-8, lr_schedule="plateau", num_workers=8,
    checkpoint_every=1000, log_every=50)

PROFILES = {
    # CI: the whole notebook in about a minute on 2 CPU cores (ResNet-18 with 3 stages, 32 px crops; each
    # transfer stage 1 epoch, 24 px crops of the 30 px NoLDO-S12 tiles of the sample world).
    "tiny": dataclasses.replace(
        _FULL, world_size="tiny", encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8),
        crop_size=32, epochs=2, batch_size=4, max_steps_per_epoch=2, lr=1e-3, rampup_epochs=1.0,
        plateau_patience=1, num_workers=0, checkpoint_every=0, log_every=1, downstream_epochs=1,
        downstream_seeds=1, dfc2020_batch_size=4, dw_batch_size=4, osm_batch_size=4, dw_crop_size=24,
        osm_crop_size=24, pspnet_channels=32, deeplab_channels=32, fpn_channels=32, pca_images=32,
        pca_pixels_per_image=16),
    # CPU demo on the small sample world (<= 15 minutes): ResNet-18 with 4 stages, 64 px crops, 12 epochs
    # with the selection ramp over the first 5; the three transfer tasks with 3 epochs of at most 8 steps,
    # one seed, 64 px crops of the 126 px NoLDO-S12 tiles.
    "small": dataclasses.replace(
        _FULL, world_size="small", encoder="resnet18", encoder_depth=4, decoder_channels=(64, 32, 16, 8),
        crop_size=64, epochs=12, batch_size=16, lr=1e-3, rampup_epochs=5.0, plateau_patience=3, num_workers=0,
        checkpoint_every=0, log_every=20, downstream_epochs=3, downstream_seeds=1, downstream_max_steps=8,
        dfc2020_batch_size=8, dw_batch_size=8, osm_batch_size=8, dw_crop_size=64, osm_crop_size=64,
        pspnet_channels=64, deeplab_channels=64, fpn_channels=64, pca_images=256, cache_data=True),
    # The paper (Sec. IV-A) and the authors' settings (NOTES.md): see PAPER for each value and its source.
    "full": _FULL,
}

#: The paper's value of every ``full`` field that the paper (Sec. IV-A) or the authors' code fixes.
PAPER = {
    "fusion": Paper("middle", "Table II: CromSS-midF (13B), the paper's best DFC2020 model (lateF is its variant)"),
    "sample_selection": Paper(True, "Sec. III-B: cross-modal sample selection (off: the midF/lateF of Table V)"),
    "s2_bands": Paper(13, "Sec. IV-A: all 13 L1C bands (9 bands is the paper's variant)"),
    "num_classes": Paper(9, "Sec. II: the nine Dynamic World classes"),
    "encoder": Paper("resnet50", "Sec. IV: ResNet-50 encoders nested in U-Nets"),
    "encoder_depth": Paper(5, "authors' code: smp.Unet defaults (5 stages)"),
    "decoder_channels": Paper((256, 128, 64, 32, 16), "authors' code: smp.Unet defaults"),
    "alpha_0": Paper(0.5, "Sec. IV-A"),
    "rampup_epochs": Paper(80.0, "Sec. IV-A: alpha and gamma ramp over the first 80 epochs"),
    "beta": Paper(0.05, "Sec. IV-C, Table VI"),
    "mu": Paper(0.15, "Sec. IV-C, Table VI"),
    "smoothing_sigma": Paper(3.0, "authors' code: Gaussian sigma 3, truncated at 4 sigma"),
    "crop_size": Paper(256, "Sec. IV-A: random cropping to 256 x 256 (of 264)"),
    "flip_prob": Paper(0.5, "Sec. IV-A"),
    "rotate_prob": Paper(0.2, "Sec. IV-A"),
    "epochs": Paper(200, "Sec. IV-A"),
    "batch_size": Paper(512, "Sec. IV-A: 128 on each of 4 GPUs"),
    "optimizer": Paper("adam", "Sec. IV-A"),
    "lr": Paper(5e-3, "Sec. IV-A"),
    "weight_decay": Paper(1e-8, "authors' code: optim.Adam(..., weight_decay=1e-8) (the paper names none)"),
    "warmup_epochs": Paper(0.0, "Sec. IV-A: an initial lr of 5e-3, no warm-up"),
    "lr_schedule": Paper("plateau", "Sec. IV-A: ReduceLROnPlateau"),
    "plateau_patience": Paper(30, "Sec. IV-A"),
    "plateau_factor": Paper(0.5, "Sec. IV-A: cuts the learning rate in half"),
    "amp": Paper("fp16", "authors' code: Lightning precision '16-mixed' (--amp is on unless passed)"),
    "transfer_tasks": Paper(TRANSFER_TASKS, "Sec. IV-A: DFC2020, SSL4EO-S12@DW and SSL4EO-S12@OSM"),
    "downstream_epochs": Paper(50, "Sec. IV-A"),
    "downstream_lr": Paper(5e-4, "Sec. IV-A"),
    "downstream_min_lr": Paper(1e-5, "authors' code: cosine to 1e-5 (the default final lr of --scheduler_type cos)"),
    "downstream_weight_decay": Paper(1e-8, "authors' code: optim.Adam(..., weight_decay=1e-8)"),
    "downstream_seeds": Paper(3, "Sec. IV-A: three repeated runs of each downstream setup"),
    "downstream_flip_prob": Paper(0.5, "Sec. IV-A: random flip with a rate of 0.5"),
    "downstream_rotate_prob": Paper(0.2, "Sec. IV-A: random rotation with a rate of 0.2"),
    "frozen_bn_update": Paper(True, "authors' code: fix_model_weights sets requires_grad=False on the encoder "
                                    "only; the network trains in train mode"),
    "dfc2020_batch_size": Paper(32, "Sec. IV-A: batch 32 for PSPNet"),
    "dfc2020_classes": Paper(8, "authors' code: --n_classes 8 for DFC2020 (asserted in get_args_finetune.py)"),
    "pspnet_encoder_depth": Paper(3, "authors' code: smp.PSPNet defaults (encoder_depth 3)"),
    "pspnet_channels": Paper(512, "authors' code: smp.PSPNet defaults (psp_out_channels 512)"),
    "dw_batch_size": Paper(56, "Sec. IV-A: batch 56 for DeepLabV3+ (the authors' train_SSL4EO_pl_ft_DW.sh "
                               "passes 32)"),
    "dw_crop_size": Paper(496, "Sec. IV-A: random crops 510 -> 496"),
    "deeplab_channels": Paper(256, "authors' code: smp.DeepLabV3Plus defaults (decoder_channels 256)"),
    "osm_batch_size": Paper(32, "Sec. IV-A: batch 32 for FPN"),
    "osm_crop_size": Paper(480, "Sec. IV-A: random crops 510 -> 480"),
    "fpn_channels": Paper(256, "authors' code: smp.FPN defaults (decoder_pyramid_channels 256)"),
}

_FLIP = ("The authors' code flips horizontally, vertically or both (albumentations Flip); the book flips "
         "horizontally only.")
_ROTATE = ("The authors' code rotates by an angle drawn from [-90, 90] degrees with interpolation (albumentations "
           "Rotate); the book rotates by 90, 180 or 270 degrees, exactly, so that labels stay labels and no corner "
           "is filled.")

#: Why ``full`` differs from the paper where it does, and the book's readings where the paper is terse.
DEVIATIONS = {
    "lr_schedule": "The paper steps ReduceLROnPlateau on the loss of a 1% validation split; the book's one loop "
                   "steps it on the mean training loss of each epoch and trains on every location.",
    "flip_prob": _FLIP,
    "rotate_prob": _ROTATE,
    "weight_decay": "The authors' Adam decays every parameter by 1e-8; the book's optimizer factory leaves biases "
                    "and norm scales undecayed (negligible at 1e-8).",
    "amp": "The book's precision policy: bf16 autocast on CUDA (fp32's range, no loss scaling), fp32 elsewhere; "
           "the authors trained with fp16 mixed precision.",
    "downstream_min_lr": "The authors' cosine (--scheduler_values 40) reaches 1e-5 after 40 of the 50 epochs and "
                         "stays there, stepped per epoch; the book's loop anneals to 1e-5 over all 50 epochs, "
                         "per step.",
    "downstream_weight_decay": "As in pretraining: biases and norm scales are not decayed (negligible at 1e-8).",
    "downstream_flip_prob": _FLIP,
    "downstream_rotate_prob": _ROTATE,
    "dfc2020_classes": "The authors map DFC2020 to 8 classes (savanna and snow / ice do not occur in it); the book "
                       "keeps the 10 simplified-IGBP ids, so that no pixel of a dataset that has those two (the "
                       "sample world's DFC2020 has snow) is dropped. The means run over the paper's 8 classes "
                       "either way; the two extra outputs are never a target in the real data.",
    "dw_batch_size": "As the paper (Sec. IV-A: 56); the authors' launcher script for this task passes 32.",
    "pca_images": "The paper does not say how many EuroSAT images or SSL4EO-S12@DW test tiles feed Fig. 13; the "
                  "book takes at most this many (a seeded choice), so that no split is stacked in memory whole.",
    "pca_pixels_per_image": "The paper does not say how many pixels per tile its pixel-level PCA uses; the book's "
                            "choice.",
}
