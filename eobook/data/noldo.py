"""NoLDO-S12 downstream readers: SSL4EO-S12@DW and SSL4EO-S12@OSM segmentation tiles (CromSS's Tables III, IV).

Liu, C., Albrecht, C. M., Wang, Y., & Zhu, X. X. (2025). CromSS: Cross-modal pretraining with noisy labels for
remote sensing image segmentation. IEEE TGRS. Data: huggingface.co/datasets/vikki23/NoLDO-S12
(``ssl4eo_s12_dw.zip``, ``ssl4eo_s12_osm.zip``).

Layout, as the authors' scripts read it (github.com/zhu-xlab/CromSS ``data_prepare/data_check_SSL4EO/
construct_dw_osm_lmdb/read_dw_data_to_lmdb.py``: ``<root>/{dw_train,dw_test,osm_train,osm_test}/``;
file names from ``get_dw_data/get_sentinel12_ee_*.py``)::

    dw_train/image_s1/s1_<lon>_<lat>-<yyyymmdd>.tif   float32, 2 bands (VV, VH) dB
             image_s2/s2_<lon>_<lat>-<yyyymmdd>.tif   int16 / uint16, 13 bands (S2 L1C, B1..B12 with B8A)
             label_dw/dw_<lon>_<lat>-<yyyymmdd>.tif   uint8 DW labels
    dw_test/  ...  (test tiles name coordinates with ``p`` for the decimal point: ``dw_-0p648..._6p823...-2019...``)
    osm_train/image_s1, image_s2, label_osm (and label_dw)
    osm_test/ ...

Image and label files pair by the name after their prefix (``s1_``, ``s2_``, ``dw_``, ``osm_``). Train tiles are
510 x 510 px, DW test tiles 512 x 512 (the paper, Sec. II-B; the OSM test set pads its 510 px tiles to 512).
Which folder the published zips unpack to could not be checked (the dataset card was not reachable): ``root``
may be the folder holding the split folders, or one above it (e.g. the authors' ``data_s12/``).

Labels, as the authors' loader (``dataset/dwosm_dataset_lmdb.py``) reads them: DW files hold 0 (not
annotated), 1..9 (``DW_CLASSES``) and 10 (cloud, treated as not annotated); a DW file with several bands is read
from its second band, as the authors' script does. OSM files hold 0 (no label) and the 13 classes 1..13
(``OSM_CLASSES``). Returned labels are 0-based, with ``IGNORE_INDEX`` (-1) for every pixel without a label:
those pixels are masked out of the loss and the metrics (Sec. IV-A).

Normalisation: as :class:`~eobook.data.SSL4EOS12` (SSL4EO-S12 L1C statistics for S2, mean +/- 2 std to
[0, 1]; S1 dB standardised), so that the transfer sees the pretraining's inputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .bands import DW_CLASSES, IGNORE_INDEX, NOLDO_DW_CLOUD, OSM_CLASSES
from .base import DataError, EODataset, as_float32, read_tif, require_size, to_tensors
from .sen12ms import check_same_size
from .store import open_packed
from .transforms import SSL4EO_S1_MEAN, SSL4EO_S1_STD, SSL4EO_S2C_MEAN, SSL4EO_S2C_STD, normalize_s2_meanstd2, standardize

TASKS = ("dw", "osm")
SPLITS = ("train", "test")
MODALITIES = ("s1", "s2")
CLASSES = {"dw": DW_CLASSES, "osm": OSM_CLASSES}


def label_lut(task: str) -> np.ndarray:
    """File value -> class id (-1 = unlabelled), -2 for values outside the task's table."""
    lut = np.full(256, -2, np.int64)
    n = len(CLASSES[task])
    lut[0] = IGNORE_INDEX
    lut[1:n + 1] = np.arange(n)
    if task == "dw":
        lut[NOLDO_DW_CLOUD] = IGNORE_INDEX
    return lut


def find_split_dir(root: Path, task: str, split: str) -> Path | None:
    """``<root>/<task>_<split>``, or that folder one level below ``root`` (e.g. ``data_s12/``)."""
    name = f"{task}_{split}"
    if (root / name).is_dir():
        return root / name
    subfolders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = [p / name for p in subfolders if (p / name).is_dir()]
    return found[0] if len(found) == 1 else None


