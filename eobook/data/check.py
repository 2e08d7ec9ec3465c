"""``python -m eobook data check``: read every sample of a dataset's split as the chapters do and report.

:func:`check` builds the reader (its ``__getitem__`` with its default normalisation, ``on_error="raise"``), reads
every sample with a progress bar on stderr, counts the labels (samples per class for scene labels, multi-hot
counts for multi-labels, pixels per class for segmentation maps) and collects the failures, each a
:class:`~eobook.data.DataError` naming the file and what is wrong. A root in another layout is refused before
any reading with one line that says which layout it looks like and what the reader expects
(:func:`identify_layout`).
"""
from __future__ import annotations

import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bands import EUROSAT_CLASSES
from .base import DATA_WARNINGS, DataError, EODataset
from .readers import FOLDERS, READERS

#: Failures (and warnings) named in the report; the rest are counted.
SHOWN = 10
UNLABELLED = "(unlabelled)"


class LayoutError(DataError):
    """The root is not in the layout the reader expects (or does not exist)."""


# --------------------------------------------------------------------------------------------------
# Which layout a folder looks like
# --------------------------------------------------------------------------------------------------
def _dirs(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def _files(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_file()} if root.is_dir() else set()


def identify_layout(root: Path) -> tuple[str | None, str]:
    """(reader name, description) of the layout ``root`` looks like; (None, what it holds) when none fits."""
    root = Path(root)
    if not root.exists():
        return None, "nothing (no such file or folder)"
    if root.is_file():
        return ("MMEarth", "an MMEarth HDF5 file") if root.suffix == ".h5" else (None, f"a file ({root.name})")
    dirs, files = _dirs(root), _files(root)
    held = sorted(name for name in FOLDERS.values() if name in dirs)
    if len(held) >= 2 or ("world.json" in files and held):
        return None, f"a data root holding {', '.join(f'{n}/' for n in held)} (pass the dataset's own folder)"
    if dirs & {"ROIs0000_validation", "ROIs0000_test"}:
        return "DFC2020", "DFC2020 (ROIs0000_validation/, ROIs0000_test/)"
    if any(re.fullmatch(r"ROIs\d{4}_(spring|summer|fall|winter)", d) for d in dirs) or files & {"train_list.txt", "test_list.txt"}:
        return "SEN12MS", "SEN12MS (ROIs<id>_<season>/ folders or train_list.txt / test_list.txt)"
    if "BigEarthNet-v1.0" in dirs:
        return "BigEarthNetMM", "BigEarthNet v1 (BigEarthNet-v1.0/)"
    if "metadata.parquet" in files or "BigEarthNet-S2" in dirs:
        return "BigEarthNetMM", "BigEarthNet v2 / reBEN (metadata.parquet, BigEarthNet-S2/)"
    if dirs & {"s1", "s2a", "s2c"}:
        return "SSL4EOS12", f"SSL4EO-S12 ({', '.join(sorted(dirs & {'s1', 's2a', 's2c', 'dw'}))}/)"
    if any(f.endswith(".h5") for f in files):
        return "MMEarth", "MMEarth (an HDF5 file with its json files)"
    if "band_stats.json" in files or any(d.endswith("_v1.0") for d in dirs):
        return "GeoBench", "GEO-Bench (a task folder or {classification,segmentation}_v1.0/)"
    if len(dirs & set(EUROSAT_CLASSES)) >= 5:
        return "EuroSATMS", "EuroSAT-MS (class folders)"
    splits = {f"{t}_{s}" for t in ("dw", "osm") for s in ("train", "test")}
    if dirs & splits or any(_dirs(root / d) & splits for d in dirs):
        return "NoLDOS12", "NoLDO-S12 downstream ({dw,osm}_{train,test}/)"
    if "fmow-sentinel" in dirs or files & {"train.csv", "val.csv"}:
        return "FMoWSentinel", "fMoW-Sentinel (train.csv / val.csv, fmow-sentinel/)"
    listing = sorted(dirs)[:5] + sorted(files)[:5]
    return None, f"none of the known layouts (it holds {', '.join(listing) or 'nothing'})"


# --------------------------------------------------------------------------------------------------
# The reader of a check
# --------------------------------------------------------------------------------------------------
def _mmearth_file(root: Path) -> Path:
    if root.is_file() or not root.is_dir():
        return root
    h5 = sorted(root.glob("*.h5"))
    if len(h5) != 1:
        raise LayoutError(root, f"{len(h5)} HDF5 files here: pass the MMEarth .h5 file itself")
    return h5[0]


def reader_kwargs(dataset: str, root: Path, split: str | None, task: str | None) -> dict[str, Any]:
    """The reader arguments of a check: the split and task asked for, and every label the folder has."""
    kwargs: dict[str, Any] = {}
    if task is not None:
        if dataset not in ("GeoBench", "NoLDOS12"):
            raise ValueError(f"--task: {dataset} has no tasks (GeoBench and NoLDOS12 do)")
        kwargs["task"] = task
    if split is not None:
        if dataset == "SSL4EOS12":
            raise ValueError("--split: SSL4EO-S12 has no splits")
        kwargs["split"] = split
    if dataset == "SSL4EOS12":
        from .ssl4eo import MODALITIES, MULTILABEL_FILE

        kwargs.update(modalities=tuple(m for m in MODALITIES if (root / m).is_dir()) or ("s2c",), seasons="all",
                      dw_labels=(root / "dw").is_dir(), multilabels=(root / MULTILABEL_FILE).is_file())
    return kwargs


def open_reader(dataset: str, root: str | Path, split: str | None = None, task: str | None = None) -> EODataset:
    """``READERS[dataset]`` on ``root`` as a check reads it; a root in another layout raises :class:`LayoutError`."""
    if dataset not in READERS:
        raise ValueError(f"dataset: expected one of {sorted(READERS)}, got {dataset!r}")
    root = Path(root)
    cls = READERS[dataset]
    looks, description = identify_layout(root)
    if looks != dataset and not (dataset == "MMEarth" and looks is None and root.suffix == ".h5"):
        raise LayoutError(root, f"this looks like {description}; {dataset} needs {cls.LAYOUT}")
    if dataset == "MMEarth":
        root = _mmearth_file(root)
    try:
        return cls(root, **reader_kwargs(dataset, root, split, task))
    except DataError as err:  # the right kind of folder, but something the reader needs is missing or broken
        raise LayoutError(err.path, err.problem) from None


# --------------------------------------------------------------------------------------------------
# Counting labels
# --------------------------------------------------------------------------------------------------
def _names(classes: tuple[str, ...], n: int) -> list[str]:
    return list(classes) if len(classes) >= n else [str(i) for i in range(n)]


def count_labels(counts: Counter, label: Any, kind: str | None, classes: tuple[str, ...]) -> None:
    """Add one sample's label to ``counts``: its class (scene), its multi-hot classes or its pixels per class."""
    values = label.numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if kind is None:  # a reader that does not say: a scalar is a class, a float vector multi-hot, a map pixels
        kind = "scene" if values.ndim == 0 else "multilabel" if values.dtype.kind == "f" else "segmentation"
    if kind == "scene":
        value = int(values)
        counts[UNLABELLED if value < 0 else _names(classes, value + 1)[value]] += 1
    elif kind == "multilabel":
        hot = values.reshape(-1, values.shape[-1]).sum(0)
        for name, n in zip(_names(classes, len(hot)), hot.tolist()):
            counts[name] += int(n)
    else:
        flat = values.astype(np.int64).ravel()
        if (flat < 0).any():
            counts[UNLABELLED] += int((flat < 0).sum())
        bins = np.bincount(flat[flat >= 0])
        for name, n in zip(_names(classes, len(bins)), bins.tolist()):
            counts[name] += int(n)


# --------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------
def check(dataset: str, root: str | Path, split: str | None = None, task: str | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Read every sample of ``dataset``'s ``split`` under ``root``; return the report (see the module docstring).

    Keys: dataset, root, split, task (when given), samples, failed, classes ({name: count}), seconds,
    errors (up to 10 "file: problem" lines), warnings (their count) and warned (up to 10 lines).
    Raises :class:`LayoutError` for a root in another layout, before reading anything.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    DATA_WARNINGS.reset()
    reader = open_reader(dataset, root, split, task)
    counts: Counter = Counter({name: 0 for name in reader.classes})
    errors: list[str] = []
    failed = 0
    for index in tqdm(range(len(reader)), desc=f"check {dataset}", unit="sample", file=sys.stderr,
                      disable=not progress, dynamic_ncols=True):
        try:
            sample = reader[index]
        except DataError as err:
            failed += 1
            if len(errors) < SHOWN:
                errors.append(f"{err.path}: {err.problem}")
            continue
        except Exception as err:  # not a DataError: a reader bug or an unforeseen file; named, never hidden
            failed += 1
            if len(errors) < SHOWN:
                errors.append(f"{dataset} sample {index}: {type(err).__name__}: {err}")
            continue
        if reader.label_key is not None and reader.label_key in sample:
            count_labels(counts, sample[reader.label_key], reader.label_kind, reader.classes)
    read_split = split if split is not None else getattr(reader, "split", None)  # the reader's default
    report = {"dataset": dataset, "root": str(root), "split": read_split, "samples": len(reader), "failed": failed,
              "classes": dict(counts), "seconds": round(time.perf_counter() - start, 2), "errors": errors,
              "warnings": DATA_WARNINGS.count, "warned": [f"{p}: {problem}" for p, problem in DATA_WARNINGS.first]}
    if task is not None:
        report["task"] = task
    return report
