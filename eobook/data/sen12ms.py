"""SEN12MS reader: Sentinel-1, Sentinel-2 and MODIS land cover triplets, 256 px patches, four seasons.

Schmitt, M., et al. (2019). SEN12MS - A curated dataset of georeferenced multi-spectral Sentinel-1/2
imagery for deep learning and data fusion. ISPRS Annals. Schmitt, M., & Wu, Y.-L. (2021). Remote sensing
image classification with the SEN12MS dataset. ISPRS Annals (the scene-classification benchmark).

Layout, as the 12 archives ``ROIs<id>_<season>_{s1,s2,lc}.tar.gz`` unpack, plus the benchmark's split lists
(github.com/schmitt-muc/SEN12MS ``splits/``, one S2 file name a line, CRLF line ends)::

    train_list.txt, test_list.txt
    ROIs1158_spring/ ROIs1868_summer/ ROIs1970_fall/ ROIs2017_winter/
        s1_<scene>/ROIs1158_spring_s1_<scene>_p<n>.tif   float32, 2 bands: VV, VH (dB)
        s2_<scene>/ROIs1158_spring_s2_<scene>_p<n>.tif   uint16, 13 bands: B1..B12 with B8A (L1C)
        lc_<scene>/ROIs1158_spring_lc_<scene>_p<n>.tif   4 bands: IGBP, LCCS LC, LCCS LU, LCCS SH

``split="train"`` reads the 162,555 patches of ``train_list.txt``, ``"test"`` the 18,106 of ``test_list.txt``
(held-out scenes), None every S2 patch of the season folders. The benchmark drops one patch whose S1 holds
NaN (``ROIs1868_summer_s2_146_p202``, already absent from the published ``train_list.txt``); the reader drops
it too when a list names it, with a warning.

Labels, as the benchmark (``classification/dataset.py``) derives them: band 1 of the ``lc`` patch holds the
full IGBP classes 1..17, simplified to 10 classes (``DFC_CLASSES``): IGBP 1-5 forest, 6-7 shrubland,
8-9 savanna, 10 grassland, 11 wetlands, 12 + 14 croplands, 13 urban / built-up, 15 snow / ice, 16 barren,
17 water (``IGBP_TO_SIMPLIFIED``). The scene label is the argmax of the patch's simplified class fractions
(first class on ties, as ``np.argmax``); the multi-label marks classes covering at least 10% (the
benchmark's threshold 0.1). The benchmark reads those fractions from ``IGBP_probability_labels.pkl``
computed by the dataset's authors; the reader computes them from the ``lc`` patch itself and never reads
a pickle. DFC2020 (``ROIs0000_validation`` / ``ROIs0000_test``) has its own layout and reader,
:class:`~eobook.data.DFC2020`.

Normalisation: SSL4EO-S12 L1C statistics (S2, mean +/- 2 std to [0, 1]) and S1 dB statistics.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .bands import DFC_CLASSES, IGBP_TO_SIMPLIFIED, IGNORE_INDEX
from .base import DataError, EODataset, as_float32, check_split, read_tif, require_size, to_tensors, warn_data
from .store import open_packed
from .transforms import (SSL4EO_S1_MEAN, SSL4EO_S1_STD, SSL4EO_S2C_MEAN, SSL4EO_S2C_STD, normalize_s2_meanstd2,
                         standardize)

SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")
SPLITS = ("train", "test")
SPLIT_LIST = "{split}_list.txt"
#: The patch the benchmark drops: its S1 holds NaN (README of github.com/schmitt-muc/SEN12MS).
BROKEN_PATCHES = ("ROIs1868_summer_s2_146_p202.tif",)
MULTI_LABEL_THRESHOLD = 0.1
#: ``ROIs<id>_<season>_s2_<scene>_p<n>.tif``
S2_NAME = re.compile(r"^(ROIs\d{4}_[a-z]+)_s2_(\d+)_p(\d+)\.tif$")
S1_DTYPES, S2_DTYPES, LABEL_DTYPES = ("float32", "float64"), ("uint16", "int16"), ("uint8", "uint16", "int16")
_IGBP_LUT = np.zeros(256, np.int64)  # IGBP value -> simplified value 1..10; 0 (no value) stays 0
for _igbp, _simple in IGBP_TO_SIMPLIFIED.items():
    _IGBP_LUT[_igbp] = _simple


def partner(s2_path: Path, kind: str) -> Path:
    """The ``s1`` / ``lc`` / ``dfc`` file of the same patch as an ``s2`` file (folder and name)."""
    folder = s2_path.parent.name.replace("s2_", f"{kind}_", 1)
    return s2_path.parent.parent / folder / s2_path.name.replace("_s2_", f"_{kind}_", 1)


def scene_label(mask: np.ndarray, n_classes: int) -> tuple[int, np.ndarray]:
    """Majority class of a mask (``IGNORE_INDEX`` if nothing is labelled) and its class fractions [n_classes]."""
    valid = mask[mask >= 0]
    fractions = np.bincount(valid, minlength=n_classes)[:n_classes] / max(valid.size, 1)
    return (int(fractions.argmax()) if valid.size else IGNORE_INDEX), fractions.astype(np.float32)


def read_s1_s2(s2_path: Path, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A patch's S2 [13, H, W] (float32 DN) and S1 [2, H, W] (dB), checked to share their size."""
    s2 = read_tif(s2_path, dtypes=S2_DTYPES, bands=13).astype(np.float32)
    require_size(s2_path, s2, size)
    s1_path = partner(s2_path, "s1")
    s1 = as_float32(s1_path, read_tif(s1_path, dtypes=S1_DTYPES, bands=2))
    check_same_size(s1_path, s1, s2)
    return s2, s1


