"""Datasets of the five papers, read in their native formats, plus the synthetic sample world.

Readers return dicts of tensors; see each class for keys, shapes and normalisation.
"""
from __future__ import annotations

import os
from pathlib import Path

from .bands import (BEN19_CLASSES, BEN43_CLASSES, DFC_CLASSES, DW_CLASSES, EUROSAT_CLASSES, IGNORE_INDEX,
                    MMEARTH_S2_BANDS, MODALITY_BANDS, S2_L1C_BANDS, S2_L2A_BANDS, WORLDCOVER_CLASSES)
from .base import DataError
from .bigearthnet import BigEarthNetMM
from .eurosat import EuroSATMS
from .geobench import GeoBench
from .mmearth import MMEarth
from .sen12ms import SEN12MS
from .ssl4eo import SSL4EOS12
from .world import ensure_sample_world

READERS = {cls.__name__: cls for cls in (BigEarthNetMM, SSL4EOS12, MMEarth, GeoBench, SEN12MS, EuroSATMS)}


def real_data_root() -> Path | None:
    """``$EOBOOK_REAL_DATA`` or ``<repo>/../shared/data/real`` when it exists, else None."""
    env = os.environ.get("EOBOOK_REAL_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
    return path if path.is_dir() else None


__all__ = ["BEN19_CLASSES", "BEN43_CLASSES", "DFC_CLASSES", "DW_CLASSES", "EUROSAT_CLASSES", "IGNORE_INDEX",
           "MMEARTH_S2_BANDS", "MODALITY_BANDS", "S2_L1C_BANDS", "S2_L2A_BANDS", "WORLDCOVER_CLASSES", "READERS",
           "DataError", "BigEarthNetMM", "EuroSATMS", "GeoBench", "MMEarth", "SEN12MS", "SSL4EOS12",
           "ensure_sample_world", "real_data_root"]
