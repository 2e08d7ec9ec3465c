"""DFC2020 reader: the 2020 IEEE GRSS Data Fusion Contest's validation and test sets (SEN12MS-like triplets
with hand-made 10 m labels), 256 px patches.

Robinson, C., et al. (2021). Global land-cover mapping with weak supervision: outcome of the 2020 IEEE GRSS
Data Fusion Contest. IEEE JSTARS. Distributed through IEEE DataPort (behind a login), so the book lists no
download or checksum for it.

Layout, as read by the contest's baseline (github.com/lukasliebel/dfc2020_baseline ``code/datasets.py``)
and CromSS's preparation script (github.com/zhu-xlab/CromSS ``data_prepare/data_check_DFC20/
write_data_to_lmdb.py``, file names ``ROIs0000_<split>_<kind>_0_p<i>.tif``, i from 0)::

    ROIs0000_validation/s1_validation/ROIs0000_validation_s1_0_p<i>.tif   986 patches
                        s2_validation/ROIs0000_validation_s2_0_p<i>.tif
                        dfc_validation/ROIs0000_validation_dfc_0_p<i>.tif
    ROIs0000_test/s1_0/ROIs0000_test_s1_0_p<i>.tif                        5,128 patches
                  s2_0/..., dfc_0/...

S1: 2 bands (VV, VH) dB (float32, or float64 as CromSS found them); S2: 13 bands uint16 L1C; ``dfc``: one
band of simplified IGBP classes 1..10 (``DFC_CLASSES``; savanna (3) and snow / ice (8) do not occur), 0 = no
label. Archives that also hold ``lc_*`` (MODIS) folders are read the same way; those are not used.

``split="train"`` (or ``"validation"``) is the validation set, which CromSS (Sec. IV-A) and Fus-MAE fine-tune
on; ``"test"`` the test set. Samples and normalisation as :class:`~eobook.data.SEN12MS`; ``label`` is the
per-pixel map (0..9, -1 = no label).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .bands import DFC_CLASSES
from .base import DataError, check_split, read_tif
from .sen12ms import LABEL_DTYPES, _SceneLabels, check_same_size, partner, read_s1_s2
from .store import open_packed

SPLIT_FOLDER = {"train": "validation", "val": "validation", "validation": "validation", "test": "test"}


class DFC2020(_SceneLabels):
    """DFC2020 patches as ``{"s1", "s2", "label", "label_scene", "label_multi", "id"}`` (see :class:`SEN12MS`).

    Args:
        root: the DFC2020 folder (``ROIs0000_validation/``, ``ROIs0000_test/``) or a packed store.
        split: ``train`` / ``validation`` / ``val`` (the validation set), ``test``, or None (both).
        normalize, size, on_error: as in :class:`~eobook.data.BigEarthNetMM`.
    """

    label_key, label_kind = "label", "segmentation"
    LAYOUT = "ROIs0000_validation/ and ROIs0000_test/ with s1_*, s2_*, dfc_* patch folders"

    def __init__(self, root, split: str | None = None, normalize: bool = True, size: int | None = None,
                 on_error: str = "raise"):
        self.root, self.split, self.normalize, self.size = Path(root), check_split(split, SPLIT_FOLDER), normalize, size
        store = open_packed(self.root, type(self).__name__, SPLIT_FOLDER[split] if split else None)
        super().__init__(on_error, store)
        if store is not None:
            self.files = store.ids
            return
        folders = [f"ROIs0000_{SPLIT_FOLDER[split]}"] if split else ["ROIs0000_validation", "ROIs0000_test"]
        missing = [f for f in folders if not (self.root / f).is_dir()]
        if missing:
            raise DataError(self.root, f"no {' or '.join(missing)} folder: DFC2020 needs {self.LAYOUT}")
        self.files = sorted((str(p.relative_to(self.root)) for f in folders
                             for p in (self.root / f).glob(f"s2_*/{f}_s2_*_p*.tif")), key=_patch_order)
        if not self.files:
            raise DataError(self.root / folders[0], f"no S2 patches {folders[0]}/s2_*/{folders[0]}_s2_*_p<i>.tif")

    def raw_sample(self, index: int) -> dict[str, Any]:
        s2_path = self.root / self.files[index]
        s2, s1 = read_s1_s2(s2_path, self.size)
        dfc_path = partner(s2_path, "dfc")
        label = read_tif(dfc_path, dtypes=LABEL_DTYPES, nodata_check=False)[0].astype(np.int64)
        check_same_size(dfc_path, label, s2)
        if label.min() < 0 or label.max() > len(DFC_CLASSES):
            bad = sorted(set(label[(label < 0) | (label > len(DFC_CLASSES))].tolist()))[:5]
            raise DataError(dfc_path, f"label value(s) {bad}, expected the simplified IGBP classes 1..10 (0 = no label)")
        return {"s2": s2, "s1": s1, "label": label - 1, "id": Path(self.files[index]).name}


def _patch_order(relative: str) -> tuple[str, int]:
    """Sort by folder, then by patch number (p2 before p10)."""
    head, _, number = relative.rpartition("_p")
    return head, int(number.split(".")[0]) if number.split(".")[0].isdigit() else -1
