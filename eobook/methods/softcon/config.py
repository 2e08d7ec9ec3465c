"""SoftCon's settings: the typed config, the ``tiny`` / ``small`` / ``full`` profiles, the paper's values.

Wang, Albrecht & Zhu (2024). The book has the abstract and the authors' README (zhu-xlab/softcon: inference
code and weights), see ``shared/papers/NOTES.md``: ``PAPER`` holds what they publish, ``DEVIATIONS`` says
where ``full`` departs from it and which values are the book's choices where they are silent.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import (ChapterConfig, ConfigError, Paper, check_choice, check_non_negative, check_positive,
                       check_range)

#: Architectures: "vit" is a custom-size ViT (tiny CPU profiles); the others are timm names.
ARCHS = ("vit", "vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "resnet50")
#: Pretraining modalities: 13-band S2 L1C ("s2c") or 2-band S1 ("s1").
MODALITIES = ("s2c", "s1")


@dataclass(frozen=True)
class SoftConConfig(ChapterConfig):
    """SoftCon (Wang, Albrecht & Zhu, 2024): multi-label guided soft contrastive continual pretraining.

    Pretraining data: SSL4EO-S12-ML (``<root>/SSL4EO-S12``: one random season per location, multi-labels
    from Dynamic World); evaluation: BigEarthNet-MM and EuroSAT-MS, where ``<root>`` is ``data_root`` or
    the sample world. The book has only the abstract and the authors' README: fields marked "choice" are
    the book's (stated in ``DEVIATIONS`` and the chapter's Deviations section).
    """

    #: Pretraining input: "s2c" (13-band Sentinel-2 L1C, multispectral) or "s1" (2-band SAR, VV/VH).
    modality: str = "s2c"
    #: Backbone: "vit_small_patch14_dinov2" (ViT-S/14), "vit_base_patch14_dinov2" (ViT-B/14), "resnet50",
    #: or "vit" (a custom small ViT of vit_dim/vit_depth/vit_heads/patch_size, for CPU profiles).
    arch: str = "vit_small_patch14_dinov2"
    #: Input side in pixels (paper: 224).
    img_size: int = 224
    #: Patch side in pixels and width/depth/heads of the custom "vit" (the DINOv2 names fix their own).
    patch_size: int = 14
    vit_dim: int = 384
    vit_depth: int = 12
    vit_heads: int = 6
    #: Vision-foundation-model initialisation of both branches: "" (random), "hub" (timm's pretrained RGB
    #: weights: DINOv2 LVD-142M / ResNet-50 a1-in1k, where the paper used DINO's ResNet-50) or a path to a local
    #: RGB state-dict file (.pth or .safetensors). A smoke run never downloads (see ``model.start_weights``).
    weights: str = "hub"
    #: MoCo v3 heads (choice): projector 3 layers (hidden, output), predictor 2 layers (hidden).
    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096
    #: Temperature tau of both loss terms (choice: MoCo v3's 0.2 for ViTs).
    temperature: float = 0.2
    #: lambda: weight of InfoNCE; (1 - lambda) weighs the soft term (choice 0.5; the chapter ablates it).
    lam: float = 0.5
    #: Momentum m of the EMA encoder at the start; it rises to 1 on a half cosine (MoCo v3: 0.99).
    momentum_start: float = 0.99
    #: Siamese masking: fraction of the trainable branch's patches dropped (choice 0.5; ViT only, 0 for resnet50).
    mask_ratio: float = 0.5
    #: Random-resized-crop area range (SSL4EO-S12 MoCo: 0.2-1) and brightness/contrast jitter strength.
    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: float = 0.4
    #: SyncBatchNorm in the MLP heads under DDP (MoCo v3).
    sync_batchnorm: bool = True
    #: Linear probing: BigEarthNet label fraction (paper: 10%), epochs, SGD lr, batch; ``probe_blocks``
    #: CLS tokens of the last blocks are concatenated (README: 4 for ViT-B/14, else 1).
    probe_fraction: float = 0.1
    probe_epochs: int = 100
    probe_lr: float = 0.01
    probe_batch_size: int = 256
    probe_blocks: int = 1
    #: Standardise the frozen features with the training set's statistics before the probe (not in the
    #: paper; the book's probes always did it for this chapter).
    probe_standardize: bool = True
    #: BigEarthNet end-to-end fine-tuning on the same label fraction: epochs (0 = skip), AdamW lr, batch.
    finetune_epochs: int = 50
    finetune_lr: float = 1e-4
    finetune_batch_size: int = 64
    #: The lambda ablation: extra pretraining runs with these lambdas (1.0 = plain InfoNCE); () = none.
    ablation_lambdas: tuple[float, ...] = ()
    #: Scenes in the similarity-matrix figure.
    figure_batch: int = 24

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "modality", MODALITIES)
        check_choice(self, "arch", ARCHS)
        check_positive(self, "img_size", "patch_size", "vit_dim", "vit_depth", "vit_heads", "proj_hidden", "proj_dim",
                       "pred_hidden", "temperature", "probe_epochs", "probe_batch_size", "probe_blocks",
                       "finetune_batch_size", "figure_batch")
        check_non_negative(self, "jitter", "probe_lr", "finetune_epochs", "finetune_lr")
        check_range(self, "lam", 0.0, 1.0)
        check_range(self, "momentum_start", 0.0, 1.0, high_open=True)
        check_range(self, "mask_ratio", 0.0, 1.0, high_open=True)
        check_range(self, "probe_fraction", 0.0, 1.0, low_open=True)
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ConfigError(f"crop_scale: expected 0 < low <= high <= 1, got {self.crop_scale}")
        for value in self.ablation_lambdas:
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"ablation_lambdas: expected values in [0, 1], got {self.ablation_lambdas}")
        if self.arch == "resnet50" and self.mask_ratio:
            raise ConfigError(f"mask_ratio: Siamese masking needs a ViT backbone; set 0 with arch='resnet50', "
                              f"got {self.mask_ratio}")
        if self.arch == "vit" and (self.img_size % self.patch_size or self.vit_dim % self.vit_heads):
            raise ConfigError(f"img_size: expected a multiple of patch_size={self.patch_size} and vit_dim a "
                              f"multiple of vit_heads={self.vit_heads}, got {self.img_size} and {self.vit_dim}")
        if self.arch.endswith("patch14_dinov2") and self.img_size % 14:
            raise ConfigError(f"img_size: expected a multiple of 14 for {self.arch}, got {self.img_size}")


PROFILES = {
    # CI: the whole notebook in about a minute on 2 CPU cores (random init, no download).
    "tiny": SoftConConfig(
        arch="vit", img_size=32, patch_size=8, vit_dim=64, vit_depth=2, vit_heads=4, weights="",
        proj_hidden=128, proj_dim=32, pred_hidden=128, epochs=4, batch_size=16, lr=1e-3, warmup_epochs=1,
        weight_decay=0.05, betas=(0.9, 0.95), log_every=4, probe_fraction=1.0, probe_epochs=30,
        probe_batch_size=32, finetune_epochs=1, finetune_lr=1e-3, finetune_batch_size=16,
        ablation_lambdas=(1.0,), figure_batch=16, cache_data=True),
    # CPU demo on the small sample world (<= 15 minutes): SoftCon vs plain InfoNCE vs random init.
    "small": SoftConConfig(
        world_size="small", arch="vit", img_size=48, patch_size=8, vit_dim=96, vit_depth=4, vit_heads=4,
        weights="", proj_hidden=256, proj_dim=64, pred_hidden=256, epochs=60, batch_size=64, lr=1e-3,
        warmup_epochs=2, weight_decay=0.05, betas=(0.9, 0.95), log_every=20, probe_fraction=0.25,
        probe_epochs=50, probe_batch_size=64, finetune_epochs=3, finetune_lr=3e-4, finetune_batch_size=32,
        ablation_lambdas=(1.0, 0.0), checkpoint_every=50, cache_data=True),
    # The paper's setting for ViT-S/14 on 13-band MS (other rows: arch=resnet50 mask_ratio=0 |
    # arch=vit_base_patch14_dinov2 probe_blocks=4 | modality=s1). Unpublished values are the book's choices:
    # 100 epochs, global batch 1024, AdamW (MoCo v3: lr 1.5e-4 x batch/256, wd 0.1, betas 0.9/0.95).
    "full": SoftConConfig(
        epochs=100, batch_size=1024, lr=6e-4, min_lr=0.0, warmup_epochs=10, weight_decay=0.1,
        betas=(0.9, 0.95), num_workers=10, checkpoint_every=1000, log_every=50),
}

_README = "the authors' README (NOTES.md)"
#: The paper's value of every ``full`` field that its abstract or the authors' README fixes.
PAPER = {
    "modality": Paper("s2c", f"abstract and {_README}: 13-band multispectral models (and 2-band SAR ones)"),
    "arch": Paper("vit_small_patch14_dinov2", f"abstract: ViT-S, 85.0 mAP; {_README}: DINOv2 ViT-S/14"),
    "img_size": Paper(224, f"{_README}: input 224"),
    "patch_size": Paper(14, f"{_README}: ViT-S/14"),
    "vit_dim": Paper(384, f"{_README}: ViT-S/14 (DINOv2)"),
    "vit_depth": Paper(12, f"{_README}: ViT-S/14 (DINOv2)"),
    "vit_heads": Paper(6, f"{_README}: ViT-S/14 (DINOv2)"),
    "weights": Paper("hub", "abstract: continual pretraining from DINOv2 weights, both branches (Fig. 4); "
                            f"{_README}: from vision foundation models \"e.g. DINO and DINOv2\" (ResNet-50: DINO's)"),
    "probe_fraction": Paper(0.1, "abstract and README: linear probing on BigEarthNet-10%"),
    "probe_blocks": Paper(1, f"{_README}: the head on the last 4 layers only for the starred ViT-B/14 rows"),
    "probe_standardize": Paper(False, "README: a linear probe on the frozen features"),
}

#: Why ``full`` differs from the paper where it does, and the book's choices where the paper is silent.
_CHOICE = ("Not in the abstract or the authors' README (the full text was not available to the book); "
           "the book's choice: ")
DEVIATIONS = {
    "probe_standardize": "The book's probe scales the frozen features with the training set's mean and std "
                         "before the linear layer, as this chapter always did (a linear head can absorb the "
                         "scaling, but it changes SGD's conditioning, so short probes converge alike).",
    "weights": "'hub' loads timm's pretrained weights of `arch`. For ViT-S/14 (this profile) and ViT-B/14 those "
               "are DINOv2's LVD-142M weights, as the paper. For ResNet-50 they are timm's supervised ImageNet-1k "
               "ResNet-50 (a1_in1k), but the authors continued from DINO's self-supervised ResNet-50 (their README: "
               "\"vision foundation models (e.g. DINO and DINOv2)\"; DINOv2 has no ResNet-50): timm's hub has no "
               "DINO ResNet-50. To follow the paper with arch=resnet50, download DINO's backbone "
               "(dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth, see "
               "facebookresearch/dino hubconf.py; its keys are timm's resnet50 keys) and pass weights=<that file>. "
               "A smoke run downloads nothing: without the weights in the local cache it starts from random weights "
               "of the same architecture and says so.",
    "probe_blocks": "The README concatenates the CLS tokens of the last 4 layers for the ViT-B/14 rows only; the "
                    "ViT-S/14 and ResNet-50 rows read one feature vector, as here (set probe_blocks=4 with "
                    "arch=vit_base_patch14_dinov2).",
    "mask_ratio": _CHOICE + "0.5. The abstract names Siamese masking of the trainable branch (ViT only), "
                  "not its ratio.",
    "lam": _CHOICE + "0.5 (equal weight of InfoNCE and the soft term; Fig. 4 says \"weighted sum\"). The "
                   "chapter ablates it.",
    "temperature": _CHOICE + "MoCo v3's 0.2 for ViTs, for both terms.",
    "proj_hidden": _CHOICE + "MoCo v3's 3-layer projector, hidden 4096.",
    "proj_dim": _CHOICE + "MoCo v3's output 256.",
    "pred_hidden": _CHOICE + "MoCo v3's 2-layer predictor, hidden 4096.",
    "momentum_start": _CHOICE + "MoCo v3's 0.99, raised to 1 on a half cosine.",
    "crop_scale": _CHOICE + "SSL4EO-S12's MoCo recipe, random resized crop 0.2-1 with flips.",
    "jitter": _CHOICE + "SSL4EO-S12's MoCo brightness/contrast 0.4 (p 0.8), without the RGB-only colour ops.",
    "epochs": _CHOICE + "100 epochs (MoCo v3's ViT recipe, shortened for continual pretraining).",
    "batch_size": _CHOICE + "global batch 1024.",
    "optimizer": _CHOICE + "AdamW, MoCo v3's optimiser for ViTs (also used here for ResNet-50, where MoCo v3 "
                           "uses LARS).",
    "lr": _CHOICE + "MoCo v3's 1.5e-4 x batch/256.",
    "min_lr": _CHOICE + "cosine decay to 0, as MoCo v3.",
    "warmup_epochs": _CHOICE + "10 warm-up epochs (MoCo v3: 40 of 300), for 100 epochs from pretrained weights.",
    "weight_decay": _CHOICE + "MoCo v3's 0.1.",
    "betas": _CHOICE + "MoCo v3's AdamW betas (0.9, 0.95).",
    "sync_batchnorm": _CHOICE + "SyncBatchNorm in the MLP heads, as MoCo v3.",
    "probe_epochs": _CHOICE + "100 epochs (DINO-MM's probe, by the same group).",
    "probe_lr": _CHOICE + "SGD, momentum 0.9, lr 0.01 with cosine decay, no weight decay (DINO-MM's probe).",
    "probe_batch_size": _CHOICE + "batch 256 (DINO-MM's probe).",
    "finetune_epochs": _CHOICE + "50 epochs on the same BigEarthNet label fraction as the probe (the paper's "
                                 "fine-tuning setting is not public).",
    "finetune_lr": _CHOICE + "AdamW, lr 1e-4 with cosine decay, weight decay 0.05.",
    "finetune_batch_size": _CHOICE + "batch 64.",
}
