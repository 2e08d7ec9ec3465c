"""EuroSAT-MS reader: 13-band Sentinel-2 L1C tifs, 64 px, 10 land-use classes.

Helber, P., et al. (2019). EuroSAT: A novel dataset and deep learning benchmark for land use and land
cover classification. IEEE JSTARS.

Layout: ``<root>/<ClassName>/<ClassName>_<n>.tif`` (13 bands, uint16), optionally with split lists
``eurosat-{train,val,test}.txt`` (one file name per line, as torchgeo ships them; ``.jpg`` names are
accepted for ``.tif``). Without lists, a fixed 60/20/20 split by file-name hash is used.
Normalisation: SSL4EO-S12 L1C statistics, mean +/- 2 std to [0, 1].
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .bands import EUROSAT_CLASSES
from .base import DataError, EODataset, check_split, read_tif, require_size, to_tensors
from .store import open_packed
from .transforms import SSL4EO_S2C_MEAN, SSL4EO_S2C_STD, normalize_s2_meanstd2

SPLITS = ("train", "val", "test")


def hash_split(name: str) -> str:
    """Deterministic 60/20/20 split of a file name (stable across machines and Python runs)."""
    bucket = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10
    return "train" if bucket < 6 else "val" if bucket < 8 else "test"


class EuroSATMS(EODataset):
    """EuroSAT-MS as ``{"s2": float32 [13, H, W], "label": int64 (index in EUROSAT_CLASSES), "id"}``."""

    label_kind, classes = "scene", EUROSAT_CLASSES
    LAYOUT = "<ClassName>/<ClassName>_<n>.tif folders of the 10 EuroSAT classes (optional eurosat-<split>.txt lists)"

    def __init__(self, root, split: str | None = "train", normalize: bool = True, size: int | None = None,
                 on_error: str = "raise"):
        self.root, self.split, self.normalize, self.size = Path(root), check_split(split, SPLITS), normalize, size
        store = open_packed(self.root, type(self).__name__, split)
        super().__init__(on_error, store)
        if store is not None:
            self.files = store.ids
            return
        files = sorted(f"{c}/{p.name}" for c in EUROSAT_CLASSES for p in (self.root / c).glob("*.tif"))
        if not files:
            raise DataError(self.root, f"no <class>/*.tif files for the classes {EUROSAT_CLASSES}")
        self.files = [f for f in files if split is None or f in self._split_names(split)]

    def _split_names(self, split: str) -> set[str]:
        if not hasattr(self, "_names"):
            listing = self.root / f"eurosat-{split}.txt"
            if listing.is_file():
                stems = {Path(line.strip()).stem for line in listing.read_text().splitlines() if line.strip()}
                self._names = {f"{n.split('_')[0]}/{n}.tif" for n in stems}
            else:
                self._names = {f"{c}/{p.name}" for c in EUROSAT_CLASSES for p in (self.root / c).glob("*.tif")
                               if hash_split(p.name) == split}
        return self._names

    def __len__(self) -> int:
        return len(self.files)

    def raw_sample(self, index: int) -> dict[str, Any]:
        path = self.root / self.files[index]
        s2 = read_tif(path, dtypes=("uint16", "int16"), bands=13).astype(np.float32)
        require_size(path, s2, self.size)
        class_name = self.files[index].split("/")[0]
        return {"s2": s2, "label": np.int64(EUROSAT_CLASSES.index(class_name)), "id": self.files[index]}

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        sample = dict(raw, label=np.asarray(raw["label"], np.int64))
        if self.normalize:
            sample["s2"] = normalize_s2_meanstd2(raw["s2"], SSL4EO_S2C_MEAN, SSL4EO_S2C_STD)
        return to_tensors(sample)
