"""Per-chapter profiles: ``tiny`` (CI, about a minute on 2 CPU cores), ``small`` (a CPU demo of at most
about 15 minutes that shows real learning on the sample world) and ``full`` (the paper's settings, GPUs).

A profile is a frozen dataclass. Chapters are registered with :func:`register_chapter`; notebooks and the
CLI resolve a profile with :func:`get_profile`, whose keyword overrides replace fields by name. Unknown
names, wrong types and out-of-range values are refused with a message naming the field.

Field docstrings (the ``#:`` comments) give units and the paper's symbols.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Callable

PROFILE_NAMES = ("tiny", "small", "full")


class ConfigError(ValueError):
    """A profile name, field name or field value that is not accepted."""


# --------------------------------------------------------------------------------------------------
# Fields every chapter shares: run, data and optimisation settings read by eobook.train.fit
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChapterConfig:
    """Settings every chapter has. Subclasses add the method's own fields."""

    #: Seed for Python, NumPy and torch; the sample world uses its own ``world_seed``.
    seed: int = 0
    #: Bitwise-repeatable kernels (slower on GPU).
    deterministic: bool = False
    #: "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:N" or "mps".
    device: str = "auto"
    #: Mixed precision: "auto" (bf16 on CUDA, fp32 elsewhere), "off", "bf16" or "fp16" (CUDA only).
    amp: str = "auto"
    #: Dataset root in its native format; "" means the embedded synthetic sample world.
    data_root: str = ""
    #: Which sample world to generate when ``data_root`` is "": "tiny" or "small".
    world_size: str = "tiny"
    #: Seed of the sample world.
    world_seed: int = 0
    #: DataLoader worker processes.
    num_workers: int = 0
    #: Pretraining epochs.
    epochs: int = 1
    #: Global batch size (split across DDP ranks).
    batch_size: int = 8
    #: Cap on optimiser steps per epoch (0 = the whole dataset); tiny profiles use it.
    max_steps_per_epoch: int = 0
    #: "adamw", "adam" or "sgd".
    optimizer: str = "adamw"
    #: Peak learning rate after warm-up (already scaled for the batch size where the paper scales it).
    lr: float = 1e-3
    #: Final learning rate of the cosine schedule.
    min_lr: float = 0.0
    #: Linear warm-up length in epochs (fractions allowed).
    warmup_epochs: float = 0.0
    #: "cosine" (per-step warm-up + cosine), "constant" or "plateau" (ReduceLROnPlateau per epoch).
    lr_schedule: str = "cosine"
    #: Weight decay at the start; ``weight_decay_end`` at the end (cosine), equal for a constant value.
    weight_decay: float = 0.0
    weight_decay_end: float | None = None
    #: SGD momentum (ignored by Adam/AdamW).
    momentum: float = 0.9
    #: AdamW/Adam betas.
    betas: tuple[float, float] = (0.9, 0.999)
    #: Clip the global gradient norm to this value (0 = off).
    grad_clip: float = 0.0
    #: Write a checkpoint every this many optimiser steps (0 = only at the end).
    checkpoint_every: int = 0
    #: Print a log line every this many steps.
    log_every: int = 10

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "batch_size", "log_every")
        check_non_negative(self, "seed", "world_seed", "num_workers", "max_steps_per_epoch", "lr", "min_lr",
                           "warmup_epochs", "weight_decay", "grad_clip", "checkpoint_every")
        check_choice(self, "optimizer", ("adamw", "adam", "sgd"))
        check_choice(self, "lr_schedule", ("cosine", "constant", "plateau"))
        check_choice(self, "amp", ("auto", "off", "bf16", "fp16"))
        check_choice(self, "world_size", ("tiny", "small"))
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs: expected at most epochs={self.epochs}, got {self.warmup_epochs}")

    @property
    def profile_name(self) -> str | None:
        return getattr(self, "_profile", None)


