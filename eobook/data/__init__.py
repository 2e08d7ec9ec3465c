"""Datasets of the five papers, read in their native formats, plus the synthetic sample world.

Readers return dicts of tensors; see each class for keys, shapes and normalisation.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bands import (BEN19_CLASSES, BEN43_CLASSES, DFC_CLASSES, DW_CLASSES, EUROSAT_CLASSES, FMOW_CLASSES,
                    GEOBENCH_TASKS, IGNORE_INDEX, MMEARTH_S2_BANDS, MODALITY_BANDS, OSM_CLASSES, S2_L1C_BANDS,
                    S2_L2A_BANDS, WORLDCOVER_CLASSES)
from .base import DATA_WARNINGS, DataError
from .bigearthnet import BigEarthNetMM
from .dfc2020 import DFC2020
from .eurosat import EuroSATMS
from .fmow import FMoWSentinel
from .geobench import GeoBench
from .mmearth import MMEarth
from .noldo import NoLDOS12
from .readers import FOLDERS, READERS
from .sen12ms import SEN12MS
from .ssl4eo import SSL4EOS12
from .world import ensure_sample_world

if TYPE_CHECKING:  # annotations only: the data layer does not need the config machinery at run time
    from ..config import ChapterConfig


def real_data_root() -> Path | None:
    """``$EOBOOK_REAL_DATA`` or ``<repo>/../shared/data/real`` when it exists, else None."""
    env = os.environ.get("EOBOOK_REAL_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
    return path if path.is_dir() else None


def dataset_root(cfg: ChapterConfig, name: str | None = None) -> Path:
    """Where a chapter reads its data: ``cfg.data_root`` (a folder holding the datasets under their names,
    like the sample world) or the synthetic sample world of ``cfg.world_size`` / ``cfg.world_seed``.

    With ``name`` (e.g. "BigEarthNet-MM") the dataset's own folder, which must exist.
    """
    root = Path(cfg.data_root) if cfg.data_root else ensure_sample_world(cfg.world_size, cfg.world_seed)
    if name is None:
        return root
    folder = root / name
    if not folder.exists():
        raise DataError(folder, f"no {name} dataset here (data_root holds the datasets under their names)")
    return folder


@functools.lru_cache(maxsize=16)
def _read_all(reader: str, root: str, kwargs: tuple) -> tuple[dict[str, Any], ...]:
    dataset = READERS[reader](root, **dict(kwargs))
    return tuple(dataset[i] for i in range(len(dataset)))


def read_into_memory(reader: str, root: str | os.PathLike, **kwargs: Any) -> list[dict[str, Any]]:
    """All samples of ``READERS[reader](root, **kwargs)``, read once per process and kept in memory.

    For the small sample worlds only (each GeoTIFF is decoded once instead of once per epoch and per
    evaluation); real datasets go through the readers or the packed store.
    """
    if reader not in READERS:
        raise ValueError(f"reader: expected one of {sorted(READERS)}, got {reader!r}")
    return list(_read_all(reader, str(root), tuple(sorted(kwargs.items()))))


def open_dataset(reader: str, root: str | os.PathLike, in_memory: bool = False, **kwargs: Any):
    """``READERS[reader](root, **kwargs)``, or with ``in_memory`` its samples via :func:`read_into_memory`
    (what the chapters' ``cache_data`` switches on for the sample worlds)."""
    if in_memory:
        return read_into_memory(reader, root, **kwargs)
    if reader not in READERS:
        raise ValueError(f"reader: expected one of {sorted(READERS)}, got {reader!r}")
    return READERS[reader](root, **kwargs)


#: Samples each dataset keeps in a smoke run (``cfg.smoke``): a handful, read from the real layout.
SMOKE_SAMPLES = 4


def smoke_subset(dataset, cfg: ChapterConfig):
    """``dataset``, or in a smoke run its first ``SMOKE_SAMPLES`` samples."""
    if not cfg.smoke or len(dataset) <= SMOKE_SAMPLES:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, range(SMOKE_SAMPLES))


def whole_dataset(dataset):
    """The reader under any views of ``dataset`` (``Subset``s of a smoke run or a label fraction, and wrappers
    that keep it as ``.dataset``): what the split holds, to count it beside what a run uses."""
    from torch.utils.data import Dataset, Subset

    while isinstance(dataset, Subset) or isinstance(getattr(dataset, "dataset", None), (Dataset, list)):
        dataset = dataset.dataset   # a cached split is a list of samples
    return dataset


def chapter_dataset(cfg: ChapterConfig, reader: str, folder: str, **kwargs: Any):
    """A chapter's dataset: ``READERS[reader]`` on ``dataset_root(cfg, folder)``, kept in memory when the
    chapter has ``cfg.cache_data`` set (the small sample worlds, read once per process); in a smoke run only
    its first few samples (read from disk, never cached)."""
    in_memory = cfg.cache_data and not cfg.smoke
    return smoke_subset(open_dataset(reader, dataset_root(cfg, folder), in_memory, **kwargs), cfg)


__all__ = ["SMOKE_SAMPLES", "chapter_dataset", "dataset_root", "smoke_subset", "whole_dataset", "open_dataset",
           "read_into_memory",
           "BEN19_CLASSES", "BEN43_CLASSES", "DFC_CLASSES", "DW_CLASSES", "EUROSAT_CLASSES", "FMOW_CLASSES",
           "GEOBENCH_TASKS", "IGNORE_INDEX", "MMEARTH_S2_BANDS", "MODALITY_BANDS", "OSM_CLASSES", "S2_L1C_BANDS",
           "S2_L2A_BANDS", "WORLDCOVER_CLASSES", "DATA_WARNINGS", "FOLDERS", "READERS", "DataError", "BigEarthNetMM",
           "DFC2020", "EuroSATMS", "FMoWSentinel", "GeoBench", "MMEarth", "NoLDOS12", "SEN12MS", "SSL4EOS12",
           "ensure_sample_world", "real_data_root"]
