"""MultiMAE-EO's settings: the typed config, the ``tiny`` / ``small`` / ``full`` profiles, the paper's values.

Sosa, Rukhovich, Kacem & Aouada (2024), appendix Secs. 1-3, and the authors' settings read from their code
(josesosajs/multimae-meets-eo: ``cfgs/pretrain/default-config.yaml`` and the defaults of ``run_pretraining.py``;
see ``shared/papers/NOTES.md``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import (ChapterConfig, ConfigError, Paper, check_choice, check_non_negative, check_positive,
                       check_range)

#: Input sets of the fine-tuning experiments (appendix Sec. 3 and Fig. 6): name -> modalities.
INPUT_SETS = {
    "rgb": ("rgb",),
    "rgb+ired+sired+eb": ("rgb", "ired", "sired", "eb"),
    "rgb+ired+depth": ("rgb", "ired", "depth"),
}


#: Downstream tasks the book reads (appendix Table 3, plus the sample world's ``m-landcover-seg``).
TASKS = {"classification_tasks": ("m-eurosat", "m-brick-kiln", "m-so2sat", "m-bigearthnet", "eurosat", "fmow"),
         "segmentation_tasks": ("m-SA-crop-type", "m-cashew-plantation", "m-landcover-seg")}


@dataclass(frozen=True)
class MultiMAEConfig(ChapterConfig):
    """MultiMAE meets EO (Sosa et al., 2024): six MMEarth modalities, Dirichlet masking, ViT-B encoder."""

    #: Input side in pixels after resizing the MMEarth64 patches (56).
    img_size: int = 56
    #: Patch side P in pixels; N = (img_size / P)^2 tokens per modality (7 x 7 = 49, 294 for 6 modalities).
    patch_size: int = 8
    #: Encoder width D, number of blocks and heads (ViT-B: 768, 12, 12).
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    #: Stochastic depth of the encoder (not given by the paper; MultiMAE pretrains without).
    drop_path_rate: float = 0.0
    #: Visible tokens over all modalities per sample (49 of 294, about 83% masked).
    num_visible: int = 49
    #: Concentration alpha of the per-sample Dirichlet allocation of visible tokens to modalities.
    dirichlet_alpha: float = 1.0
    #: Decoder width d (768 -> 128), transformer blocks after the cross-attention layer, heads.
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 8
    #: Width of the SEG class embedding before its patch projection.
    seg_class_dim: int = 64
    #: DEPTH reconstruction loss: "mse" (appendix eq. 1) or "l1" (the authors' code).
    depth_loss: str = "mse"
    #: Probability of a horizontal flip of a pretraining sample (all modalities together).
    hflip_p: float = 0.5
    #: MMEarth HDF5 file inside ``<data root>/MMEarth``.
    mmearth_file: str = "data_1M_v001_64.h5"
    #: Rows of MMEarth pretrained on: a list of ``<file stem>_splits.json`` ("train", "val", "test") or "all".
    mmearth_split: str = "train"
    #: Downstream classification tasks (GEO-Bench task folders; "eurosat" = EuroSAT-MS; "fmow" = fMoW-Sentinel).
    classification_tasks: tuple[str, ...] = ("m-eurosat", "m-brick-kiln", "m-so2sat", "m-bigearthnet", "eurosat",
                                             "fmow")
    #: Downstream segmentation tasks (GEO-Bench), head of four ConvNeXt blocks.
    segmentation_tasks: tuple[str, ...] = ("m-cashew-plantation", "m-SA-crop-type")
    #: Input sets evaluated downstream (keys of ``INPUT_SETS``).
    input_sets: tuple[str, ...] = ("rgb", "rgb+ired+sired+eb")
    #: Share of fMoW-Sentinel's training split used to fine-tune ("fMoW (10%)"): a seeded draw without
    #: replacement (``seed``), recorded in the run folder.
    fmow_train_fraction: float = 0.1
    #: Side in pixels to which every fMoW-Sentinel image is resampled (its images differ in size).
    fmow_image_size: int = 64
    #: fMoW-Sentinel split scored: "val" (``val.csv``) or "test" (``test.csv``, where a copy has one).
    fmow_test_split: str = "val"
    #: Cap on training / test samples per downstream task (0 = all; fMoW: after the fraction above).
    eval_max_train: int = 0
    eval_max_test: int = 0
    #: Linear probing: epochs, SGD learning rate (momentum 0.9, no weight decay) and batch size.
    probe_epochs: int = 100
    probe_lr: float = 0.01
    probe_batch_size: int = 256
    #: Standardise the frozen features with the training set's statistics before the probe (not in the
    #: paper; the head stays linear).
    probe_standardize: bool = False
    #: End-to-end fine-tuning (classification and segmentation): epochs, AdamW lr, weight decay, batch.
    finetune_epochs: int = 50
    finetune_lr: float = 1e-4
    finetune_weight_decay: float = 0.05
    finetune_batch_size: int = 64
    #: Channels of the ConvNeXt segmentation head (its map is 1/4 of the input side).
    seg_head_dim: int = 384

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_visible",
                       "dirichlet_alpha", "decoder_dim", "decoder_depth", "decoder_heads", "seg_class_dim",
                       "probe_epochs", "probe_lr", "probe_batch_size", "finetune_epochs", "finetune_lr",
                       "finetune_batch_size", "seg_head_dim", "fmow_image_size")
        check_non_negative(self, "drop_path_rate", "eval_max_train", "eval_max_test", "finetune_weight_decay")
        check_choice(self, "depth_loss", ("mse", "l1"))
        check_choice(self, "mmearth_split", ("train", "val", "test", "all"))
        check_choice(self, "fmow_test_split", ("val", "test"))
        check_range(self, "fmow_train_fraction", 0.0, 1.0, low_open=True)
        check_range(self, "hflip_p", 0.0, 1.0)
        check_range(self, "drop_path_rate", 0.0, 1.0, high_open=True)
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size: expected a multiple of patch_size={self.patch_size}, got {self.img_size}")
        if self.patch_size % 4:
            raise ConfigError(f"patch_size: expected a multiple of 4 (the segmentation head works at 1/4 "
                              f"resolution), got {self.patch_size}")
        tokens = (self.img_size // self.patch_size) ** 2
        check_range(self, "num_visible", 1, tokens)
        for name, dim, heads in (("embed_dim", self.embed_dim, self.num_heads),
                                 ("decoder_dim", self.decoder_dim, self.decoder_heads)):
            if dim % heads or dim % 4:
                raise ConfigError(f"{name}: expected a multiple of 4 and of its heads ({heads}), got {dim}")
        for value in self.input_sets:
            if value not in INPUT_SETS:
                raise ConfigError(f"input_sets: expected values among {list(INPUT_SETS)}, got {value!r}")
        for name in ("classification_tasks", "segmentation_tasks"):
            for value in getattr(self, name):
                if value not in TASKS[name]:
                    raise ConfigError(f"{name}: expected values among {list(TASKS[name])}, got {value!r}")


PROFILES = {
    # About a minute for the whole notebook on 2 CPU cores.
    "tiny": MultiMAEConfig(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_visible=8, decoder_dim=32,
        decoder_depth=1, decoder_heads=4, seg_class_dim=16, epochs=5, batch_size=16, lr=1e-3, warmup_epochs=0.5,
        betas=(0.9, 0.95), weight_decay=0.05, classification_tasks=("m-eurosat", "fmow"),
        segmentation_tasks=("m-landcover-seg",), eval_max_train=32, eval_max_test=32, probe_epochs=10,
        probe_standardize=True, finetune_epochs=1, finetune_lr=3e-4, finetune_batch_size=16, seg_head_dim=16,
        log_every=5),
    # CPU demo on the small sample world (<= 15 minutes on 2 cores).
    "small": MultiMAEConfig(
        world_size="small", img_size=32, patch_size=8, embed_dim=128, depth=4, num_heads=4, num_visible=12,
        decoder_dim=64, decoder_depth=1, decoder_heads=4, seg_class_dim=16, epochs=60, batch_size=32, lr=1e-3,
        min_lr=1e-5, warmup_epochs=1, betas=(0.9, 0.95), weight_decay=0.05,
        classification_tasks=("m-eurosat", "eurosat", "fmow"), segmentation_tasks=("m-landcover-seg",),
        eval_max_train=400, eval_max_test=200, probe_epochs=50, probe_standardize=True, finetune_epochs=5,
        finetune_lr=3e-4, finetune_batch_size=32, seg_head_dim=32, checkpoint_every=200),
    # The paper's settings (appendix; the authors' pretraining config and code): ViT-B, 56 px, P = 8, 49 of 294
    # visible, 1000 epochs on MMEarth, batch 512, lr 1e-4 x 512/256 to 0, 1 warm-up epoch, AdamW (0.9, 0.95),
    # wd 0.05; every downstream task of Table 3 (fMoW: 10% of its training set). See PAPER for each value and
    # its source, DEVIATIONS for where the book departs.
    "full": MultiMAEConfig(
        epochs=1000, batch_size=512, lr=1e-4 * 512 / 256, min_lr=0.0, warmup_epochs=1, betas=(0.9, 0.95),
        weight_decay=0.05, probe_standardize=True, num_workers=8, checkpoint_every=2000, log_every=100),
}

#: Where the authors' pretraining settings are read (josesosajs/multimae-meets-eo).
_CFG = "authors' config (cfgs/pretrain/default-config.yaml)"
_CODE = "authors' code (run_pretraining.py default)"

#: The paper's value of every ``full`` field that the appendix, the authors' code or NOTES.md fixes.
PAPER = {
    "img_size": Paper(56, _CFG + ": input_size 56, MMEarth64 patches resized"),
    "patch_size": Paper(8, _CFG + ": patch_size 8, 7 x 7 = 49 tokens per modality"),
    "embed_dim": Paper(768, _CFG + ": pretrain_multimae_base, a ViT-B encoder"),
    "depth": Paper(12, _CFG + ": pretrain_multimae_base, a ViT-B encoder"),
    "num_heads": Paper(12, _CFG + ": pretrain_multimae_base, a ViT-B encoder"),
    "drop_path_rate": Paper(0.0, _CODE + ": drop_path 0"),
    "num_visible": Paper(49, _CFG + ": num_encoded_tokens 49 of the 294"),
    "dirichlet_alpha": Paper(1.0, _CFG + ": alphas 1.0, a per-sample Dirichlet allocation"),
    "decoder_dim": Paper(128, "appendix Sec. 2.2 / Fig. 3 with " + _CFG + ": decoder_dim 128"),
    "decoder_depth": Paper(2, "appendix Sec. 2.2: a cross-attention layer, an MLP and two transformer blocks"),
    "decoder_heads": Paper(8, _CODE + ": decoder_num_heads 8"),
    "seg_class_dim": Paper(64, "authors' code (domain_config.py): SEG through a 64-d class embedding"),
    "depth_loss": Paper("mse", "appendix eq. (1): MSE for every decoder (the authors' code uses L1 for DEPTH)"),
    "hflip_p": Paper(0.5, _CFG + ": hflip 0.5, all modalities alike"),
    "mmearth_file": Paper("data_1M_v001_64.h5", _CFG + ": data_path"),
    "mmearth_split": Paper("train", "authors' code (utils/dataset_folder.py): the 'train' list of the splits file"),
    "classification_tasks": Paper(("m-eurosat", "m-brick-kiln", "m-so2sat", "m-bigearthnet", "eurosat", "fmow"),
                                  "appendix Table 3"),
    "segmentation_tasks": Paper(("m-cashew-plantation", "m-SA-crop-type"), "appendix Table 3 and Fig. 6"),
    "input_sets": Paper(("rgb", "rgb+ired+sired+eb", "rgb+ired+depth"), "appendix Fig. 2 and Sec. 4.2"),
    "fmow_train_fraction": Paper(0.1, "appendix Sec. 1.3 and Table 3: fMoW (10%), 71.3k training images"),
    "fmow_image_size": Paper(64, "appendix Table 3: fMoW 64 x 64"),
    "eval_max_train": Paper(0, "appendix Sec. 1.3: apart from fMoW, the fine-tuning data remain unmodified"),
    "eval_max_test": Paper(0, "appendix Sec. 1.3: apart from fMoW, the fine-tuning data remain unmodified"),
    "probe_standardize": Paper(False, "appendix Sec. 3: a linear classifier on the frozen encoder's output"),
    "epochs": Paper(1000, _CFG + ": epochs 1000"),
    "batch_size": Paper(512, _CFG + ": batch_size 128 per GPU, 4 GPUs (NOTES.md)"),
    "optimizer": Paper("adamw", _CFG + ": opt adamw"),
    "lr": Paper(1e-4 * 512 / 256, _CFG + ": blr 1e-4, lr = blr x batch / 256"),
    "min_lr": Paper(0.0, _CFG + ": min_lr 0"),
    "lr_schedule": Paper("cosine", "authors' code: per-step warm-up + cosine (utils.cosine_scheduler)"),
    "warmup_epochs": Paper(1, _CFG + ": warmup_epochs 1"),
    "betas": Paper((0.9, 0.95), _CODE + ": opt_betas (0.9, 0.95)"),
    "weight_decay": Paper(0.05, _CODE + ": weight_decay 0.05"),
    "weight_decay_end": Paper(None, _CODE + ": weight_decay_end None, a constant weight decay"),
    "grad_clip": Paper(0.0, _CODE + ": clip_grad None"),
    "amp": Paper("fp16", "authors' code (engine_pretraining.py): torch.cuda.amp.autocast with a loss scaler"),
}

_NOT_IN_PAPER = "Neither the appendix nor the authors' code (pretraining only) gives it; the book's choice."

#: Why ``full`` differs from the paper where it does, and which ``full`` values are the book's choice.
DEVIATIONS = {
    "input_sets": "RGB+IRED+DEPTH needs a DEPTH layer, which the GEO-Bench tasks lack; the paper used it only on "
                  "the multi-temporal crop dataset of Fig. 6 (HLS, with pseudo-label depth), which the book does "
                  "not read.",
    "probe_standardize": "The book's probe standardises the frozen features with the training set's mean and std "
                         "(the head stays linear), as MAE's linear probe does with a BatchNorm without affine "
                         "parameters (He et al. 2022, the appendix's ref. [9]): short probes on small feature sets "
                         "converge much better. Kept from the book's first version so that its numbers do not move.",
    "mmearth_split": "The appendix pretrains on all MMEarth samples (Sec. 2.1); the authors' code reads the 'train' "
                     "list of the splits file, and the book follows the code ('all' reads every row).",
    "amp": "'auto' is bf16 autocast on CUDA (fp32 elsewhere): bf16 keeps fp32's exponent range and needs no loss "
           "scaling. 'fp16' reproduces the authors' precision.",
    "fmow_test_split": _NOT_IN_PAPER + " Table 3 lists fMoW's validation and test sets (85k each) without saying "
                       "which one is scored; the book scores the validation set (val.csv), the split SatMAE reports "
                       "on and the one the book's sample world writes.",
    "probe_epochs": _NOT_IN_PAPER + " 100 epochs of SGD (momentum 0.9, no weight decay).",
    "probe_lr": _NOT_IN_PAPER,
    "probe_batch_size": _NOT_IN_PAPER,
    "finetune_epochs": _NOT_IN_PAPER + " 50 epochs of AdamW for every task.",
    "finetune_lr": _NOT_IN_PAPER,
    "finetune_weight_decay": _NOT_IN_PAPER,
    "finetune_batch_size": _NOT_IN_PAPER,
    "seg_head_dim": _NOT_IN_PAPER + " 384 channels at 1/4 of the input side (the appendix fixes four ConvNeXt "
                                    "blocks, not their width).",
}
