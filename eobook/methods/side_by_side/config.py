"""Chapter 6's settings: one backbone, one pretraining budget and one evaluation for the five objectives.

There is no paper behind this chapter: each ``full`` value below is the book's common choice where the five
papers differ, and ``DEVIATIONS`` says, field by field, what each paper used instead and why the chapter's value
is the one it is. The objectives' own settings (temperatures, mask ratios, heads) are not fields here: each
objective takes them from its chapter's profile of the same name (:mod:`.objectives`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import ChapterConfig, ConfigError, Paper, check_choice, check_positive
from .. import cromss, dino_mm, softcon

#: The objectives in the chapter's order (the five papers, then the supervised baseline).
OBJECTIVES = ("dino_mm", "fus_mae", "multimae_eo", "softcon", "cromss", "supervised")


@dataclass(frozen=True)
class SideBySideConfig(ChapterConfig):
    """Five self-supervised objectives (and a supervised one) on one ViT over S1 and S2 tokens.

    Pretraining data: SSL4EO-S12 under ``<root>/SSL4EO-S12`` (S2 L2A, S1 GRD, Dynamic World masks and
    multi-labels); evaluation: BigEarthNet-MM, EuroSAT-MS and DFC2020 under ``<root>``, where ``<root>`` is
    ``data_root`` or the sample world.
    """

    #: The objective ``python -m eobook pretrain side_by_side`` trains (the notebook trains ``objectives``).
    objective: str = "dino_mm"
    #: The objectives the chapter pretrains and compares, in its order.
    objectives: tuple[str, ...] = OBJECTIVES
    #: Backbone: input side H = W (px), patch P, width D, depth, heads (ViT-S/16 in ``full``).
    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    #: Hidden channels of the one segmentation decoder (CromSS's pretraining and the DFC2020 evaluation).
    decoder_dim: int = 256
    #: Pretraining seeds per objective: ``seed``, ``seed + 1``, ... (each seed its own backbone start).
    seeds: int = 3
    #: Linear probes on frozen, standardised image features (BigEarthNet mAP, EuroSAT OA): epochs, batch, lr.
    probe_epochs: int = 100
    probe_batch_size: int = 256
    probe_lr: float = 1e-3
    #: DFC2020 frozen-encoder segmentation: decoder epochs, batch, lr.
    seg_epochs: int = 50
    seg_batch_size: int = 32
    seg_lr: float = 1e-3
    #: The DFC2020 test scene of the qualitative figure.
    figure_scene: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "objective", OBJECTIVES)
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives:
            raise ConfigError(f"objectives: expected a non-empty subset of {list(OBJECTIVES)}, got {self.objectives}")
        check_positive(self, "img_size", "patch_size", "embed_dim", "depth", "num_heads", "decoder_dim", "seeds",
                       "probe_epochs", "probe_batch_size", "seg_epochs", "seg_batch_size")
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size: expected a multiple of patch_size={self.patch_size}, got {self.img_size}")
        if self.patch_size & (self.patch_size - 1):
            raise ConfigError(f"patch_size: expected a power of 2 (the decoder upsamples by 2), got {self.patch_size}")
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ConfigError(f"embed_dim: expected a multiple of 4 and of num_heads={self.num_heads}, "
                              f"got {self.embed_dim}")

    @property
    def seed_list(self) -> list[int]:
        """The pretraining seeds: ``seed``, ``seed + 1``, ...; a smoke run trains each objective once."""
        return [self.seed + i for i in range(1 if self.smoke else self.seeds)]


PROFILES = {
    # CI: every objective and the evaluation once, in about a minute and a half on 2 CPU cores.
    "tiny": SideBySideConfig(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_dim=16, seeds=1, epochs=2,
        batch_size=16, lr=1e-3, warmup_epochs=1, weight_decay=0.05, betas=(0.9, 0.95), grad_clip=3.0, log_every=5,
        probe_epochs=20, probe_batch_size=32, seg_epochs=3, seg_batch_size=16, random_init_seeds=1,
        cache_data=True),
    # CPU demonstration on the small sample world (about 30 minutes): three seeds of every objective.
    "small": SideBySideConfig(
        world_size="small", img_size=48, patch_size=8, embed_dim=96, depth=4, num_heads=4, decoder_dim=32,
        seeds=3, epochs=12, batch_size=32, lr=1e-3, warmup_epochs=2, weight_decay=0.05, betas=(0.9, 0.95),
        grad_clip=3.0, log_every=72, probe_epochs=100, probe_batch_size=128, seg_epochs=10, seg_batch_size=32,
        random_init_seeds=3, cache_data=True),
    # GPUs: ViT-S/16 at 224 px on SSL4EO-S12@NoL (103,793 locations), 100 epochs for every objective.
    "full": SideBySideConfig(
        epochs=100, batch_size=256, optimizer="adamw", lr=5e-4, min_lr=1e-6, warmup_epochs=10,
        lr_schedule="cosine", weight_decay=0.05, betas=(0.9, 0.95), grad_clip=3.0, num_workers=10,
        checkpoint_every=2000, log_every=50, random_init_seeds=3),
}



def _borrowed(chapter, paper: dict[str, Paper], field: str) -> Paper:
    """A value one of the five papers fixes for the same field, with where it says so (its chapter's record)."""
    return Paper(paper[field].value, f"{chapter}, {paper[field].source}")


#: The paper each common value comes from (no paper fixes this chapter's settings: where the five differ the
#: chapter takes one paper's value, named here, and DEVIATIONS says what the others use).
PAPER = {
    **{f: _borrowed("DINO-MM", dino_mm.PAPER, f) for f in (
        "embed_dim", "depth", "num_heads", "epochs", "batch_size", "optimizer", "lr", "min_lr", "warmup_epochs",
        "lr_schedule", "weight_decay", "betas", "grad_clip", "probe_epochs", "probe_batch_size", "probe_lr")},
    "img_size": _borrowed("SoftCon", softcon.PAPER, "img_size"),
    "seg_epochs": _borrowed("CromSS", cromss.PAPER, "downstream_epochs"),
    "seg_batch_size": _borrowed("CromSS", cromss.PAPER, "dfc2020_batch_size"),
}

_BACKBONE = ("The papers train ViT-S/8 at 128 px (DINO-MM), an unnamed ViT at an unnamed size (Fus-MAE), ViT-B/8 at "
             "56 px (MultiMAE-EO), ViT-S/14 and ViT-B/14 at 224 px (SoftCon) and ResNet-50 U-Nets at 256 px (CromSS). "
             "The chapter gives all five one ViT-S/16 at 224 px over S1 and S2 tokens (Fus-MAE's encoder without its "
             "cross-attention block): ViT-S is the size three papers use, /16 at 224 px keeps 196 tokens per sensor.")
_BUDGET = ("The papers train 100 (DINO-MM, Fus-MAE, SoftCon), 200 (CromSS) or more epochs with their own batches and "
           "learning rates. The chapter gives every objective the same samples seen (100 epochs of SSL4EO-S12@NoL) "
           "and the same optimiser: AdamW, lr 5e-4 at batch 256 (DINO's linear-scaling rule), 10 warm-up epochs, "
           "cosine to 1e-6 and gradient clipping 3 (all DINO-MM's); weight decay 0.05 and betas (0.9, 0.95) are MAE's "
           "(DINO-MM: 0.04 rising to 0.4 and PyTorch's default betas), which the masked autoencoders need and the "
           "others train with as well.")
_PROBES = ("One protocol for all (DINO's linear evaluation of ViT-S: the global token and the mean patch token, "
           "concatenated, standardised), replacing each paper's own (fine-tuning, kNN, 1% probes); AdamW so that one "
           "learning rate serves every encoder.")
DEVIATIONS = {
    "img_size": _BACKBONE, "patch_size": _BACKBONE, "embed_dim": _BACKBONE, "depth": _BACKBONE, "num_heads": _BACKBONE,
    "decoder_dim": ("CromSS trains U-Net decoders (256 to 16 channels) and evaluates with PSPNet; the chapter has one "
                    "light progressive-upsampling decoder (256 channels, halved at each 2x upsampling) on the ViT's "
                    "patch tokens, the same in "
                    "CromSS's pretraining and in every encoder's DFC2020 evaluation."),
    "epochs": _BUDGET, "batch_size": _BUDGET, "optimizer": _BUDGET, "lr": _BUDGET, "min_lr": _BUDGET,
    "warmup_epochs": _BUDGET, "lr_schedule": _BUDGET, "weight_decay": _BUDGET, "betas": _BUDGET, "grad_clip": _BUDGET,
    "seeds": "Three pretraining seeds per objective, each starting all objectives from the same random backbone, "
             "so that differences between objectives can be read against the spread of one objective's seeds.",
    "probe_epochs": _PROBES, "probe_batch_size": _PROBES, "probe_lr": _PROBES,
    "seg_epochs": ("DFC2020 with the encoder frozen, as CromSS's frozen rows: the decoder trains 50 epochs (CromSS's "
                   "transfer length) with AdamW, lr 1e-3, batch 32 (CromSS's)."),
    "seg_batch_size": "CromSS's DFC2020 batch (32).",
    "seg_lr": "AdamW at 1e-3 for a decoder trained from scratch on frozen features (CromSS: Adam 5e-4, fine-tuning).",
    "random_init_seeds": "The random-init row is the mean over three seeds of the untrained backbone.",
}
