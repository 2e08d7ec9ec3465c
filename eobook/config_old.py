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
from typing import Any

from .train import TrainConfig

PROFILE_NAMES = ("tiny", "small", "full")


class ConfigError(ValueError):
    """A profile name, field name or field value that is not accepted."""


# --------------------------------------------------------------------------------------------------
# Fields every chapter shares: run, data and optimisation settings read by eobook.train.fit
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChapterConfig(TrainConfig):
    """Settings every chapter has: the training loop's (:class:`eobook.train.TrainConfig`) and the run's.
    Subclasses add the method's own fields."""

    #: Bitwise-repeatable kernels (slower on GPU).
    deterministic: bool = False
    #: Folder holding the datasets under their names (BigEarthNet-MM/, SSL4EO-S12/, MMEarth/, GEO-Bench/,
    #: SEN12MS/, EuroSAT-MS/), each in its native format; "" means the embedded synthetic sample world.
    data_root: str = ""
    #: Which sample world to generate when ``data_root`` is "": "tiny" or "small".
    world_size: str = "tiny"
    #: Seed of the sample world.
    world_seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "batch_size", "keep_checkpoints", "plateau_patience")
        check_non_negative(self, "seed", "world_seed", "num_workers", "max_steps_per_epoch", "lr", "min_lr",
                           "warmup_epochs", "weight_decay", "grad_clip", "checkpoint_every", "log_every")
        check_range(self, "plateau_factor", 0.0, 1.0, low_open=True, high_open=True)
        check_choice(self, "progress", ("auto", "on", "off"))
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
@dataclass(frozen=True)
class DinoMMConfig(ChapterConfig):
    """DINO-MM (Wang, Albrecht & Zhu, IGARSS 2022): DINO with RandomSensorDrop on 12 S2 + 2 S1 channels.

    Data: BigEarthNet-MM under ``<root>/BigEarthNet-MM`` (``<root>`` = ``data_root`` or the sample world);
    the input is the 12 S2 L2A bands then S1 VH, VV, each scaled to [0, 1] (mean +/- 2 std).
    """

    #: ViT width D, depth and heads (ViT-S: 384, 12, 6).
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    #: Patch side in pixels (ViT-S/8: 8).
    patch_size: int = 8
    #: Stochastic-depth rate of the student (the teacher has none).
    drop_path_rate: float = 0.1
    #: Input side in pixels (patches resized to 128); positional embeddings are made for this grid.
    img_size: int = 128
    #: Multi-crop: side in pixels and area-scale range of the 2 global and ``n_local_crops`` local views.
    global_crop_size: int = 112
    global_crop_scale: tuple[float, float] = (0.4, 1.0)
    local_crop_size: int = 48
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    n_local_crops: int = 8
    #: RandomSensorDrop: probability p that a view loses S1 or S2 (each half of the time).
    sensor_drop_p: float = 0.5
    #: DINO head h: output dimension K, MLP hidden width, bottleneck before the l2-norm.
    out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    #: Weight-normalised last layer with its gain fixed to 1 (DINO's norm_last_layer).
    norm_last_layer: bool = True
    #: Student temperature tau_s.
    student_temp: float = 0.1
    #: Teacher temperature tau_t: linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp`` (epochs).
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    #: Centre EMA rate m of Eq. (1).
    center_momentum: float = 0.9
    #: Teacher EMA momentum at step 0, raised to 1 with a cosine.
    teacher_momentum: float = 0.996
    #: Epochs during which the last layer of the student head is not updated.
    freeze_last_layer_epochs: int = 1
    #: Epochs over which the photometric augmentations and RandomSensorDrop ramp in from 0 (0: the paper,
    #: full strength from the first step). A stabiliser for small models on little data, not in the paper.
    augmentation_warmup_epochs: int = 0
    #: Linear probe on the frozen teacher: CLS tokens of the last n blocks, epochs, batch, SGD lr (cosine).
    probe_blocks: int = 4
    probe_epochs: int = 100
    probe_batch_size: int = 256
    probe_lr: float = 0.01
    #: Standardise the frozen features before the probe (not in the paper; helps short CPU probes).
    probe_standardize: bool = False
    #: Random-init baselines: backbones seeded ``seed``, ``seed + 1``, ...; the "Random" row is their mean.
    random_init_seeds: int = 1
    #: Label fractions of the training split (Table 2: 100% and 1%), and the fewest samples a subset keeps.
    label_fractions: tuple[float, ...] = (1.0, 0.01)
    min_label_samples: int = 1
    #: Evaluation view: Resize(img_size) + CenterCrop(eval_crop_size), in pixels.
    eval_crop_size: int = 112
    #: Cap on the training / test samples used in evaluation (0 = the whole split).
    eval_train_samples: int = 0
    eval_test_samples: int = 0
    #: Supervised baseline (same ViT, end to end): epochs, batch, AdamW lr (cosine), weight decay.
    supervised_epochs: int = 100
    supervised_batch_size: int = 256
    supervised_lr: float = 1e-3
    supervised_weight_decay: float = 0.05
    #: Patches shown in the attention-map figure.
    figure_samples: int = 4
    #: Read the dataset once and keep it in memory (the sample world is small; BigEarthNet-MM is not).
    cache_data: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "embed_dim", "depth", "num_heads", "patch_size", "img_size", "global_crop_size",
                       "local_crop_size", "out_dim", "head_hidden_dim", "head_bottleneck_dim", "student_temp",
                       "warmup_teacher_temp", "teacher_temp", "probe_blocks", "probe_epochs", "probe_batch_size",
                       "random_init_seeds", "min_label_samples", "eval_crop_size", "supervised_epochs",
                       "supervised_batch_size", "figure_samples")
        check_non_negative(self, "n_local_crops", "warmup_teacher_temp_epochs", "freeze_last_layer_epochs",
                           "augmentation_warmup_epochs",
                           "probe_lr", "eval_train_samples", "eval_test_samples", "supervised_lr",
                           "supervised_weight_decay")
        check_range(self, "drop_path_rate", 0.0, 1.0, high_open=True)
        check_range(self, "sensor_drop_p", 0.0, 1.0)
        check_range(self, "center_momentum", 0.0, 1.0)
        check_range(self, "teacher_momentum", 0.0, 1.0)
        for name in ("global_crop_scale", "local_crop_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ConfigError(f"{name}: expected 0 < low <= high <= 1, got {(low, high)}")
        for fraction in self.label_fractions:
            if not 0.0 < fraction <= 1.0:
                raise ConfigError(f"label_fractions: expected values in (0, 1], got {self.label_fractions}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim: expected a multiple of num_heads={self.num_heads}, got {self.embed_dim}")
        for name in ("img_size", "global_crop_size", "local_crop_size", "eval_crop_size"):
            if getattr(self, name) % self.patch_size:
                raise ConfigError(f"{name}: expected a multiple of patch_size={self.patch_size}, got {getattr(self, name)}")
        if self.eval_crop_size > self.img_size:
            raise ConfigError(f"eval_crop_size: expected at most img_size={self.img_size}, got {self.eval_crop_size}")
        if self.probe_blocks > self.depth:
            raise ConfigError(f"probe_blocks: expected at most depth={self.depth}, got {self.probe_blocks}")


register_chapter(
    "dino_mm", 1, "DINO-MM: self-supervised ViTs for joint SAR-optical representation learning",
    "01_dino_mm.ipynb",
    # CI: the whole notebook in about a minute on 2 CPU cores.
    tiny=DinoMMConfig(
        embed_dim=64, depth=2, num_heads=4, patch_size=8, drop_path_rate=0.0, img_size=32, global_crop_size=32,
        local_crop_size=16, n_local_crops=2, out_dim=256, head_hidden_dim=128, head_bottleneck_dim=32,
        warmup_teacher_temp_epochs=1, epochs=2, batch_size=16, max_steps_per_epoch=8, lr=5e-4 * 16 / 256,
        min_lr=1e-6, warmup_epochs=1, weight_decay=0.04, weight_decay_end=0.4, grad_clip=3.0, log_every=4,
        probe_blocks=2, probe_epochs=20, probe_batch_size=64, probe_standardize=True, min_label_samples=16,
        eval_crop_size=32,
        supervised_epochs=2, supervised_batch_size=32, figure_samples=3, cache_data=True),
    # CPU demo on the small sample world (<= 15 minutes): the teacher's probe against a random ViT.
    # With the paper's augmentations from the first step this model never leaves the near-uniform start (the
    # teacher entropy climbs to log K within about 80 steps and the gradients fade), whatever we tried:
    # tau_t 0.02 (one-hot collapse instead), momentum 0.996 or 0.99, batch 32 or 64, smaller blur, no sensor
    # drop. With crops and flips only it escapes after about 200 steps. So the small profile ramps the
    # photometric transforms and RandomSensorDrop in over 15 epochs (augmentation_warmup_epochs), with a
    # faster teacher (0.99), a higher lr (1e-3 at batch 32) and 35 epochs of the 520 snow/cloud-free patches.
    # The probe is the paper's (raw features, SGD lr 0.01) trained for 1000 epochs: the paper's 100 epochs of
    # 269,695 patches are about 105,000 steps, and 100 epochs of 520 patches (500 steps) leave the probe far
    # from converged, so that it ranks features by their conditioning rather than by what they hold. The
    # random-init row is the mean of three seeds (their spread is about 1.5 mAP).
    small=DinoMMConfig(
        world_size="small", embed_dim=128, depth=4, num_heads=4, patch_size=8, drop_path_rate=0.0, img_size=64,
        global_crop_size=48, local_crop_size=24, n_local_crops=4, out_dim=1024, head_hidden_dim=512,
        head_bottleneck_dim=64, teacher_temp=0.04, warmup_teacher_temp_epochs=0, teacher_momentum=0.99,
        augmentation_warmup_epochs=15, epochs=35, batch_size=32, lr=1e-3,
        min_lr=1e-6, warmup_epochs=3, weight_decay=0.04, weight_decay_end=0.4, grad_clip=3.0, log_every=20,
        probe_epochs=1000, probe_batch_size=128, random_init_seeds=3, min_label_samples=64, eval_crop_size=56,
        supervised_epochs=10, supervised_batch_size=64, cache_data=True),
    # The paper (Sec. 3.1) and the authors' settings (NOTES.md): ViT-S/8 at 128 px, 2 x 112 px + 8 x 48 px
    # crops, K = 65,536, 100 epochs, batch 256, AdamW lr 5e-4 x 256/256 after 10 warm-up epochs then cosine
    # to 1e-6, weight decay 0.04 -> 0.4, grad clip 3, tau_s 0.1, tau_t 0.04 -> 0.07 over 30 epochs.
    # Supervised baseline: 100 epochs, batch 256, AdamW 1e-3 as in the authors' script (weight decay not stated).
    full=DinoMMConfig(
        epochs=100, batch_size=256, optimizer="adamw", lr=5e-4, min_lr=1e-6, warmup_epochs=10,
        lr_schedule="cosine", weight_decay=0.04, weight_decay_end=0.4, grad_clip=3.0, num_workers=10,
        checkpoint_every=2000, log_every=50),
)


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
    #: Random-init baselines: encoders seeded ``seed``, ``seed + 1``, ...; the "random init" row is their mean.
    random_init_seeds: int = 1
    #: Table 2 (SEN12MS transfer): linear evaluation epochs, batch, AdamW lr, label smoothing.
    transfer_epochs: int = 10
    transfer_batch_size: int = 256
    transfer_lr: float = 1e-3
    label_smoothing: float = 0.1
    #: Number of test images shown in the reconstruction and attention figures.
    figure_samples: int = 4
    #: Keep decoded, resized samples in memory (the sample world; too large for the real datasets).
    cache_data: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "variant", ("XAE&D", "XAD"))
        check_choice(self, "masking", ("independent", "consistent"))
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