def check_same_size(path: Path, array: np.ndarray, s2: np.ndarray) -> None:
    if array.shape[-2:] != s2.shape[-2:]:
        raise DataError(path, f"size {array.shape[-2]}x{array.shape[-1]}, its S2 patch is {s2.shape[-2]}x{s2.shape[-1]}")


class _SceneLabels(EODataset):
    """What SEN12MS and DFC2020 share: the sample's label keys and normalisation."""

    classes = DFC_CLASSES

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        sample = dict(raw)
        sample["label_scene"], fractions = scene_label(raw["label"], len(DFC_CLASSES))
        sample["label_multi"] = (fractions >= MULTI_LABEL_THRESHOLD).astype(np.float32)
        if self.normalize:
            sample["s2"] = normalize_s2_meanstd2(raw["s2"], SSL4EO_S2C_MEAN, SSL4EO_S2C_STD)
            sample["s1"] = standardize(raw["s1"], SSL4EO_S1_MEAN, SSL4EO_S1_STD)
        return to_tensors(sample)

    def __len__(self) -> int:
        return len(self.files)


class SEN12MS(_SceneLabels):
    """SEN12MS patches as ``{"s1", "s2", "label", "label_scene", "label_multi", "id"}``.

    Sample:
        s1: float32 [2, H, W] (VV, VH) dB. s2: float32 [13, H, W] (L1C, ``S2_L1C_BANDS``); H = W = 256.
        label: int64 [H, W], simplified IGBP classes 0..9 (``DFC_CLASSES``), -1 where band 1 holds no class.
        label_scene: int64, the scene label of the classification benchmark (argmax of the class fractions).
        label_multi: float32 [10], classes covering >= 10% of the patch (the benchmark's multi-label).
        id: the S2 file name.

    Args:
        root: the SEN12MS folder (season folders and split lists) or a packed store.
        split: ``train``, ``test`` (the benchmark's lists) or None (every patch of the season folders).
        normalize, size, on_error: as in :class:`~eobook.data.BigEarthNetMM`.
    """

    label_key, label_kind = "label_scene", "scene"
    LAYOUT = "train_list.txt / test_list.txt and ROIs<id>_<season>/ folders with s1_*, s2_*, lc_* patch folders"

    def __init__(self, root, split: str | None = None, normalize: bool = True, size: int | None = None,
                 on_error: str = "raise"):
        self.root, self.split, self.normalize, self.size = Path(root), check_split(split, SPLITS), normalize, size
        store = open_packed(self.root, type(self).__name__, split)
        super().__init__(on_error, store)
        self.dropped: list[str] = []
        if store is not None:
            self.files = store.ids
            return
        seasons = sorted(p.name for p in self.root.glob("ROIs*_*") if p.is_dir() and not p.name.startswith("ROIs0000")
                         and S2_NAME.match(p.name + "_s2_0_p0.tif"))
        if not seasons:
            raise DataError(self.root, f"not the SEN12MS layout: expected {self.LAYOUT}")
        self.files = self._listed(split) if split else sorted(
            str(p.relative_to(self.root)) for s in seasons for p in (self.root / s).glob("s2_*/*_s2_*.tif"))
        if not self.files:
            raise DataError(self.root, "no S2 patches in the season folders")

    def _listed(self, split: str) -> list[str]:
        """The patches of a split list as paths relative to the root, refusing names of another form."""
        listing = self.root / SPLIT_LIST.format(split=split)
        if not listing.is_file():
            raise DataError(listing, f"missing split list (SEN12MS needs {SPLIT_LIST.format(split=split)}, one S2 file "
                                     "name a line, from github.com/schmitt-muc/SEN12MS splits/)")
        files = []
        for number, line in enumerate(listing.read_text().splitlines(), 1):
            name = line.strip()
            if not name:
                continue
            match = S2_NAME.match(name)
            if match is None:
                raise DataError(listing, f"line {number}: {name!r} is not an S2 patch name "
                                         "(ROIs<id>_<season>_s2_<scene>_p<n>.tif)")
            if name in BROKEN_PATCHES:
                self.dropped.append(name)
                warn_data(listing, f"dropped {name}: its S1 patch holds NaN (the benchmark drops it too)")
                continue
            files.append(f"{match[1]}/s2_{match[2]}/{name}")
        return files

    def raw_sample(self, index: int) -> dict[str, Any]:
        s2_path = self.root / self.files[index]
        s2, s1 = read_s1_s2(s2_path, self.size)
        lc_path = partner(s2_path, "lc")
        igbp = read_tif(lc_path, dtypes=LABEL_DTYPES, nodata_check=False)[0]  # band 1: IGBP
        check_same_size(lc_path, igbp, s2)
        if igbp.min() < 0 or igbp.max() > 17:
            bad = sorted(set(igbp[(igbp < 0) | (igbp > 17)].tolist()))[:5]
            raise DataError(lc_path, f"IGBP value(s) {bad} in band 1, expected 1..17")
        label = _IGBP_LUT[igbp.astype(np.int64)] - 1  # 0..9, -1 where the band holds 0
        return {"s2": s2, "s1": s1, "label": label, "id": Path(self.files[index]).name}
