"""fMoW-Sentinel reader: Sentinel-2 images of the 62 fMoW categories (MultiMAE-EO's Table 3 task).

Cong, Y., et al. (2022). SatMAE: Pre-training transformers for temporal and multi-spectral satellite
imagery. NeurIPS. Data: Stanford Digital Repository, purl.stanford.edu/vg497cb6002 (``train.csv``, ``val.csv``,
``fmow-sentinel.tar.gz``, 77.5 GB).

Layout (SatMAE's README, github.com/sustainlab-group/SatMAE; the csv columns as SatMAE's
``util/datasets.py`` ``SentinelIndividualImageDataset`` reads them)::

    train.csv, val.csv        columns category, location_id, image_id, timestamp (and others, e.g. an unnamed
                              index column); one row per image
    fmow-sentinel/<split>/<category>/<category>_<location_id>/<category>_<location_id>_<image_id>.tif
                              13 bands (S2 B1..B12 with B8A), images of varying size

The csv files ship without an ``image_path`` column (SatMAE's README: construct it as above); the reader
builds each path from the row. Labels: the index of ``category`` in ``FMOW_CLASSES`` (SatMAE's CATEGORIES
order); a category outside that table is an error naming the csv row. ``split="test"`` reads ``test.csv``
and ``fmow-sentinel/test/`` where a copy has them (the published release was not checked for a test csv).

Normalisation: SatMAE's fMoW-Sentinel statistics (``FMOW_S2_MEAN`` / ``FMOW_S2_STD``), mean +/- 2 std to
[0, 1] as its ``SentinelNormalize`` (which then casts to uint8). Images keep their native size unless
``resize_to`` is given (bicubic, all bands), since a batch needs one size.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bands import FMOW_CLASSES
from .base import DataError, EODataset, as_float32, read_tif, to_tensors
from .store import open_packed
from .transforms import FMOW_S2_MEAN, FMOW_S2_STD, normalize_s2_meanstd2

SPLITS = ("train", "val", "test")
IMAGE_FOLDER = "fmow-sentinel"
REQUIRED_COLUMNS = ("category", "location_id", "image_id")


def image_path(root: Path, split: str, category: str, location: str, image: str) -> Path:
    """``fmow-sentinel/<split>/<category>/<category>_<location>/<category>_<location>_<image>.tif``"""
    stem = f"{category}_{location}"
    return root / IMAGE_FOLDER / split / category / stem / f"{stem}_{image}.tif"


def _integer(value: str) -> str:
    """csv ids written by pandas may read '12.0': keep the integer."""
    value = value.strip()
    try:
        return str(int(float(value))) if value else value
    except ValueError:
        return value


class FMoWSentinel(EODataset):
    """fMoW-Sentinel images as ``{"s2", "label", "id", "timestamp"}``.

    Sample:
        s2: float32 [13, H, W] (``S2_L1C_BANDS`` order), H and W of the image (or ``resize_to``).
        label: int64, index in ``FMOW_CLASSES`` (62 classes).
        id: ``<category>_<location>_<image>``; timestamp: the csv's timestamp ("" when absent).

    Args:
        root: the folder holding ``train.csv``, ``val.csv`` and ``fmow-sentinel/``, or a packed store.
        split: ``train``, ``val`` or ``test``.
        resize_to: resample every image to this side (None: native size).
        normalize, on_error: as in :class:`~eobook.data.BigEarthNetMM`.
    """

    label_kind, classes = "scene", FMOW_CLASSES
    LAYOUT = "train.csv / val.csv and fmow-sentinel/<split>/<category>/<category>_<location>/ GeoTIFFs"

    def __init__(self, root, split: str = "train", resize_to: int | None = None, normalize: bool = True,
                 on_error: str = "raise"):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if resize_to is not None and resize_to < 1:
            raise ValueError(f"resize_to: expected a positive side in pixels or None, got {resize_to!r}")
        self.root, self.split, self.resize_to, self.normalize = Path(root), split, resize_to, normalize
        store = open_packed(self.root, type(self).__name__, split)
        super().__init__(on_error, store)
        if store is not None:
            self.rows = [{"id": i} for i in store.ids]
            return
        self.rows = self._read_rows(self.root / f"{split}.csv")

    def _read_rows(self, path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            raise DataError(path, f"missing split csv: fMoW-Sentinel needs {self.LAYOUT}")
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise DataError(path, f"no column(s) {missing} (has {reader.fieldnames})")
            rows = []
            for number, row in enumerate(reader, 2):  # line 1 is the header
                category = row["category"].strip()
                if category not in FMOW_CLASSES:
                    raise DataError(path, f"line {number}: category {category!r} is not one of the 62 fMoW classes")
                location, image = _integer(row["location_id"]), _integer(row["image_id"])
                rows.append({"path": image_path(self.root, self.split, category, location, image),
                             "label": FMOW_CLASSES.index(category), "id": f"{category}_{location}_{image}",
                             "timestamp": (row.get("timestamp") or "").strip()})
        if not rows:
            raise DataError(path, "no rows")
        return rows

    def __len__(self) -> int:
        return len(self.rows)

    def raw_sample(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        s2 = as_float32(row["path"], read_tif(row["path"], dtypes=("uint16", "int16", "float32", "float64"), bands=13))
        if self.resize_to is not None and s2.shape[-2:] != (self.resize_to, self.resize_to):
            # the store keeps what the reader returns, so resizing belongs to raw_sample
            s2 = torch.nn.functional.interpolate(torch.from_numpy(s2)[None], size=(self.resize_to,) * 2,
                                                 mode="bicubic", align_corners=False)[0].numpy()
        return {"s2": s2, "label": np.int64(row["label"]), "id": row["id"], "timestamp": row["timestamp"]}

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        sample = dict(raw, label=np.asarray(raw["label"], np.int64))
        if self.normalize:
            sample["s2"] = normalize_s2_meanstd2(raw["s2"], FMOW_S2_MEAN, FMOW_S2_STD)
        return to_tensors(sample)