register_chapter(
    "fus_mae", 2, "Fus-MAE: cross-attention data fusion for masked autoencoders", "02_fus_mae.ipynb",
    # CI: the whole notebook in about a minute on 2 CPU cores.
    tiny=FusMAEConfig(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_dim=32, decoder_depth=1,
        decoder_heads=4, epochs=3, batch_size=16, lr=1e-3, warmup_epochs=1, weight_decay=0.05,
        betas=(0.9, 0.95), log_every=5, finetune_epochs=1, finetune_batch_size=16, probe_min_samples=16,
        probe_epochs=20, probe_batch_size=16, transfer_epochs=10, transfer_batch_size=32, figure_samples=3, cache_data=True),
    # CPU demo on the small sample world (<= 15 minutes): pretrained beats random init in the probe.
    # The linear probes take the paper's number of steps: 1% of BigEarthNet-MM, 20 epochs of 3,542 patches at
    # batch 128, about 560 steps (here 280 epochs of 64 patches at batch 32); SEN12MS, 10 epochs of 180,662 at
    # batch 256, about 7,000 (here 1000 epochs of 400 at batch 64). The random-init row is the mean of three
    # seeds, whose probes differ by one to two mAP on 64 patches and by up to 7 points of top-1 on SEN12MS.
    small=FusMAEConfig(
        world_size="small", img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, decoder_dim=64,
        decoder_depth=2, decoder_heads=4, epochs=80, batch_size=32, lr=1e-3, warmup_epochs=4, weight_decay=0.05,
        betas=(0.9, 0.95), log_every=20, finetune_epochs=3, finetune_batch_size=32, finetune_lr=3e-4,
        probe_min_samples=64, probe_epochs=280, probe_batch_size=32, random_init_seeds=3, transfer_epochs=1000,
        transfer_batch_size=64, cache_data=True),
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
                         segmentation_tasks=("m-landcover-seg",), eval_max_train=400, eval_max_test=200,
                         probe_epochs=50, finetune_epochs=5, finetune_lr=3e-4, finetune_batch_size=32,
                         seg_head_dim=32, checkpoint_every=200),
    # About a minute for the whole notebook on 2 CPU cores.
    tiny=MultiMAEConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_visible=8,
                        decoder_dim=32, decoder_depth=1, decoder_heads=4, seg_class_dim=16, epochs=5,
                        batch_size=16, lr=1e-3, warmup_epochs=0.5, betas=(0.9, 0.95), weight_decay=0.05,
                        classification_tasks=("m-eurosat",), segmentation_tasks=("m-landcover-seg",),
                        eval_max_train=32, eval_max_test=32, probe_epochs=10, finetune_epochs=1,
                        finetune_lr=3e-4, finetune_batch_size=16, seg_head_dim=16, log_every=5),
)


