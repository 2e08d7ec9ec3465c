"""BigEarthNet-MM reader: Sentinel-2 + Sentinel-1 patches with CORINE multi-labels.

Sumbul, G., et al. (2021). BigEarthNet-MM: A large-scale, multimodal, multilabel benchmark archive for
remote sensing image classification and retrieval. IEEE GRSM. Clasen, K. N., et al. (2024). reBEN:
Refined BigEarthNet dataset for remote sensing image analysis (BigEarthNet v2).

Two on-disk layouts, detected from ``root`` (or forced with ``layout``):

* ``v1``: ``BigEarthNet-v1.0/<S2 patch>/<S2 patch>_B01..B12,B8A.tif`` + ``_labels_metadata.json``
  (43 CORINE names) and ``BigEarthNet-S1-v1.0/<S1 patch>/<S1 patch>_VV.tif, _VH.tif`` + json whose
  ``corresponding_s2_patch`` pairs it with its S2 patch. Splits: ``{train,val,test}.csv`` in ``root``
  (first column the S2 patch name, an optional second column its S1 patch name).
  Snow/cloud lists: ``patches_with_seasonal_snow.csv``, ``patches_with_cloud_and_shadow.csv``.
  ``split_scheme="seco"`` reads instead the lists ``bigearthnet-{train,val,test}.txt`` (one S2 patch name a
  line) that DINO-MM's loader (github.com/zhu-xlab/DINO-MM ``datasets/BigEarthNet/bigearthnet_dataset_seco.py``)
  downloads from ``storage.googleapis.com/remote_sensing_representations/`` (the lists of Neumann et al.,
  2019, used by SeCo); DINO-MM then drops the snow and cloud/shadow patches (``remove_snow_cloud=True``).
  The paper's 311,667 / 103,944 / 118,065 could not be checked against the lists offline.
* ``v2`` (reBEN): ``BigEarthNet-S2/<tile>/<patch>/<patch>_Bxx.tif``, ``BigEarthNet-S1/<tile>/<patch>/...``
  and ``metadata.parquet`` (``patch_id``, ``labels`` as 19-class names, ``split``, ``s1_name``, and
  optionally ``contains_seasonal_snow`` / ``contains_cloud_or_shadow``).

Normalisation (``normalize=True``): S2 with BigEarthNet's per-band statistics, clipped to mean +/- 2 std
and scaled to [0, 1] (DINO-MM); S1 dB standardised with DINO-MM's statistics.
"""
from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bands import BEN19_CLASSES, BEN43_CLASSES, BEN43_TO_19, S1_BANDS, S2_BAND_GSD, S2_L2A_BANDS
from .base import DataError, EODataset, read_json, read_tif, require_size, resample_to, to_tensors
from .store import open_packed
from .transforms import (BEN_S2_MEAN, BEN_S2_STD, DINO_MM_S1_MEAN, DINO_MM_S1_STD, DeviceNormalization,
                         normalize_s2_meanstd2, standardize)

SPLITS = ("train", "val", "test")
#: Where a split's patch names come from: the official split csvs (v1) / metadata.parquet (v2), or the
#: SeCo lists that DINO-MM reads (v1 only).
SPLIT_SCHEMES = ("official", "seco")
SECO_LIST = "bigearthnet-{split}.txt"
SNOW_CLOUD_LISTS = ("patches_with_seasonal_snow.csv", "patches_with_cloud_and_shadow.csv")
_V2_SPLIT_NAME = {"train": "train", "val": "validation", "test": "test"}


