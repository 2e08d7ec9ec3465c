"""MMEarth reader for MultiMAE-meets-EO: spectral groups, elevation and WorldCover from one HDF5.

Nedungadi, V., et al. (2024). MMEarth: Exploring multi-modal pretext tasks for geospatial representation
learning. ECCV. Sosa, J., et al. (2024). How effective is pre-training of large masked autoencoders for
downstream Earth observation tasks? (MultiMAE meets EO).

Files (``path`` is the HDF5; the json files lie beside it with the same stem)::

    data_1M_v001_64.h5                 sentinel2 [N, 13, H, W] (band order MMEARTH_S2_BANDS),
                                       aster [N, 2, H, W] (elevation, slope), esa_worldcover [N, 1, H, W],
                                       metadata [N] (tile id of each row)
    data_1M_v001_64_band_stats.json    {"sentinel2_l1c": {"mean": [...], "std": [...]}, "sentinel2_l2a": ...,
                                        "aster": ...}
    data_1M_v001_64_splits.json        {"train": [row, ...], "val": [...], "test": [...]}
    data_1M_v001_64_tile_info.json     {tile id: {"S2_type": "l1c" | "l2a", ...}}

Normalisation: each spectral group is z-scored with the statistics of its tile's processing level
(the authors' code applies L2A statistics to every tile; the book does not copy that); ``depth`` is the
ASTER elevation z-scored with the ``aster`` statistics; ``seg`` maps WorldCover {10, ..., 100} to 0..10
and everything else (no data) to 11, explicitly.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .bands import MMEARTH_S2_BANDS, MODALITY_BANDS, WORLDCOVER_CLASSES, WORLDCOVER_CODES, WORLDCOVER_NODATA_CLASS
from .base import HDF5_ERRORS, DataError, EODataset, check_values, read_json, require_size, to_tensors
from .store import open_packed
from .transforms import standardize

MODALITIES = ("rgb", "ired", "sired", "eb", "depth", "seg")
SPLITS = ("train", "val", "test")
_WORLDCOVER_LUT = np.full(256, WORLDCOVER_NODATA_CLASS, np.int64)
_WORLDCOVER_LUT[list(WORLDCOVER_CODES)] = np.arange(len(WORLDCOVER_CODES))


def sidecar(path: Path, suffix: str) -> Path:
    """``data_1M_v001_64.h5`` -> ``data_1M_v001_64<suffix>`` in the same folder."""
    return path.with_name(path.stem + suffix)


def worldcover_to_classes(codes: np.ndarray) -> np.ndarray:
    """WorldCover codes -> 0..10, anything else (0 = no data, fill values) -> 11."""
    return _WORLDCOVER_LUT[codes.astype(np.int64).clip(0, 255)]


class MMEarth(EODataset):
    """MMEarth rows as a dict keyed by modality name.

    Sample:
        rgb, ired, sired, eb: float32 [C, H, W] (C = 3, 3, 2, 2; bands in ``MODALITY_BANDS``).
        depth: float32 [1, H, W], standardised ASTER elevation.
        seg: int64 [H, W], WorldCover classes 0..10, 11 = no data.
        id: the tile id; s2_level: "l1c" or "l2a".

    Args:
        path: the HDF5 file (or a packed store).
        modalities: subset of ``MODALITIES``.
        split: ``train``, ``val``, ``test`` or None (all rows).
        normalize: apply the tile-level statistics (False: raw values).
        size, on_error: as in :class:`~eobook.data.BigEarthNetMM`.

    The HDF5 file is opened once per process (DataLoader worker) on first use, not once per item.
    """

    BATCHED = True
    LAYOUT = "data_1M_v001_64.h5 (or another MMEarth HDF5) with its _band_stats.json, _splits.json, _tile_info.json"

    def __init__(self, path, modalities=MODALITIES, split: str | None = "train", normalize: bool = True,
                 size: int | None = None, on_error: str = "raise"):
        self.path = Path(path)
        self.modalities = tuple(modalities)
        if "seg" in self.modalities:
            self.label_key, self.label_kind, self.classes = "seg", "segmentation", WORLDCOVER_CLASSES
        else:
            self.label_key = None
        if set(self.modalities) - set(MODALITIES) or not self.modalities:
            raise ValueError(f"modalities: expected a non-empty subset of {MODALITIES}, got {modalities!r}")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS} or None, got {split!r}")
        self.split, self.normalize, self.size = split, normalize, size
        self._file, self._pid = None, None
        store = open_packed(self.path, type(self).__name__, split)
        super().__init__(on_error, store)
        self.stats = store.attrs["band_stats"] if store is not None else read_json(sidecar(self.path, "_band_stats.json"))
        if store is not None:
            self.rows = list(range(len(store.ids)))
            return
        if not self.path.is_file():
            raise DataError(self.path, "missing file")
        self.tile_info = read_json(sidecar(self.path, "_tile_info.json"))
        if split is None:
            self.rows = list(range(len(self._h5()["sentinel2"])))
        else:
            splits = read_json(sidecar(self.path, "_splits.json"))
            if split not in splits:
                raise DataError(sidecar(self.path, "_splits.json"), f"no {split!r} split (has {sorted(splits)})")
            self.rows = [int(r) for r in splits[split]]

    def _h5(self):
        """The open HDF5 file of this process (h5py handles must not cross a fork)."""
        import h5py

        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except HDF5_ERRORS as err:
                raise DataError(self.path, f"unreadable or corrupt HDF5 ({err})") from None
            self._pid = os.getpid()
            for name in ("sentinel2", "aster", "esa_worldcover", "metadata"):
                if name not in self._file:
                    raise DataError(self.path, f"no {name!r} dataset (has {sorted(self._file)})")
        return self._file

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}

    def __len__(self) -> int:
        return len(self.rows)

    def raw_sample(self, index: int) -> dict[str, Any]:
        f, row = self._h5(), self.rows[index]
        where = f"{self.path} row {row}"
        try:
            s2 = f["sentinel2"][row].astype(np.float32)          # [13, H, W]
            elevation = f["aster"][row, :1].astype(np.float32)   # [1, H, W]
            worldcover = f["esa_worldcover"][row, 0]             # [H, W]
            tile = f["metadata"][row]
        except HDF5_ERRORS as err:
            raise DataError(where, f"unreadable row ({type(err).__name__}: {err})") from None
        tile = tile.decode() if isinstance(tile, bytes) else str(tile)
        if s2.shape[0] != len(MMEARTH_S2_BANDS):
            raise DataError(where, f"sentinel2 has {s2.shape[0]} bands, expected {len(MMEARTH_S2_BANDS)}")
        require_size(where, s2, self.size)
        for name, array in (("sentinel2", s2), ("aster", elevation)):
            check_values(f"{where} ({name})", array)
            if array.shape[-2:] != s2.shape[-2:]:
                raise DataError(where, f"{name} is {array.shape[-2:]}, sentinel2 is {s2.shape[-2:]}")
        level = self.tile_info.get(tile, {}).get("S2_type")
        if level not in ("l1c", "l2a"):
            raise DataError(sidecar(self.path, "_tile_info.json"), f"tile {tile!r}: S2_type {level!r}, expected 'l1c' or 'l2a'")
        return {"s2": s2, "elevation": elevation, "worldcover": worldcover.astype(np.uint8), "id": tile,
                "s2_level": level}

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        return self._convert(raw, batched=False)

    def to_batch(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``to_sample`` of stacked raw samples: each row z-scored with its own tile's statistics."""
        return self._convert(raw, batched=True)

    def _convert(self, raw: dict[str, Any], batched: bool) -> dict[str, Any]:
        """Normalised tensors of one raw sample, or of stacked ones (``batched``: a leading batch axis)."""
        levels = [str(level) for level in raw["s2_level"]] if batched else raw["s2_level"]
        sample: dict[str, Any] = {"id": raw["id"], "s2_level": levels}
        s2 = raw["s2"]
        if self.normalize:
            stats = [self.stats[f"sentinel2_{level}"] for level in (levels if batched else [levels])]
            # per row, [B, C, 1, 1]: the same float32 operations as one sample's standardize
            mean = np.asarray([s["mean"] for s in stats], np.float32)[:, :, None, None]
            std = np.asarray([s["std"] for s in stats], np.float32)[:, :, None, None]
            s2 = (s2.astype(np.float32) - (mean if batched else mean[0])) / (std if batched else std[0])
        band_axis = 1 if batched else 0
        for modality in self.modalities:
            if modality in MODALITY_BANDS:
                sample[modality] = s2.take([MMEARTH_S2_BANDS.index(b) for b in MODALITY_BANDS[modality]], band_axis)
        if "depth" in self.modalities:
            depth = raw["elevation"]
            if self.normalize:
                depth = standardize(depth, self.stats["aster"]["mean"][:1], self.stats["aster"]["std"][:1])
            sample["depth"] = depth
        if "seg" in self.modalities:
            sample["seg"] = worldcover_to_classes(raw["worldcover"])
        return to_tensors(sample)
