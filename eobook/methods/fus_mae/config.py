"""Fus-MAE's settings: the typed config, the ``tiny`` / ``small`` / ``full`` profiles, the paper's values.

Chan-To-Hing & Veeravalli (2024), Sec. 3.3 and 4. No official code was published, so every value below that
the paper does not state (encoder and decoder sizes, betas, weight decay, the probes' learning rates, the
SEN12MS input) is the book's choice, with its reason in ``DEVIATIONS``; the chapter's Deviations table shows
them beside the paper's values (``PAPER``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import (ChapterConfig, ConfigError, Paper, check_choice, check_non_negative, check_positive,
                       check_range)


#: What the frozen encoder may see in the SEN12MS transfer (the evaluation inputs of Table 1).
TRANSFER_INPUTS = ("S1", "S2", "S1+S2")


@dataclass(frozen=True)
class FusMAEConfig(ChapterConfig):
    """Fus-MAE (Chan-To-Hing & Veeravalli, IGARSS 2024): SAR-optical masked autoencoder with cross-attention.

    Pretraining data: BigEarthNet-MM (S1 + S2) under ``<root>/BigEarthNet-MM``; transfer: SEN12MS under
    ``<root>/SEN12MS``, where ``<root>`` is ``data_root`` or the sample world.
    """

    #: "XAE&D" (XAttnEncoder as first encoder block + XAttnDecoder) or "XAD" (XAttnDecoder only).
    variant: str = "XAE&D"
    #: "independent" (each modality masked separately) or "consistent" (same patches), Sec. 3.3.
    masking: str = "independent"
    #: Fraction of each modality's patches that is masked (Sec. 3.3: 75%).
    mask_ratio: float = 0.75
    #: Input side H = W in pixels (BigEarthNet patches, 120 px, are resized to it).
    img_size: int = 128
    #: Patch side P in pixels (eq. 1).
    patch_size: int = 16
    #: Encoder width D and depth N (the XAttnEncoder block counts as one of the N), heads.
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    #: MLP hidden width / D in every block.
    mlp_ratio: float = 4.0
    #: Width, depth and heads of each modality's lightweight decoder D_i (eq. 9).
    decoder_dim: int = 192
    decoder_depth: int = 4
    decoder_heads: int = 6
    #: Per-patch standardised reconstruction targets (MAE's option; the paper: plain MSE, False).
    norm_pix_loss: bool = False
    #: Table 1, 100% labels: end-to-end fine-tuning epochs, AdamW lr, batch, weight decay.
    finetune_epochs: int = 10
    finetune_lr: float = 1e-4
    finetune_batch_size: int = 64
    finetune_weight_decay: float = 0.05
    #: Table 1, 1% labels: label fraction, linear-probe epochs, batch, AdamW lr (encoder frozen).
    probe_label_fraction: float = 0.01
    #: Lower bound on the number of probe training samples (the tiny sample world has few patches).
    probe_min_samples: int = 1
    probe_epochs: int = 20
    probe_batch_size: int = 128
    probe_lr: float = 1e-3
    #: Standardise the frozen features (training-set mean and std per dimension) before both linear probes
    #: (the 1% probe and SEN12MS); the classifier stays linear. Not in the paper (see DEVIATIONS).
    probe_standardize: bool = True
    #: Table 2 (SEN12MS transfer): the inputs the frozen encoder sees ("unimodal" in the paper; "S2", "S1" or
    #: "S1+S2"), linear evaluation epochs, batch, AdamW lr, label smoothing.
    transfer_inputs: str = "S2"
    transfer_epochs: int = 10
    transfer_batch_size: int = 256
    transfer_lr: float = 1e-3
    label_smoothing: float = 0.1
    #: Number of test images shown in the reconstruction and attention figures.
    figure_samples: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "variant", ("XAE&D", "XAD"))
        check_choice(self, "masking", ("independent", "consistent"))
        check_choice(self, "transfer_inputs", TRANSFER_INPUTS)
        check_range(self, "mask_ratio", 0.0, 1.0, high_open=True)
        check_positive(self, "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "decoder_dim",
                       "decoder_depth", "decoder_heads", "finetune_epochs", "finetune_batch_size", "probe_min_samples",
                       "probe_epochs", "probe_batch_size", "random_init_seeds", "transfer_epochs",
                       "transfer_batch_size", "figure_samples")
        check_non_negative(self, "finetune_lr", "finetune_weight_decay", "probe_lr", "transfer_lr")
        check_range(self, "probe_label_fraction", 0.0, 1.0, low_open=True)
        check_range(self, "label_smoothing", 0.0, 1.0, high_open=True)
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size: expected a multiple of patch_size={self.patch_size}, got {self.img_size}")
        for dim, heads in (("embed_dim", "num_heads"), ("decoder_dim", "decoder_heads")):
            if getattr(self, dim) % getattr(self, heads) or getattr(self, dim) % 4:
                raise ConfigError(f"{dim}: expected a multiple of 4 and of {heads}={getattr(self, heads)}, "
                                  f"got {getattr(self, dim)}")


PROFILES = {
    # CI: the whole notebook in about a minute on 2 CPU cores.
    "tiny": FusMAEConfig(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_dim=32, decoder_depth=1,
        decoder_heads=4, epochs=3, batch_size=16, lr=1e-3, warmup_epochs=1, weight_decay=0.05,
        betas=(0.9, 0.95), log_every=5, finetune_epochs=1, finetune_batch_size=16, probe_min_samples=16,
        probe_epochs=20, probe_batch_size=16, transfer_epochs=10, transfer_batch_size=32, figure_samples=3,
        cache_data=True),
    # CPU demo on the small sample world (<= 15 minutes): pretrained beats random init in the probe.
    # The linear probes take the paper's number of steps: 1% of BigEarthNet-MM, 20 epochs of 3,542 patches at
    # batch 128, about 560 steps (here 280 epochs of 64 patches at batch 32); SEN12MS, 10 epochs of 180,662 at
    # batch 256, about 7,000 (here 1000 epochs of 400 at batch 64). The random-init row is the mean of three
    # seeds, whose probes differ by one to two mAP on 64 patches and by up to 7 points of top-1 on SEN12MS.
    "small": FusMAEConfig(
        world_size="small", img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, decoder_dim=64,
        decoder_depth=2, decoder_heads=4, epochs=80, batch_size=32, lr=1e-3, warmup_epochs=4, weight_decay=0.05,
        betas=(0.9, 0.95), log_every=20, finetune_epochs=3, finetune_batch_size=32, finetune_lr=3e-4,
        probe_min_samples=64, probe_epochs=280, probe_batch_size=32, random_init_seeds=3, transfer_epochs=1000,
        transfer_batch_size=64, cache_data=True),
    # The paper (Sec. 4): see PAPER for each value and its source, DEVIATIONS for the values the paper leaves
    # open (encoder ViT-S/16 at 128 px; weight decay 0.05 and betas (0.9, 0.95) as in MAE; ...).
    "full": FusMAEConfig(
        epochs=100, batch_size=200, optimizer="adamw", lr=1.5625e-4, min_lr=0.0, warmup_epochs=10,
        lr_schedule="cosine", weight_decay=0.05, betas=(0.9, 0.95), num_workers=8, checkpoint_every=2000,
        log_every=50),
}

#: The paper's value of every ``full`` field that the paper fixes (no official code was published).
PAPER = {
    "mask_ratio": Paper(0.75, "Sec. 3.3: 75% masking ratio, following MAE"),
    "norm_pix_loss": Paper(False, "Sec. 3.2: the mean square error over the reconstructed tokens"),
    "epochs": Paper(100, "Sec. 4: 100 epochs on the BigEarthNet training split"),
    "batch_size": Paper(200, "Sec. 4"),
    "optimizer": Paper("adamw", "Sec. 4"),
    "lr": Paper(1.5625e-4, "Sec. 4: warmed up to 1.5625e-4"),
    "warmup_epochs": Paper(10, "Sec. 4: for the 10 first epochs"),
    "lr_schedule": Paper("cosine", "Sec. 4: then decayed with a cosine schedule"),
    "finetune_epochs": Paper(10, "Sec. 4, multilabel classification: fine-tuned over 10 epochs"),
    "probe_label_fraction": Paper(0.01, "Sec. 4 and Table 1: 1% of the training labels"),
    "probe_epochs": Paper(20, "Sec. 4: the 1% classifier is trained for 20 epochs"),
    "probe_batch_size": Paper(128, "Sec. 4"),
    "probe_standardize": Paper(False, "Sec. 4: only the weights of the linear classifier are learnt"),
    "transfer_epochs": Paper(10, "Sec. 4, transfer learning: 10 epochs"),
    "transfer_batch_size": Paper(256, "Sec. 4"),
    "label_smoothing": Paper(0.1, "Sec. 4: timm's LabelSmoothingCrossEntropy (its default smoothing, 0.1)"),
}

#: Why ``full`` differs from the paper where it does, and why its value is the book's where the paper gives none
#: (the chapter's Deviations table, :meth:`eobook.config.Chapter.deviations_table`).
_VIT_S = ("The paper names no encoder size (Sec. 3.1: 'our encoder is a ViT'); the book uses ViT-S (width 384, "
          "depth 12 counting the XAttnEncoder block, 6 heads, MLP ratio 4), the size of DINO-MM's ViT-S/8, so that "
          "Table 1's DINO-MM row compares like with like.")
_DECODER = ("Sec. 3.2 asks for lightweight decoders 'following MAE' without their size; the book gives each "
            "modality an MAE-style decoder of width 192, depth 4, 6 heads.")
_FINETUNE = ("Sec. 4 gives the fine-tuning epochs, loss (MultiLabelSoftMarginLoss) and optimiser (AdamW) only; lr "
             "1e-4, batch 64 and weight decay 0.05 (biases, norms and the global token not decayed) are the book's.")
DEVIATIONS = {
    "variant": "The paper pretrains both variants and reports both rows of Tables 1 and 2; full trains XAE&D "
               "(early and feature-level fusion, which Sec. 4 says has 'a slight edge'); variant='XAD' gives the "
               "other row.",
    "masking": "Sec. 3.3 proposes independent and consistent masking, but Sec. 4 does not say which one the tables "
               "used; the book pretrains with independent masking (the strategy Sec. 3.3 calls widely adopted).",
    "img_size": "The paper names no input size. BigEarthNet's 120 px patches (SEN12MS: 256 px) are resized batch by "
                "batch inside the model (bilinear, antialiased) to 128 px, the smallest multiple of the 16 px patch "
                "that does not shrink BigEarthNet: an 8 x 8 grid of tokens per modality.",
    "patch_size": "Eq. 1 names the patch side P without a value; 16 px, as ViT-S/16 and MAE.",
    "embed_dim": _VIT_S,
    "depth": _VIT_S,
    "num_heads": _VIT_S,
    "mlp_ratio": _VIT_S,
    "decoder_dim": _DECODER,
    "decoder_depth": _DECODER,
    "decoder_heads": _DECODER,
    "min_lr": "Sec. 4 decays the learning rate with a cosine schedule without giving its final value; 0, as MAE.",
    "weight_decay": "Not given for pretraining; 0.05, MAE's value (biases, norms and tokens not decayed).",
    "betas": "Not given; (0.9, 0.95), MAE's AdamW betas.",
    "finetune_lr": _FINETUNE,
    "finetune_batch_size": _FINETUNE,
    "finetune_weight_decay": _FINETUNE,
    "probe_lr": "Sec. 4 gives the 1% probe's epochs, batch and optimiser (AdamW), not its learning rate; 1e-3 on "
                "standardised features (probe_standardize).",
    "probe_standardize": "The book's 1% probe and SEN12MS probe read the frozen features standardised with the "
                         "training set's mean and std per dimension (the classifier stays linear), which makes "
                         "their fixed AdamW learning rate independent of the features' scale; the paper does not "
                         "say that it standardises. Kept in every profile so that the book's numbers stay "
                         "comparable with its earlier runs.",
    "transfer_inputs": "Sec. 4 calls the SEN12MS task 'unimodal land-cover classification' without naming the "
                       "modality; the book probes the S2 features (SEN12MS's 13 L1C bands without B10, in "
                       "BigEarthNet's 12-band order): in Table 1's fine-tuning S1 alone scores 10 to 15 points "
                       "below S2 for every encoder, and Sec. 4 notes that all models mainly rely on optical data.",
    "transfer_lr": "Sec. 4 gives the SEN12MS probe's epochs, batch and loss, neither optimiser nor learning rate; "
                   "the book uses AdamW with lr 1e-3, as for its 1% probe.",
    "random_init_seeds": "The paper's baseline row is ImageNet initialisation, which needs downloaded weights and a "
                         "3-channel input; the book's baseline is the same encoder with random weights (the mean "
                         "over this many seeds) and shows the paper's ImageNet numbers as published.",
}