def labels_to_multihot(names: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """43 CORINE names -> (multi-hot [43], multi-hot [19]) following the official 43 -> 19 mapping."""
    label43 = np.zeros(len(BEN43_CLASSES), np.float32)
    label19 = np.zeros(len(BEN19_CLASSES), np.float32)
    for name in names:
        if name not in BEN43_CLASSES:
            raise DataError(path, f"unknown label name {name!r} (not one of the 43 CORINE classes)")
        i43 = BEN43_CLASSES.index(name)
        label43[i43] = 1
        if i43 in BEN43_TO_19:
            label19[BEN43_TO_19[i43]] = 1
    return label43, label19


def names19_to_multihot(names, path: Path) -> np.ndarray:
    label = np.zeros(len(BEN19_CLASSES), np.float32)
    for name in names:
        if name not in BEN19_CLASSES:
            raise DataError(path, f"unknown label name {name!r} (not one of the 19 BigEarthNet classes)")
        label[BEN19_CLASSES.index(name)] = 1
    return label


@functools.lru_cache(maxsize=4)
def s1_pairs(s1_dir: Path) -> dict[str, str]:
    """{S2 patch: S1 patch} from the S1 folders' jsons (``corresponding_s2_patch``), read once per process:
    the real archive has 590,326 of them, and a chapter opens several splits."""
    pairs = {}
    for folder in sorted(p for p in s1_dir.iterdir() if p.is_dir()) if s1_dir.is_dir() else []:
        meta = read_json(folder / f"{folder.name}_labels_metadata.json")
        pairs[meta["corresponding_s2_patch"]] = folder.name
    return pairs


class BigEarthNetMM(EODataset):
    """BigEarthNet-MM patches as ``{"s2", "s1", "label", "label43", "id"}``.

    Sample:
        s2: float32 [12, H, W], bands ``S2_L2A_BANDS`` (B01..B08, B8A, B09, B11, B12); 20 m and 60 m bands
            bicubically resampled to the 10 m grid (H = W = 120 for the real data).
        s1: float32 [2, H, W], (VV, VH) in dB.
        label: float32 [19] multi-hot (official 19-class nomenclature, ``BEN19_CLASSES``).
        label43: float32 [43] multi-hot CORINE classes (v1 only).
        id: the S2 patch name.

    Args:
        root: folder holding the v1 or v2 layout, or a packed store made by ``eobook data prepare``.
        split: ``train``, ``val``, ``test`` or None (every patch found).
        split_scheme: ``official`` (``{split}.csv`` / reBEN's split column) or ``seco`` (DINO-MM's lists
            ``bigearthnet-{split}.txt``, v1 only).
        layout: ``v1``, ``v2`` or None (detect).
        normalize: apply the documented normalisation; False returns DN / dB values.
        remove_snow_cloud: drop the patches of the official snow and cloud/shadow lists.
        size: require this patch size (None: take it from the files, checked across bands).
        on_error: ``raise`` or ``skip`` (see :class:`~eobook.data.base.EODataset`).
    """

    label_kind, classes = "multilabel", BEN19_CLASSES
    BATCHED = True  # to_sample's normalisation broadcasts over a leading batch axis
    PACKED_DTYPES = {"s2": "int16"}  # reflectances stored in whole DN (see eobook.data.store)
    LAYOUT = ("BigEarthNet-v1.0/ and BigEarthNet-S1-v1.0/ patch folders with {train,val,test}.csv (v1), or "
              "BigEarthNet-S2/, BigEarthNet-S1/ and metadata.parquet (v2, reBEN)")

    def __init__(self, root, split: str | None = None, layout: str | None = None, normalize: bool = True,
                 remove_snow_cloud: bool = False, size: int | None = None, on_error: str = "raise",
                 split_scheme: str = "official"):
        self.root = Path(root)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS} or None, got {split!r}")
        if split_scheme not in SPLIT_SCHEMES:
            raise ValueError(f"split_scheme: expected one of {SPLIT_SCHEMES}, got {split_scheme!r}")
        self.split_scheme = split_scheme
        self.split, self.normalize, self.size = split, normalize, size
        store = open_packed(self.root, type(self).__name__, split)
        super().__init__(on_error, store)
        if store is not None:
            self.layout = store.attrs["layout"]
            if remove_snow_cloud:
                self._drop_packed_snow_cloud(store)
            self.patches = store.ids
            return
        self.layout = layout or self._detect_layout()
        if split_scheme == "seco" and self.layout != "v1":
            raise DataError(self.root, "split_scheme='seco': the SeCo lists name BigEarthNet v1 patches; this is v2")
        index = self._index_v1() if self.layout == "v1" else self._index_v2()
        if remove_snow_cloud:
            index = self._without_snow_cloud(index)
        self.patches = [s2 for s2, _ in index]
        self.s1_of = dict(index)

    # ---------------------------------------------------------------------------------------- index
    def _detect_layout(self) -> str:
        if (self.root / "BigEarthNet-v1.0").is_dir():
            return "v1"
        if (self.root / "metadata.parquet").is_file():
            return "v2"
        raise DataError(self.root, "neither a BigEarthNet v1 folder (BigEarthNet-v1.0/) nor v2 (metadata.parquet)")

    def _index_v1(self) -> list[tuple[str, str]]:
        """(S2 name, S1 name) pairs of the split, paired by the split csv or by the S1 jsons."""
        s1_dir = self.root / "BigEarthNet-S1-v1.0"
        pairs = s1_pairs(s1_dir)
        if self.split is None:
            names = sorted(p.name for p in (self.root / "BigEarthNet-v1.0").iterdir() if p.is_dir())
            rows = [[n] for n in names]
        elif self.split_scheme == "seco":
            rows = self._read_csv(self.root / SECO_LIST.format(split=self.split))
        else:
            rows = self._read_csv(self.root / f"{self.split}.csv")
        index = []
        for row in rows:
            s1 = row[1] if len(row) > 1 else pairs.get(row[0])
            if s1 is None:
                raise DataError(s1_dir, f"no S1 patch pairs with S2 patch {row[0]}")
            index.append((row[0], s1))
        return index

    @staticmethod
    def _read_csv(path: Path) -> list[list[str]]:
        if not path.is_file():
            raise DataError(path, "missing split file")
        with path.open(newline="") as f:
            return [row for row in csv.reader(f) if row]

    def _metadata_v2(self):
        import pandas as pd

        path = self.root / "metadata.parquet"
        try:
            return pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several unrelated types for a broken file
            raise DataError(path, f"unreadable parquet ({err})") from None

    def _index_v2(self) -> list[tuple[str, str]]:
        meta = self._metadata_v2()
        if self.split is not None:
            meta = meta[meta["split"] == _V2_SPLIT_NAME[self.split]]
        self.labels_v2 = dict(zip(meta["patch_id"], meta["labels"]))
        self.v2_flags = meta.set_index("patch_id")
        return list(zip(meta["patch_id"], meta["s1_name"]))

    def snow_cloud_patches(self) -> set[str]:
        """S2 patch names on the official snow and cloud/shadow lists (v1 csvs, v2 metadata flags)."""
        if self.layout == "v2":
            flags = [c for c in ("contains_seasonal_snow", "contains_cloud_or_shadow") if c in self.v2_flags]
            return set(self.v2_flags.index[self.v2_flags[flags].any(axis=1)]) if flags else set()
        return {row[0] for name in SNOW_CLOUD_LISTS for row in self._read_csv(self.root / name)}

    def _without_snow_cloud(self, index):
        bad = self.snow_cloud_patches()
        return [(s2, s1) for s2, s1 in index if s2 not in bad]

    @staticmethod
    def _drop_packed_snow_cloud(store) -> None:
        """Keep the packed rows that are not on the snow/cloud lists the store recorded when it was packed."""
        if store.attrs.get("snow_cloud") is None:
            raise DataError(store.path, "remove_snow_cloud: this store was packed without the snow/cloud lists; "
                                        "re-pack it with `python -m eobook data prepare` from a folder that has them")
        bad = set(store.attrs["snow_cloud"])
        store.keep([i for i, patch in enumerate(store.ids) if patch not in bad])

    # ---------------------------------------------------------------------------------------- files
    def _s2_folder(self, name: str) -> Path:
        if self.layout == "v1":
            return self.root / "BigEarthNet-v1.0" / name
        return self.root / "BigEarthNet-S2" / name.rsplit("_", 2)[0] / name

    def _s1_folder(self, name: str) -> Path:
        if self.layout == "v1":
            return self.root / "BigEarthNet-S1-v1.0" / name
        return self.root / "BigEarthNet-S1" / name.rsplit("_", 3)[0] / name

    def __len__(self) -> int:
        return len(self.patches)

    def raw_sample(self, index: int) -> dict[str, Any]:
        name = self.patches[index]
        s2_dir, s1_dir = self._s2_folder(name), self._s1_folder(self.s1_of[name])
        ref = read_tif(s2_dir / f"{name}_B02.tif", dtypes=("uint16", "int16"), bands=1)
        require_size(s2_dir / f"{name}_B02.tif", ref, self.size)
        size = ref.shape[-1]
        s2 = []
        for band in S2_L2A_BANDS:  # [1, h, w] each, h = size * 10 / gsd
            path = s2_dir / f"{name}_{band}.tif"
            array = read_tif(path, dtypes=("uint16", "int16"), bands=1)
            if array.shape[-1] * S2_BAND_GSD[band] != size * 10:
                raise DataError(path, f"size {array.shape[-1]} at {S2_BAND_GSD[band]} m does not match "
                                      f"{size} px at 10 m")
            s2.append(resample_to(array, size, path))
        s1 = []
        for pol in S1_BANDS:
            path = s1_dir / f"{self.s1_of[name]}_{pol}.tif"
            array = read_tif(path, dtypes=("float32",), bands=1)
            if array.shape[-1] != size:
                raise DataError(path, f"size {array.shape[-1]}, its S2 patch has {size}")
            s1.append(array.astype(np.float32))
        raw = {"s2": np.concatenate(s2), "s1": np.concatenate(s1), "id": name}  # [12,H,W], [2,H,W]
        if self.layout == "v1":
            meta_path = s2_dir / f"{name}_labels_metadata.json"
            raw["label43"], raw["label"] = labels_to_multihot(read_json(meta_path).get("labels", []), meta_path)
        else:
            raw["label"] = names19_to_multihot(self.labels_v2[name], self.root / "metadata.parquet")
        return raw

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Tensors of a raw sample, or of stacked raw samples (:meth:`to_batch`): every step is per band and pixel."""
        sample = dict(raw)
        if self.normalize and not self.native:
            sample["s2"] = normalize_s2_meanstd2(raw["s2"], BEN_S2_MEAN, BEN_S2_STD)
            sample["s1"] = standardize(raw["s1"], DINO_MM_S1_MEAN, DINO_MM_S1_STD)
        return to_tensors(sample)

    to_batch = to_sample

    def device_normalization(self) -> DeviceNormalization:
        """``to_sample``'s normalisation of a native batch, on its device."""
        if not self.normalize:
            return DeviceNormalization(dtypes={"s2": torch.float32, "s1": torch.float32})
        return DeviceNormalization(meanstd2={"s2": (BEN_S2_MEAN, BEN_S2_STD)},
                                   zscore={"s1": (DINO_MM_S1_MEAN, DINO_MM_S1_STD)})