class NoLDOS12(EODataset):
    """SSL4EO-S12@DW or @OSM tiles as ``{"s1", "s2", "label", "id"}``.

    Sample:
        s1: float32 [2, H, W] (VV, VH). s2: float32 [13, H, W] (``S2_L1C_BANDS``); H = W = 510 (train) or 512.
        label: int64 [H, W], ``DW_CLASSES`` (task "dw", 9 classes) or ``OSM_CLASSES`` (task "osm", 13), -1 where
            the tile has no label (not annotated, cloud, no OSM polygon).
        id: the tile's name (without prefix and extension).

    Args:
        root: the folder holding ``<task>_train/`` and ``<task>_test/`` (or one above it), or a packed store.
        task: ``dw`` (SSL4EO-S12@DW) or ``osm`` (SSL4EO-S12@OSM).
        split: ``train`` or ``test``.
        modalities: any of ``s1``, ``s2``.
        normalize, size, on_error: as in :class:`~eobook.data.BigEarthNetMM`.
    """

    label_kind = "segmentation"
    BATCHED = True  # to_sample's normalisation broadcasts over a leading batch axis
    PACKED_DTYPES = {"label": "int8"}  # class ids -1..12, stored in a byte (raw_sample's int64 when read)
    LAYOUT = ("{dw,osm}_{train,test}/ folders with image_s1/, image_s2/ and label_dw/ or label_osm/ "
              "(NoLDO-S12's ssl4eo_s12_dw.zip / ssl4eo_s12_osm.zip)")

    def __init__(self, root, task: str = "dw", split: str = "train", modalities=MODALITIES, normalize: bool = True,
                 size: int | None = None, on_error: str = "raise"):
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        self.modalities = tuple(modalities)
        if not self.modalities or set(self.modalities) - set(MODALITIES):
            raise ValueError(f"modalities: expected a non-empty subset of {MODALITIES}, got {modalities!r}")
        self.root, self.task, self.split, self.normalize, self.size = Path(root), task, split, normalize, size
        self.classes = CLASSES[task]
        self._lut = label_lut(task)
        store = open_packed(self.root, type(self).__name__, f"{task}_{split}")
        super().__init__(on_error, store)
        if store is not None:
            store.require(self.modalities)
            self.names = store.ids
            return
        folder = find_split_dir(self.root, task, split)
        if folder is None:
            raise DataError(self.root, f"no {task}_{split}/ folder (here or one level down): NoLDO-S12 needs {self.LAYOUT}")
        self.folder = folder
        self.names = sorted(p.name[3:-4] for p in (folder / "image_s2").glob("s2_*.tif"))
        if not self.names:
            raise DataError(folder / "image_s2", "no s2_<lon>_<lat>-<date>.tif tiles")

    def __len__(self) -> int:
        return len(self.names)

    def read_raw(self, index: int) -> dict[str, Any]:
        if self.store is not None:
            return self.store.read(index, (*self.modalities, "label"))
        return self.raw_sample(index)

    def read_raw_batch(self, indices) -> dict[str, Any]:
        if self.store is not None:
            return self.store.read_batch(indices, (*self.modalities, "label"), native=self.native)
        return super().read_raw_batch(indices)

    def raw_sample(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        s2_path = self.folder / "image_s2" / f"s2_{name}.tif"
        s2 = read_tif(s2_path, dtypes=("int16", "uint16"), bands=13).astype(np.float32)
        require_size(s2_path, s2, self.size)
        raw: dict[str, Any] = {"id": name}
        if "s2" in self.modalities:
            raw["s2"] = s2
        if "s1" in self.modalities:
            s1_path = self.folder / "image_s1" / f"s1_{name}.tif"
            s1 = as_float32(s1_path, read_tif(s1_path, dtypes=("float32", "float64"), bands=2))
            check_same_size(s1_path, s1, s2)
            raw["s1"] = s1
        label_path = self.folder / f"label_{self.task}" / f"{self.task}_{name}.tif"
        bands = read_tif(label_path, dtypes=("uint8", "uint16", "int16"), nodata_check=False)
        values = bands[1] if self.task == "dw" and len(bands) > 1 else bands[0]  # the authors' img[1]
        check_same_size(label_path, values, s2)
        codes = values.astype(np.int64)
        labels = self._lut[np.clip(codes, 0, 255)]
        bad = (codes < 0) | (codes > 255) | (labels == -2)
        if bad.any():
            top = len(self.classes) + (1 if self.task == "dw" else 0)
            raise DataError(label_path, f"label value(s) {sorted(set(codes[bad].tolist()))[:5]}, expected 0 (no label) "
                                        f"to {top}" + (" (10 = cloud)" if self.task == "dw" else ""))
        raw["label"] = labels
        return raw

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Tensors of a raw sample, or of stacked raw samples (:meth:`to_batch`): every step is per band and pixel."""
        sample = dict(raw)
        if self.normalize:
            if "s2" in raw:
                sample["s2"] = normalize_s2_meanstd2(raw["s2"], SSL4EO_S2C_MEAN, SSL4EO_S2C_STD)
            if "s1" in raw:
                sample["s1"] = standardize(raw["s1"], SSL4EO_S1_MEAN, SSL4EO_S1_STD)
        return to_tensors(sample)

    to_batch = to_sample
