"""CromSS's settings: the typed config, the ``tiny`` / ``small`` / ``full`` profiles, the paper's values.

Liu, Albrecht, Wang & Zhu (2025), Sec. IV-A, and the authors' code (zhu-xlab/CromSS, see
``shared/papers/NOTES.md``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...config import (ChapterConfig, ConfigError, Paper, check_choice, check_non_negative, check_positive,
                       check_range)


@dataclass(frozen=True)
class CromSSConfig(ChapterConfig):
    """CromSS (Liu et al., 2025, IEEE TGRS): U-Nets pretrained on Dynamic World noisy labels, S1 + S2.

    Data: SSL4EO-S12@NoL under ``<root>/SSL4EO-S12`` (S1 GRD, S2 L1C and the Dynamic World masks of all four
    seasons) and DFC2020 for the transfer (``downstream_root`` or ``<root>/SEN12MS``); ``<root>`` is
    ``data_root`` or the sample world.
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
    #: Random crop side in px (256 of the 264 px tiles), flip and 90-degree rotation probabilities.
    crop_size: int = 256
    flip_prob: float = 0.5
    rotate_prob: float = 0.2
    #: ReduceLROnPlateau (lr_schedule="plateau"): patience 30 epochs, factor 0.5 (NOTES.md).
    plateau_patience: int = 30
    #: Also pretrain the single-modal S2 baseline (Table V, Fig. 8 c-d) beside the CromSS run.
    pretrain_baseline: bool = True
    #: Downstream (clean labels): "pspnet" (DFC2020), "deeplabv3plus" (SSL4EO-S12@DW) or "fpn" (@OSM).
    downstream_arch: str = "pspnet"
    #: DFC2020 folder (SEN12MS reader); "" = the sample world's synthetic DFC2020.
    downstream_root: str = ""
    #: Classes of the downstream task (DFC2020: the 10 simplified-IGBP ids; 8 occur in the real data).
    downstream_classes: int = 10
    #: Decoder width of the downstream network (PSPNet's ``psp_out_channels``, DeepLabV3+'s decoder, FPN's
    #: pyramid).
    downstream_decoder_channels: int = 256
    #: Downstream epochs, Adam learning rate (cosine), batch size (DFC2020: 32), seeds (mean +/- std); the
    #: random-init rows use one randomly initialised encoder per seed.
    downstream_epochs: int = 50
    downstream_lr: float = 5e-4
    downstream_batch_size: int = 32
    downstream_seeds: int = 3
    #: Pixels per image for the pixel-level PCA curves (Fig. 13).
    pca_pixels_per_image: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "fusion", ("middle", "late", "single"))
        check_choice(self, "single_modality", ("s1", "s2"))
        check_choice(self, "s2_bands", (9, 13))
        check_choice(self, "downstream_arch", ("deeplabv3plus", "pspnet", "fpn"))
        check_range(self, "encoder_depth", 3, 5)
        check_range(self, "alpha_0", 0.0, 1.0)
        check_range(self, "beta", 0.0, 1.0)
        check_range(self, "mu", 0.0, 1.0)
        check_range(self, "flip_prob", 0.0, 1.0)
        check_range(self, "rotate_prob", 0.0, 1.0)
        check_positive(self, "num_classes", "crop_size", "downstream_epochs", "downstream_lr",
                       "downstream_batch_size", "downstream_seeds", "downstream_decoder_channels", "downstream_classes",
                       "pca_pixels_per_image")
        check_non_negative(self, "rampup_epochs", "smoothing_sigma")
        if self.beta + self.mu > 1:
            raise ConfigError(f"beta, mu: expected beta + mu <= 1, got {self.beta} + {self.mu}")
        if len(self.decoder_channels) != self.encoder_depth:
            raise ConfigError(f"decoder_channels: expected {self.encoder_depth} values (encoder_depth), "
                              f"got {self.decoder_channels}")


