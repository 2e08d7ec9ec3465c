"""Chapters and their profiles: the typed config every chapter extends, profiles, the paper's values.

A chapter is a :class:`Chapter` record, defined in its paper's package (``eobook.methods.<paper>``): its
name, notebook, typed config class, its ``tiny`` (CI, about a minute on 2 CPU cores), ``small`` (a CPU
demonstration of at most about 15 minutes) and ``full`` (the paper's settings, GPUs) profiles, the paper's
value of every ``full`` field the paper fixes (:class:`Paper`) with the book's reason wherever ``full``
differs, and the builder of its pretraining. :mod:`eobook.chapters` lists the book's chapters in order.

A profile is a frozen dataclass. :meth:`Chapter.profile` resolves one by name, with keyword overrides that
replace fields by name; unknown names, wrong types and out-of-range values are refused with a message
naming the field. The profile's name is a field too, so it survives ``dataclasses.replace``.

Field docstrings (the ``#:`` comments) give units and the paper's symbols.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Generic, NamedTuple, TypeVar

from torch import nn
from torch.utils.data import Dataset

from .train import TrainConfig, TrainResult, fit
from .weights import AUTHORS_PREFIX, LoadReport, Released, released_name

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

    #: The profile these settings came from ("tiny", "small", "full"; "" when built by hand). Set by
    #: :meth:`Chapter.profile`, kept by ``dataclasses.replace``; not a parameter to override.
    profile: str = field(default="", compare=False)
    #: Bitwise-repeatable kernels (slower on GPU).
    deterministic: bool = False
    #: Folder holding the datasets under their names (BigEarthNet-MM/, SSL4EO-S12/, MMEarth/, GEO-Bench/,
    #: SEN12MS/, EuroSAT-MS/), each in its native format; "" means the embedded synthetic sample world.
    data_root: str = ""
    #: Which sample world to generate when ``data_root`` is "": "tiny" or "small".
    world_size: str = "tiny"
    #: Seed of the sample world.
    world_seed: int = 0
    #: Read each dataset once and keep it in memory (the sample worlds; real datasets do not fit).
    cache_data: bool = False
    #: Random-init baselines: networks seeded ``seed``, ``seed + 1``, ...; the "random init" row is their
    #: mean and their spread is shown (0: no random-init baseline).
    random_init_seeds: int = 1
    #: Where the evaluated encoder comes from: "pretrain" (this chapter's pretraining) or "authors:<name>", a
    #: file the paper's authors released (``python -m eobook weights list``), loaded instead of pretraining and
    #: evaluated with this book's protocol; it sets the model-shape fields it needs.
    init: str = "pretrain"

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "batch_size", "grad_accum", "keep_checkpoints", "plateau_patience")
        check_non_negative(self, "seed", "world_seed", "num_workers", "max_steps_per_epoch", "lr", "min_lr",
                           "warmup_epochs", "weight_decay", "grad_clip", "checkpoint_every", "log_every",
                           "random_init_seeds")
        check_range(self, "plateau_factor", 0.0, 1.0, low_open=True, high_open=True)
        check_choice(self, "progress", ("auto", "on", "off"))
        check_choice(self, "optimizer", ("adamw", "adam", "sgd"))
        check_choice(self, "lr_schedule", ("cosine", "constant", "plateau"))
        check_choice(self, "amp", ("auto", "off", "bf16", "fp16"))
        check_choice(self, "world_size", ("tiny", "small"))
        if self.init != "pretrain" and not released_name(self.init):
            raise ConfigError(f"init: expected 'pretrain' or '{AUTHORS_PREFIX}<name>' (python -m eobook weights list), "
                              f"got {self.init!r}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs: expected at most epochs={self.epochs}, got {self.warmup_epochs}")

    @property
    def random_init_seed_list(self) -> list[int]:
        """The seeds of the random-init baselines: ``seed``, ``seed + 1``, ..."""
        return [self.seed + i for i in range(self.random_init_seeds)]


Config = TypeVar("Config", bound=ChapterConfig)


# --------------------------------------------------------------------------------------------------
# Validation helpers for __post_init__ of chapter configs
# --------------------------------------------------------------------------------------------------
def check_positive(cfg: ChapterConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ConfigError(f"{name}: expected a value > 0, got {value!r}")


def check_non_negative(cfg: ChapterConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise ConfigError(f"{name}: expected a value >= 0, got {value!r}")


def check_range(cfg: ChapterConfig, name: str, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> None:
    """Refuse ``getattr(cfg, name)`` outside [low, high] (open ends where asked)."""
    value = getattr(cfg, name)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{name}: expected a value in {interval}, got {value!r}")


def check_choice(cfg: ChapterConfig, name: str, choices: tuple) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {list(choices)}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# The paper's values and the book's deviations
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Paper:
    """The value a paper (or its authors' code) fixes for a ``full`` field, and where it says so."""

    value: Any
    source: str


def deviation_rows(full: ChapterConfig, paper: dict[str, Paper], deviations: dict[str, str]) -> list[dict[str, Any]]:
    """One row per field where ``full`` differs from the paper, or whose value is the book's choice:
    ``{"field", "paper", "source", "full", "reason"}`` (``paper`` is None where the paper gives no value)."""
    names = [f.name for f in fields(full)]
    rows = []
    for name in names:
        if name not in paper and name not in deviations:
            continue
        recorded = paper.get(name)
        value = getattr(full, name)
        if recorded is not None and _same(value, recorded.value) and name not in deviations:
            continue
        rows.append({"field": name, "paper": None if recorded is None else recorded.value,
                     "source": "" if recorded is None else recorded.source, "full": value,
                     "reason": deviations.get(name, "")})
    return rows


def _show(value: Any) -> str:
    """A value as the Deviations table prints it ("-" where the paper gives none)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-12 * max(1, abs(b))
    return a == b


# --------------------------------------------------------------------------------------------------
# Chapters
# --------------------------------------------------------------------------------------------------
class Pretraining(NamedTuple):
    """What a chapter hands the loop: the pretraining module, its dataset and collate function, and the
    ``meta`` (chapter and model-shape fields) that identifies its checkpoints."""

    module: nn.Module
    dataset: Dataset
    collate_fn: Callable | None
    meta: dict[str, Any]


@dataclass(frozen=True)
class Chapter(Generic[Config]):
    """One chapter of the book: everything the CLI, the notebooks and the loop need to know about it.

    Args:
        name: the chapter's id (``dino_mm``), as ``python -m eobook list`` prints it.
        number: its place in the book.
        title: the paper's title, shortened.
        notebook: file name under ``notebooks/``.
        config: the chapter's config class (a :class:`ChapterConfig`).
        profiles: ``tiny``, ``small`` and ``full``.
        build_pretraining: ``cfg -> Pretraining`` (module, dataset, collate_fn, meta).
        paper: the paper's value of each ``full`` field it fixes.
        deviations: field -> why ``full`` differs from the paper (or why its value is the book's choice).
        claim: the paper's claim in one line (the book's overview).
        showcase: the figure (``figures/<showcase>.png`` of a run) that stands for the chapter in the overview.
        small_limits: where the ``small`` profile cannot show the paper's claim, why, in one sentence (the
            overview prints it beside the seeds' verdicts; the chapter gives the evidence); "" where it can.
        released: the weights the paper's authors published (``init="authors:<name>"``).
        load_released: ``(pretraining module, entry, checkpoint) -> LoadReport``: puts a released file into
            the module that ``build_pretraining`` makes from a profile with the entry's fields.
    """

    name: str
    number: int
    title: str
    notebook: str
    config: type[Config]
    profiles: dict[str, Config]
    build_pretraining: Callable[[Config], Pretraining]
    paper: dict[str, Paper] = field(default_factory=dict)
    deviations: dict[str, str] = field(default_factory=dict)
    claim: str = ""
    showcase: str = ""
    small_limits: str = ""
    released: tuple[Released, ...] = ()
    load_released: Callable[[nn.Module, Released, Any], LoadReport] | None = None

    def __post_init__(self) -> None:
        missing = [p for p in PROFILE_NAMES if p not in self.profiles]
        if missing:
            raise ConfigError(f"chapter {self.name!r}: missing profiles {missing}")
        for name, cfg in self.profiles.items():
            if not isinstance(cfg, self.config):
                raise ConfigError(f"chapter {self.name!r}: profile {name!r} is a {type(cfg).__name__}, "
                                  f"expected {self.config.__name__}")
            object.__setattr__(self, "profiles", {**self.profiles, name: dataclasses.replace(cfg, profile=name)})
        unknown = sorted((set(self.paper) | set(self.deviations)) - {f.name for f in fields(self.config)})
        if unknown:
            raise ConfigError(f"chapter {self.name!r}: paper values or deviations for unknown fields {unknown}")
        for entry in self.released:
            if entry.chapter != self.name or sorted(set(entry.fields) - {f.name for f in fields(self.config)}):
                raise ConfigError(f"chapter {self.name!r}: released weights {entry.name!r} belong to "
                                  f"{entry.chapter!r} or set unknown fields {sorted(entry.fields)}")
        if self.released and self.load_released is None:
            raise ConfigError(f"chapter {self.name!r}: released weights without load_released")

    def profile(self, name: str = "tiny", **overrides: Any) -> Config:
        """Profile ``name`` with ``overrides`` applied by field name (values may be strings from a CLI).

        ``init="authors:<name>"`` also applies the released entry's fields (model shape, input bands); an
        override that contradicts one of them is refused, naming it."""
        if name not in self.profiles:
            raise ConfigError(f"unknown profile {name!r} for chapter {self.name!r}; valid profiles: {list(self.profiles)}")
        context = f"chapter {self.name!r}"
        cfg = apply_overrides(self.profiles[name], overrides, context=context)
        if cfg.init == "pretrain":
            return cfg
        entry = self.released_entry(cfg.init)
        clashes = [f"{k}={getattr(cfg, k)!r} (the weights need {v!r})" for k, v in entry.fields.items()
                   if k in overrides and not _same(getattr(cfg, k), v)]
        if clashes:
            raise ConfigError(f"{context}: init={cfg.init!r} contradicts {', '.join(clashes)}")
        return apply_overrides(cfg, dict(entry.fields), context=context)

    def released_entry(self, init: str) -> Released:
        """The released weights that ``init`` (``"authors:<name>"``) names, or a ConfigError listing this chapter's."""
        name = released_name(init)
        for entry in self.released:
            if entry.name == name:
                return entry
        names = [e.name for e in self.released]
        raise ConfigError(f"init: {init!r} names no released weights of chapter {self.name!r}; "
                          + (f"valid: {[AUTHORS_PREFIX + n for n in names]}" if names else
                             "its authors released none (python -m eobook weights list)"))

    def pretrain(self, cfg: Config, out_dir: str | os.PathLike | None, **fit_kwargs: Any) -> tuple[nn.Module, TrainResult]:
        """Build the chapter's pretraining and train it with :func:`eobook.train.fit`, checkpointing into
        ``<out_dir>/checkpoints`` (``None``: no checkpoints). The same in a notebook, under
        ``python -m eobook pretrain`` and under torchrun; a finished run is loaded, not trained again."""
        if not isinstance(cfg, self.config):
            raise ConfigError(f"chapter {self.name!r}: expected a {self.config.__name__}, got {type(cfg).__name__}")
        module, dataset, collate_fn, meta = self.build_pretraining(cfg)
        if cfg.init != "pretrain":
            return module, self._load_released(module, cfg)
        ckpt_dir = Path(out_dir) / "checkpoints" if out_dir is not None else None
        result = fit(module, dataset, cfg, checkpoint_dir=ckpt_dir, checkpoint_meta={"chapter": self.name, **meta},
                     collate_fn=collate_fn, desc=f"{self.name} pretraining", **fit_kwargs)
        return module, result

    def _load_released(self, module: nn.Module, cfg: Config) -> TrainResult:
        """Put the released weights ``cfg.init`` names into ``module`` instead of pretraining it; prints what was
        loaded. A smoke run (and any offline run) reads the local file only."""
        from . import weights

        start = time.perf_counter()
        entry = self.released_entry(cfg.init)
        path = weights.checkpoint_file(entry, allow_download=not cfg.smoke)
        report = self.load_released(module, entry, weights.read_checkpoint(path, entry.metadata_types))
        print(f"init={cfg.init}: {entry.encoder}; no pretraining in this run. {report.summary()}")
        return TrainResult(history=[], steps=0, resumed_from=None, seconds=time.perf_counter() - start,
                           samples_per_second=0.0)

    def deviation_rows(self) -> list[dict[str, Any]]:
        """Where the ``full`` profile departs from the paper, with the book's reasons (see :func:`deviation_rows`)."""
        return deviation_rows(self.profiles["full"], self.paper, self.deviations)

    def deviations_table(self):
        """:meth:`deviation_rows` as a table for the chapter's Deviations section (pandas DataFrame, one row a
        field: the paper's value and where it says so, the ``full`` profile's value, the book's reason)."""
        import pandas as pd

        rows = [{"field": r["field"], "paper": _show(r["paper"]), "where": r["source"], "full profile": _show(r["full"]),
                 "why": r["reason"]} for r in self.deviation_rows()]
        return pd.DataFrame(rows, columns=["field", "paper", "where", "full profile", "why"]).set_index("field")

    def unexplained_deviations(self) -> list[str]:
        """Fields whose ``full`` value differs from the paper's without a reason (must stay empty)."""
        return [row["field"] for row in self.deviation_rows() if not row["reason"]]


# --------------------------------------------------------------------------------------------------
# Overrides by name
# --------------------------------------------------------------------------------------------------
def apply_overrides(base: Config, overrides: dict[str, Any], *, context: str = "config") -> Config:
    """``base`` with ``overrides`` applied by field name; names, types and ranges checked."""
    valid = {f.name: f for f in fields(base) if f.name != "profile"}
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(f"{context}: unknown parameter(s) {unknown}; valid parameters: {sorted(valid)}")
    hints = typing.get_type_hints(type(base))
    coerced = {name: coerce(name, value, hints[name]) for name, value in overrides.items()}
    return dataclasses.replace(base, **coerced)


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