# --- Chapter 4: SoftCon ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SoftConConfig(ChapterConfig):
    """SoftCon (Wang, Albrecht & Zhu, 2024): multi-label guided soft contrastive continual pretraining.

    Pretraining data: SSL4EO-S12-ML (``<root>/SSL4EO-S12``: one random season per location, multi-labels
    from Dynamic World); evaluation: BigEarthNet-MM and EuroSAT-MS, where ``<root>`` is ``data_root`` or
    the sample world. Only the abstract and the authors' README are public: fields marked "choice" are
    the book's (stated in the chapter's Deviations section).
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
    #: weights: DINOv2 LVD-142M / ResNet-50 a1-in1k) or a path to a local RGB state-dict file.
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
    #: BigEarthNet end-to-end fine-tuning on the same label fraction: epochs (0 = skip), AdamW lr, batch.
    finetune_epochs: int = 50
    finetune_lr: float = 1e-4
    finetune_batch_size: int = 64
    #: The lambda ablation: extra pretraining runs with these lambdas (1.0 = plain InfoNCE); () = none.
    ablation_lambdas: tuple[float, ...] = ()
    #: Scenes in the similarity-matrix figure.
    figure_batch: int = 24
    #: Read each dataset once and keep it in memory (sample worlds; the full datasets do not fit).
    cache_data: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "modality", ("s2c", "s1"))
        check_choice(self, "arch", ("vit", "vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "resnet50"))
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


register_chapter(
    "softcon", 4, "SoftCon: multi-label guided soft contrastive continual pretraining", "04_softcon.ipynb",
    # CI: the whole notebook in about a minute on 2 CPU cores (random init, no download).
    tiny=SoftConConfig(
        arch="vit", img_size=32, patch_size=8, vit_dim=64, vit_depth=2, vit_heads=4, weights="",
        proj_hidden=128, proj_dim=32, pred_hidden=128, epochs=4, batch_size=16, lr=1e-3, warmup_epochs=1,
        weight_decay=0.05, betas=(0.9, 0.95), log_every=4, probe_fraction=1.0, probe_epochs=30,
        probe_batch_size=32, finetune_epochs=1, finetune_lr=1e-3, finetune_batch_size=16,
        ablation_lambdas=(1.0,), figure_batch=16, cache_data=True),
    # CPU demo on the small sample world (<= 15 minutes): SoftCon vs plain InfoNCE vs random init.
    small=SoftConConfig(
        world_size="small", arch="vit", img_size=48, patch_size=8, vit_dim=96, vit_depth=4, vit_heads=4,
        weights="", proj_hidden=256, proj_dim=64, pred_hidden=256, epochs=60, batch_size=64, lr=1e-3,
        warmup_epochs=2, weight_decay=0.05, betas=(0.9, 0.95), log_every=20, probe_fraction=0.25,
        probe_epochs=50, probe_batch_size=64, finetune_epochs=3, finetune_lr=3e-4, finetune_batch_size=32,
        ablation_lambdas=(1.0, 0.0), checkpoint_every=50, cache_data=True),
    # The paper's setting for ViT-S/14 on 13-band MS (other rows: arch=resnet50 mask_ratio=0 |
    # arch=vit_base_patch14_dinov2 probe_blocks=4 | modality=s1). Unpublished values are the book's choices:
    # 100 epochs, global batch 1024, AdamW (MoCo v3: lr 1.5e-4 x batch/256, wd 0.1, betas 0.9/0.95).
    full=SoftConConfig(
        epochs=100, batch_size=1024, lr=6e-4, min_lr=0.0, warmup_epochs=10, weight_decay=0.1,
        betas=(0.9, 0.95), num_workers=10, checkpoint_every=1000, log_every=50),
)


# --- Chapter 5: CromSS -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CromSSConfig(ChapterConfig):
    """CromSS (Liu et al., 2025, IEEE TGRS): U-Nets pretrained on Dynamic World noisy labels, S1 + S2."""

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
    #: Decoder width of the downstream network (smp default 256).
    downstream_decoder_channels: int = 256
    #: Downstream epochs, Adam learning rate (cosine), batch size (DFC2020: 32), seeds (mean +/- std).
    downstream_epochs: int = 50
    downstream_lr: float = 5e-4
    downstream_batch_size: int = 32
    downstream_seeds: int = 3
    #: Pixels per image for the pixel-level PCA curves (Fig. 13).
    pca_pixels_per_image: int = 64
    #: Read the pretraining and downstream datasets once and keep them in memory (sample worlds only).
    cache_data: bool = False

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


_CROMSS_FULL = CromSSConfig(
    # Sec. IV-A: Adam 5e-3, batch 512 (4 GPUs x 128), 200 epochs, ReduceLROnPlateau (patience 30, x0.5).
    epochs=200, batch_size=512, optimizer="adam", lr=5e-3, lr_schedule="plateau", num_workers=8,
    checkpoint_every=1000, log_every=50)
register_chapter(
    "cromss", 5, "CromSS: cross-modal pretraining with noisy labels", "05_cromss.ipynb",
    full=_CROMSS_FULL,
    small=dataclasses.replace(
        _CROMSS_FULL, world_size="small", encoder="resnet18", encoder_depth=4, decoder_channels=(64, 32, 16, 8),
        crop_size=64, epochs=12, batch_size=16, lr=1e-3, rampup_epochs=5.0, plateau_patience=3, num_workers=0,
        checkpoint_every=0, log_every=20, downstream_decoder_channels=64, downstream_epochs=3,
        downstream_batch_size=8, downstream_seeds=1, cache_data=True),
    tiny=dataclasses.replace(
        _CROMSS_FULL, world_size="tiny", encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8),
        crop_size=32, epochs=2, batch_size=4, max_steps_per_epoch=2, lr=1e-3, rampup_epochs=1.0,
        plateau_patience=1, num_workers=0, checkpoint_every=0, log_every=1, downstream_decoder_channels=32,
        downstream_epochs=1, downstream_batch_size=4, downstream_seeds=1, pca_pixels_per_image=16),
)
