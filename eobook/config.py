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

# --- Chapter 3: MultiMAE for EO --------------------------------------------------------------------

# --- Chapter 4: SoftCon ----------------------------------------------------------------------------

# --- Chapter 5: CromSS -----------------------------------------------------------------------------