# --------------------------------------------------------------------------------------------------
# Validation helpers for __post_init__ of chapter configs
# --------------------------------------------------------------------------------------------------
def check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ConfigError(f"{name}: expected a value > 0, got {value!r}")


def check_non_negative(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise ConfigError(f"{name}: expected a value >= 0, got {value!r}")


def check_range(cfg: Any, name: str, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> None:
    """Refuse ``getattr(cfg, name)`` outside [low, high] (open ends where asked)."""
    value = getattr(cfg, name)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{name}: expected a value in {interval}, got {value!r}")


def check_choice(cfg: Any, name: str, choices: tuple) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {list(choices)}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chapter:
    name: str
    number: int
    title: str
    notebook: str
    profiles: dict[str, ChapterConfig]


CHAPTERS: dict[str, Chapter] = {}


def register_chapter(name: str, number: int, title: str, notebook: str, **profiles: ChapterConfig) -> Chapter:
    """Register a chapter with its ``tiny``, ``small`` and ``full`` profiles."""
    missing = [p for p in PROFILE_NAMES if p not in profiles]
    if missing:
        raise ConfigError(f"chapter {name!r}: missing profiles {missing}")
    chapter = Chapter(name, number, title, notebook, profiles)
    CHAPTERS[name] = chapter
    return chapter


def chapter_names() -> list[str]:
    return sorted(CHAPTERS, key=lambda n: CHAPTERS[n].number)


def get_chapter(name: str) -> Chapter:
    if name not in CHAPTERS:
        raise ConfigError(f"unknown chapter {name!r}; valid chapters: {chapter_names()}")
    return CHAPTERS[name]


def get_profile(chapter: str, profile: str = "tiny", **overrides: Any) -> ChapterConfig:
    """The chapter's profile with ``overrides`` applied by field name (values may be strings from a CLI)."""
    ch = get_chapter(chapter)
    if profile not in ch.profiles:
        raise ConfigError(f"unknown profile {profile!r} for chapter {chapter!r}; valid profiles: {list(ch.profiles)}")
    return apply_overrides(ch.profiles[profile], overrides, profile_name=profile, context=f"chapter {chapter!r}")


def apply_overrides(base: ChapterConfig, overrides: dict[str, Any], *, profile_name: str | None = None,
                    context: str = "config") -> ChapterConfig:
    valid = {f.name: f for f in fields(base)}
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(f"{context}: unknown parameter(s) {unknown}; valid parameters: {sorted(valid)}")
    hints = typing.get_type_hints(type(base))
    coerced = {name: coerce(name, value, hints[name]) for name, value in overrides.items()}
    cfg = dataclasses.replace(base, **coerced)
    object.__setattr__(cfg, "_profile", profile_name or base.profile_name)
    return cfg


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """Turn ``value`` (maybe a CLI string) into ``annotation``'s type, or raise naming the field."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(name, value, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}: cannot use {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = _parse_literal(name, value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a sequence like {annotation}, got {value!r}")
        item_types = args if not (len(args) == 2 and args[1] is Ellipsis) else (args[0],) * len(value)
        if len(item_types) != len(value):
            raise ConfigError(f"{name}: expected {len(item_types)} values, got {len(value)}")
        return tuple(coerce(name, v, t) for v, t in zip(value, item_types))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, float)):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def _parse_literal(name: str, text: str) -> Any:
    try:
        return json.loads(text.replace("(", "[").replace(")", "]"))
    except json.JSONDecodeError:
        raise ConfigError(f"{name}: cannot parse {text!r} (write a list like [0.9, 0.95])") from None


# ==================================================================================================
# Chapter profiles. Each chapter owns one section below: its config dataclass (fields with units and
# the paper's symbols) and its register_chapter(...) call with tiny, small and full.
# ==================================================================================================

# --- Chapter 1: DINO-MM ----------------------------------------------------------------------------

# --- Chapter 2: Fus-MAE ----------------------------------------------------------------------------
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
    #: Table 2 (SEN12MS transfer): linear evaluation epochs, batch, AdamW lr, label smoothing.
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
        check_range(self, "mask_ratio", 0.0, 1.0, high_open=True)
        check_positive(self, "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "decoder_dim",
                       "decoder_depth", "decoder_heads", "finetune_epochs", "finetune_batch_size", "probe_min_samples",
                       "probe_epochs", "probe_batch_size", "transfer_epochs", "transfer_batch_size", "figure_samples")
        check_non_negative(self, "finetune_lr", "finetune_weight_decay", "probe_lr", "transfer_lr")
        check_range(self, "probe_label_fraction", 0.0, 1.0, low_open=True)
        check_range(self, "label_smoothing", 0.0, 1.0, high_open=True)
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size: expected a multiple of patch_size={self.patch_size}, got {self.img_size}")
        for dim, heads in (("embed_dim", "num_heads"), ("decoder_dim", "decoder_heads")):
            if getattr(self, dim) % getattr(self, heads) or getattr(self, dim) % 4:
                raise ConfigError(f"{dim}: expected a multiple of 4 and of {heads}={getattr(self, heads)}, "
                                  f"got {getattr(self, dim)}")


register_chapter(
    "fus_mae", 2, "Fus-MAE: cross-attention data fusion for masked autoencoders", "02_fus_mae.ipynb",
    # CI: the whole notebook in about a minute on 2 CPU cores.
    tiny=FusMAEConfig(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_dim=32, decoder_depth=1,
        decoder_heads=4, epochs=3, batch_size=16, lr=1e-3, warmup_epochs=1, weight_decay=0.05,
        betas=(0.9, 0.95), log_every=5, finetune_epochs=1, finetune_batch_size=16, probe_min_samples=16,
        probe_epochs=20, probe_batch_size=16, transfer_epochs=10, transfer_batch_size=32, figure_samples=3),
    # CPU demo on the small sample world (<= 15 minutes): pretrained beats random init in the probe.
    small=FusMAEConfig(
        world_size="small", img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, decoder_dim=64,
        decoder_depth=2, decoder_heads=4, epochs=20, batch_size=32, lr=1e-3, warmup_epochs=2, weight_decay=0.05,
        betas=(0.9, 0.95), log_every=20, finetune_epochs=3, finetune_batch_size=32, finetune_lr=3e-4,
        probe_min_samples=64, probe_epochs=50, probe_batch_size=32, transfer_epochs=30, transfer_batch_size=64),
    # The paper (Sec. 4): 100 epochs on BigEarthNet-MM's 354,196 training images, AdamW, batch 200,
    # lr warmed up to 1.5625e-4 over 10 epochs then cosine, 75% masking. Encoder ViT-S/16 at 128 px
    # (not stated in the paper); weight decay 0.05 and betas (0.9, 0.95) as in MAE (not stated).
    full=FusMAEConfig(
        epochs=100, batch_size=200, optimizer="adamw", lr=1.5625e-4, min_lr=0.0, warmup_epochs=10,
        lr_schedule="cosine", weight_decay=0.05, betas=(0.9, 0.95), num_workers=8, checkpoint_every=2000,
        log_every=50),
)

# --- Chapter 3: MultiMAE for EO --------------------------------------------------------------------
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
    #: Downstream classification tasks (GEO-Bench task folders; "eurosat" = EuroSAT-MS).
    classification_tasks: tuple[str, ...] = ("m-eurosat", "m-bigearthnet", "m-brick-kiln", "m-so2sat", "eurosat")
    #: Downstream segmentation tasks (GEO-Bench), head of four ConvNeXt blocks.
    segmentation_tasks: tuple[str, ...] = ("m-cashew-plantation", "m-SA-crop-type")
    #: Input sets evaluated downstream (keys of ``eobook.methods.multimae_eo.INPUT_SETS``).
    input_sets: tuple[str, ...] = ("rgb", "rgb+ired+sired+eb")
    #: Cap on training / test samples per downstream task (0 = all).
    eval_max_train: int = 0
    eval_max_test: int = 0
    #: Linear probing: epochs and SGD learning rate (momentum 0.9, no weight decay).
    probe_epochs: int = 100
    probe_lr: float = 0.01
    #: End-to-end fine-tuning (classification and segmentation): epochs, AdamW lr, weight decay, batch.
    finetune_epochs: int = 50
    finetune_lr: float = 1e-4
    finetune_weight_decay: float = 0.05
    finetune_batch_size: int = 64
    #: Channels of the ConvNeXt segmentation head (its map is 1/4 of the input side).
    seg_head_dim: int = 384
    #: Also train every downstream model from a random initialisation (the baseline pretraining must beat).
    eval_random_init: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_visible",
                       "dirichlet_alpha", "decoder_dim", "decoder_depth", "decoder_heads", "seg_class_dim",
                       "probe_epochs", "probe_lr", "finetune_epochs", "finetune_lr", "finetune_batch_size",
                       "seg_head_dim")
        check_non_negative(self, "drop_path_rate", "eval_max_train", "eval_max_test", "finetune_weight_decay")
        check_choice(self, "depth_loss", ("mse", "l1"))
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
        known = ("rgb", "rgb+ired+sired+eb", "rgb+ired+depth")
        for value in self.input_sets:
            if value not in known:
                raise ConfigError(f"input_sets: expected values among {list(known)}, got {value!r}")


register_chapter(
    "multimae_eo", 3, "MultiMAE meets Earth Observation", "03_multimae_eo.ipynb",
    # The paper's settings (appendix; authors' repo via NOTES.md): ViT-B, 56 px, P = 8, 49 of 294 visible,
    # 1000 epochs on MMEarth, batch 512, lr 1e-4 x 512/256, 1 warm-up epoch, AdamW (0.9, 0.95), wd 0.05.
    full=MultiMAEConfig(epochs=1000, batch_size=512, lr=1e-4 * 512 / 256, min_lr=1e-6, warmup_epochs=1,
                        betas=(0.9, 0.95), weight_decay=0.05, num_workers=8, checkpoint_every=2000,
                        log_every=100),
    # CPU demo on the small sample world (<= 15 minutes on 2 cores).
    small=MultiMAEConfig(world_size="small", img_size=32, patch_size=8, embed_dim=128, depth=4, num_heads=4,
                         num_visible=12, decoder_dim=64, decoder_depth=1, decoder_heads=4, seg_class_dim=16,
                         epochs=20, batch_size=32, lr=1e-3, min_lr=1e-5, warmup_epochs=1, betas=(0.9, 0.95),
                         weight_decay=0.05, classification_tasks=("m-eurosat", "eurosat"),
                         segmentation_tasks=("m-cashew-plantation",), eval_max_train=400, eval_max_test=200,
                         probe_epochs=50, finetune_epochs=5, finetune_lr=3e-4, finetune_batch_size=32,
                         seg_head_dim=32, checkpoint_every=200),
    # About a minute for the whole notebook on 2 CPU cores.
    tiny=MultiMAEConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_visible=8,
                        decoder_dim=32, decoder_depth=1, decoder_heads=4, seg_class_dim=16, epochs=2,
                        batch_size=16, max_steps_per_epoch=10, lr=1e-3, warmup_epochs=0.2, betas=(0.9, 0.95),
                        weight_decay=0.05, classification_tasks=("m-eurosat",),
                        segmentation_tasks=("m-cashew-plantation",), eval_max_train=64, eval_max_test=64,
                        probe_epochs=20, finetune_epochs=1, finetune_lr=3e-4, finetune_batch_size=16,
                        seg_head_dim=16, log_every=5),
)


# --- Chapter 4: SoftCon ----------------------------------------------------------------------------

# --- Chapter 5: CromSS -----------------------------------------------------------------------------