# Sec. IV-A: Adam 5e-3, batch 512 (4 GPUs x 128), 200 epochs, ReduceLROnPlateau (patience 30, x0.5).
_FULL = CromSSConfig(
    epochs=200, batch_size=512, optimizer="adam", lr=5e-3, lr_schedule="plateau", num_workers=8,
    checkpoint_every=1000, log_every=50)

PROFILES = {
    # CI: the whole notebook in about a minute on 2 CPU cores (ResNet-18 with 3 stages, 32 px crops).
    "tiny": dataclasses.replace(
        _FULL, world_size="tiny", encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8),
        crop_size=32, epochs=2, batch_size=4, max_steps_per_epoch=2, lr=1e-3, rampup_epochs=1.0,
        plateau_patience=1, num_workers=0, checkpoint_every=0, log_every=1, downstream_decoder_channels=32,
        downstream_epochs=1, downstream_batch_size=4, downstream_seeds=1, pca_pixels_per_image=16),
    # CPU demo on the small sample world (<= 15 minutes): ResNet-18 with 4 stages, 64 px crops, 12 epochs
    # with the selection ramp over the first 5, a 3-epoch DFC2020 transfer with one seed.
    "small": dataclasses.replace(
        _FULL, world_size="small", encoder="resnet18", encoder_depth=4, decoder_channels=(64, 32, 16, 8),
        crop_size=64, epochs=12, batch_size=16, lr=1e-3, rampup_epochs=5.0, plateau_patience=3, num_workers=0,
        checkpoint_every=0, log_every=20, downstream_decoder_channels=64, downstream_epochs=3,
        downstream_batch_size=8, downstream_seeds=1, cache_data=True),
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
    "warmup_epochs": Paper(0.0, "Sec. IV-A: an initial lr of 5e-3, no warm-up"),
    "lr_schedule": Paper("plateau", "Sec. IV-A: ReduceLROnPlateau"),
    "plateau_patience": Paper(30, "Sec. IV-A"),
    "plateau_factor": Paper(0.5, "Sec. IV-A: cuts the learning rate in half"),
    "downstream_arch": Paper("pspnet", "Sec. IV-A: PSPNet for DFC2020"),
    "downstream_classes": Paper(8, "authors' code: --n_classes 8 for DFC2020"),
    "downstream_decoder_channels": Paper(512, "authors' code: smp.PSPNet defaults (psp_out_channels 512)"),
    "downstream_epochs": Paper(50, "Sec. IV-A"),
    "downstream_lr": Paper(5e-4, "Sec. IV-A"),
    "downstream_batch_size": Paper(32, "Sec. IV-A: PSPNet on DFC2020"),
    "downstream_seeds": Paper(3, "Sec. IV-A: three repeated runs of each downstream setup"),
}

#: Why ``full`` differs from the paper where it does, and the book's readings where the paper is terse.
DEVIATIONS = {
    "lr_schedule": "The paper steps ReduceLROnPlateau on the loss of a 1% validation split; the book's one loop "
                   "steps it on the mean training loss of each epoch and trains on every location.",
    "flip_prob": "The authors' code flips horizontally, vertically or both (albumentations Flip); the book "
                 "flips horizontally only.",
    "rotate_prob": "The authors' code rotates by an angle drawn from [-90, 90] degrees with interpolation "
                   "(albumentations Rotate); the book rotates by 90, 180 or 270 degrees, exactly, so that "
                   "labels stay labels and no corner is filled.",
    "downstream_classes": "DFC2020's labels are simplified-IGBP ids 1-10 of which 8 occur (savanna and snow/ice "
                          "do not); the book keeps the 10 ids so that the sample world and the real data share "
                          "one head. The metrics average over the classes present in the test labels or the "
                          "predictions, so the two empty classes only count when the network predicts them.",
    "downstream_decoder_channels": "The authors build PSPNet with smp's defaults (psp_out_channels 512, and "
                                   "encoder_depth 3: the stem and the first two ResNet stages); the book uses a "
                                   "256-wide head on the whole pretrained encoder (encoder_depth), the same "
                                   "for all three downstream networks. Not yet rerun with smp's defaults.",
    "weight_decay": "The paper names no weight decay; Adam's default (0) is used.",
}
