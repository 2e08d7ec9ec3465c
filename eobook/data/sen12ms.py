"""SEN12MS / DFC2020 reader: Sentinel-1, Sentinel-2 and simplified-IGBP land cover, 256 px patches.

Schmitt, M., et al. (2019). SEN12MS - A curated dataset of georeferenced multi-spectral Sentinel-1/2
imagery for deep learning and data fusion. ISPRS Annals. Robinson, C., et al. (2021). Global land-cover
mapping with weak supervision: outcome of the 2020 IEEE GRSS Data Fusion Contest (DFC2020).

Layouts (both found by the ``s2`` file names)::

    DFC2020:  ROIs0000_<split>/s2_<split|0>/ROIs0000_<split>_s2_<scene>_p<n>.tif, s1_..., dfc_... (1..10)
    SEN12MS:  ROIs<id>_<season>/s2_<scene>/ROIs<id>_<season>_s2_<scene>_p<n>.tif, s1_..., lc_... (IGBP, band 1)

``split`` keeps the ROI folders whose name contains it (``validation``, ``test``); ``train`` means
DFC2020's ``validation`` set, which CromSS and Fus-MAE fine-tune on. S1 is float32 dB (VV, VH), S2 13
bands uint16 L1C. Normalisation: SSL4EO-S12 L1C statistics (S2) and S1 dB statistics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .bands import DFC_CLASSES, IGBP_TO_SIMPLIFIED, IGNORE_INDEX
from .base import DataError, EODataset, read_tif, require_size, to_tensors
from .store import open_packed
from .transforms import (SSL4EO_S1_MEAN, SSL4EO_S1_STD, SSL4EO_S2C_MEAN, SSL4EO_S2C_STD, normalize_s2_meanstd2,
                         standardize)

SPLIT_FOLDER = {"train": "validation", "val": "validation", "validation": "validation", "test": "test"}
_IGBP_LUT = np.full(256, 0, np.int64)
for _igbp, _simple in IGBP_TO_SIMPLIFIED.items():
    _IGBP_LUT[_igbp] = _simple


def partner(s2_path: Path, kind: str) -> Path:
    """The ``s1``/``dfc``/``lc`` file of the same patch as an ``s2`` file."""
    folder = s2_path.parent.name.replace("s2_", f"{kind}_", 1)
    return s2_path.parent.parent / folder / s2_path.name.replace("_s2_", f"_{kind}_")


def scene_label(mask: np.ndarray, n_classes: int) -> tuple[int, np.ndarray]:
    """Majority class of a mask (-1 if unlabelled) and its class fractions [n_classes]."""
    valid = mask[mask >= 0]
    fractions = np.bincount(valid, minlength=n_classes)[:n_classes] / max(valid.size, 1)
    return (int(fractions.argmax()) if valid.size else IGNORE_INDEX), fractions.astype(np.float32)


class SEN12MS(EODataset):
    """SEN12MS / DFC2020 patches as ``{"s1", "s2", "label", "label_scene", "label_multi", "id"}``.

    Sample:
        s1: float32 [2, H, W] (VV, VH) dB. s2: float32 [13, H, W].
        label: int64 [H, W], simplified IGBP classes 0..9 (``DFC_CLASSES``; file value - 1), -1 = unlabelled.
        label_scene: int64, the majority class (single-label scene classification, as in Fus-MAE's
            SEN12MS transfer). label_multi: float32 [10], classes covering >= 10% of the patch.
    """

    def __init__(self, root, split: str | None = None, normalize: bool = True, size: int | None = None,
                 on_error: str = "raise"):
        if split is not None and split not in SPLIT_FOLDER:
            raise ValueError(f"split: expected one of {tuple(SPLIT_FOLDER)} or None, got {split!r}")
        self.root, self.split, self.normalize, self.size = Path(root), split, normalize, size
        store = open_packed(self.root, type(self).__name__, SPLIT_FOLDER[split] if split else None)
        super().__init__(on_error, store)
        if store is not None:
            self.files = store.ids
            return
        pattern = f"ROIs*{SPLIT_FOLDER[split]}*/s2_*/*_s2_*.tif" if split else "ROIs*/s2_*/*_s2_*.tif"
        self.files = sorted(str(p.relative_to(self.root)) for p in self.root.glob(pattern))
        if not self.files:
            raise DataError(self.root, f"no S2 patches matching {pattern}")

    def __len__(self) -> int:
        return len(self.files)

    def raw_sample(self, index: int) -> dict[str, Any]:
        s2_path = self.root / self.files[index]
        s2 = read_tif(s2_path, dtypes=("uint16", "int16"), bands=13).astype(np.float32)
        require_size(s2_path, s2, self.size)
        s1_path = partner(s2_path, "s1")
        s1 = read_tif(s1_path, dtypes=("float32",), bands=2)
        dfc_path, lc_path = partner(s2_path, "dfc"), partner(s2_path, "lc")
        if dfc_path.is_file():
            label = read_tif(dfc_path, dtypes=("uint8", "uint16"), nodata_check=False)[0].astype(np.int64)
            if label.max() > len(DFC_CLASSES):
                raise DataError(dfc_path, f"label value {label.max()} outside the simplified IGBP 1..10")
        else:
            igbp = read_tif(lc_path, dtypes=("uint8", "uint16"), nodata_check=False)[0]
            if igbp.max() > 17:
                raise DataError(lc_path, f"IGBP value {igbp.max()} outside 1..17")
            label = _IGBP_LUT[igbp]
        for path, array in ((s1_path, s1), (dfc_path if dfc_path.is_file() else lc_path, label)):
            if array.shape[-2:] != s2.shape[-2:]:
                raise DataError(path, f"size {array.shape[-2:]}, its S2 patch is {s2.shape[-2:]}")
        return {"s2": s2, "s1": s1, "label": (label - 1).astype(np.int64), "id": self.files[index]}

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        sample = dict(raw)
        sample["label_scene"], fractions = scene_label(raw["label"], len(DFC_CLASSES))
        sample["label_multi"] = (fractions >= 0.1).astype(np.float32)
        if self.normalize:
            sample["s2"] = normalize_s2_meanstd2(raw["s2"], SSL4EO_S2C_MEAN, SSL4EO_S2C_STD)
            sample["s1"] = standardize(raw["s1"], SSL4EO_S1_MEAN, SSL4EO_S1_STD)
        return to_tensors(sample)
