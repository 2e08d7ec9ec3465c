"""SSL4EO-S12 reader: four seasons of Sentinel-1/2 per location, Dynamic World masks, multi-labels.

Wang, Y., et al. (2023). SSL4EO-S12: A large-scale multimodal, multitemporal dataset for self-supervised
learning in Earth observation. IEEE GRSM. Labels: Liu, C., et al. (2024). Multimodal self-supervised
pretraining with noisy labels (CromSS; NoLDO-S12 = SSL4EO-S12 locations with Dynamic World labels,
Brown et al., 2022) and SoftCon (SSL4EO-S12-ML multi-labels).

Layout under ``root``::

    s1/<7-digit id>/<product id>/VV.tif, VH.tif          float32 dB
    s2a/<7-digit id>/<product id>/B1.tif ... B12.tif     uint16 L2A, 12 bands (no B10)
    s2c/<7-digit id>/<product id>/B1.tif ... B12.tif     uint16 L1C, 13 bands, B8A.tif
    dw/<7-digit id>/<product id>/dw.tif                  uint8 Dynamic World classes 0..8, 255 = no data
    ssl4eo_s12_ml.json                                    {location id: {season: ["0", "4", ...]}}

Seasons are the product folders of a location in name (= date) order. The ``dw`` layout is the book's
arrangement of the NoLDO-S12 label masks (one mask per season, beside the images); pass ``dw_dir`` for
another folder name. In the multi-label json a season key is the season index ("0".."3") or the
product id; an empty list means the season has no label (``has_multilabel`` False).

Normalisation: S2 mean +/- 2 std to [0, 1] with SSL4EO-S12's L1C or L2A statistics; S1 dB standardised
with SSL4EO-S12's statistics. Dynamic World no-data becomes ``IGNORE_INDEX`` (-1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bands import DW_CLASSES, IGNORE_INDEX, S1_BANDS, S2_BAND_GSD, S2_L1C_BANDS, S2_L2A_BANDS, SSL4EO_BAND_FILE
from .base import DataError, EODataset, read_json, read_tif, require_size, resample_to, stack_raw, to_tensors
from .store import open_packed
from .transforms import (SSL4EO_S1_MEAN, SSL4EO_S1_STD, SSL4EO_S2A_MEAN, SSL4EO_S2A_STD, SSL4EO_S2C_MEAN,
                         SSL4EO_S2C_STD, DeviceNormalization, normalize_s2_meanstd2, standardize)

MODALITIES = ("s1", "s2a", "s2c")
_S2_STATS = {"s2a": (SSL4EO_S2A_MEAN, SSL4EO_S2A_STD), "s2c": (SSL4EO_S2C_MEAN, SSL4EO_S2C_STD)}
N_SEASONS = 4
DW_NODATA = 255
MULTILABEL_FILE = "ssl4eo_s12_ml.json"
_BANDS = {"s1": S1_BANDS, "s2a": S2_L2A_BANDS, "s2c": S2_L1C_BANDS}
#: Keys of ``raw_sample`` with a leading season axis (the packed store chunks them one season per chunk).
SEASONAL_KEYS = (*MODALITIES, "dw", "multilabel", "has_multilabel")


def season_for(seed: int, epoch: int, index: int, n_seasons: int = N_SEASONS) -> int:
    """The 'random' season of sample ``index`` in ``epoch``: a pure function of (seed, epoch, index)."""
    return int(np.random.default_rng([seed, epoch, index]).integers(n_seasons))


class SSL4EOS12(EODataset):
    """SSL4EO-S12 locations as ``{"s2", "s1", "dw", "multilabel", "season", "id"}``.

    Sample (T = 4 seasons when ``seasons="all"``, else the time axis is absent):
        s2: float32 [C, H, W] or [T, C, H, W]; C = 13 (``s2c``, ``S2_L1C_BANDS``) or 12 (``s2a``);
            20 m / 60 m bands bicubically resampled to the 10 m grid (264 px for the real data). When both
            ``s2a`` and ``s2c`` are asked for, they come as ``s2a`` and ``s2c`` instead of ``s2``.
        s1: float32 [2, H, W] or [T, 2, H, W], (VV, VH) dB.
        dw: int64 [H, W] or [T, H, W], Dynamic World class ids 0..8 (``DW_CLASSES``), -1 = no data.
        multilabel: float32 [9] multi-hot of the Dynamic World classes (or [T, 9]);
            has_multilabel: bool (or [T]) False where the json lists no label.
        season: int, the season index read (-1 with ``seasons="all"``).

    Args:
        root: the SSL4EO-S12 folder or a packed store.
        modalities: any of ``s1``, ``s2a``, ``s2c``.
        seasons: ``"random"`` (one per item, from ``season_for(seed, epoch, index)``), ``"all"``, or an int.
        dw_labels: also read the Dynamic World masks (NoLDO-S12).
        multilabels: also read the SSL4EO-S12-ML multi-labels.
        seed: seed of the random season choice; call :meth:`set_epoch` each epoch for new draws.
        normalize, size, on_error: as in :class:`~eobook.data.BigEarthNetMM`.
        dw_dir: folder name of the Dynamic World masks.
        n_seasons: season folders per location (4 in SSL4EO-S12; fewer for partial copies).
        native_season: with ``seasons="all"``, ``"random"`` makes the native batches of a packed store (what
            ``fit``'s loader reads) hold the images of one season per location, ``season_for(seed, epoch,
            index)`` (given as ``season``), and the labels of all seasons: what CromSS's step uses. Samples
            read otherwise keep all seasons.
    """

    LAYOUT = "s1/, s2a/, s2c/ (and dw/) folders of <7-digit location id>/<product id>/ GeoTIFF bands"
    BATCHED = True
    #: Dynamic World classes -1..8 in a byte (raw_sample's int64 when read); reflectances in whole DN (see
    #: eobook.data.store)
    PACKED_DTYPES = {"dw": "int8", "s2a": "int16", "s2c": "int16"}

    def __init__(self, root, modalities=("s2c",), seasons: str | int = "random", dw_labels: bool = False,
                 multilabels: bool = False, seed: int = 0, normalize: bool = True, size: int | None = None,
                 on_error: str = "raise", dw_dir: str = "dw", n_seasons: int = N_SEASONS,
                 native_season: str | None = None):
        self.root = Path(root)
        if native_season not in (None, "random") or (native_season and seasons != "all"):
            raise ValueError(f"native_season: expected None, or 'random' with seasons='all', got {native_season!r} "
                             f"with seasons={seasons!r}")
        self.native_season = native_season
        self.modalities = tuple(modalities)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities: expected a non-empty subset of {MODALITIES}, got {modalities!r}")
        if not (seasons in ("random", "all") or (isinstance(seasons, int) and 0 <= seasons < n_seasons)):
            raise ValueError(f"seasons: expected 'random', 'all' or 0..{n_seasons - 1}, got {seasons!r}")
        self.n_seasons = n_seasons
        self.seasons, self.seed, self.epoch = seasons, seed, 0
        self.dw_labels, self.multilabels, self.normalize, self.size = dw_labels, multilabels, normalize, size
        self.dw_dir = dw_dir
        if dw_labels:
            self.label_key, self.label_kind, self.classes = "dw", "segmentation", DW_CLASSES
        elif multilabels:
            self.label_key, self.label_kind, self.classes = "multilabel", "multilabel", DW_CLASSES
        else:
            self.label_key = None
        store = open_packed(self.root, type(self).__name__, None)
        super().__init__(on_error, store)
        if store is not None:
            store.require(self._stored_keys())
            packed_seasons = store.arrays[self.modalities[0]].shape[1]
            if packed_seasons != n_seasons:
                raise DataError(self.root, f"packed with {packed_seasons} seasons per location, n_seasons={n_seasons}")
            self.ids = store.ids
            return
        first = self.root / self.modalities[0]
        if not first.is_dir():
            raise DataError(first, "missing modality folder")
        self.ids = sorted(p.name for p in first.iterdir() if p.is_dir())
        self.labels_ml = read_json(self.root / MULTILABEL_FILE) if multilabels else None

    def set_epoch(self, epoch: int) -> None:
        """Make ``seasons="random"`` draw a new (reproducible) season per index in this epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def _season_list(self, index: int) -> list[int]:
        if self.seasons == "all":
            return list(range(self.n_seasons))
        if self.seasons == "random":
            return [season_for(self.seed, self.epoch, index, self.n_seasons)]
        return [self.seasons]

    def _products(self, folder: Path) -> list[Path]:
        products = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        if len(products) != self.n_seasons:
            raise DataError(folder, f"{len(products)} season folders, expected {self.n_seasons}")
        return products

    # --------------------------------------------------------------------------------------- reading
    def read_raw(self, index: int) -> dict[str, Any]:
        seasons = self._season_list(index)
        if self.store is not None:
            # only the arrays and seasons this sample uses: SoftCon's one season of S2 L1C is a quarter of
            # one of the store's arrays
            return self.store.read(index, self._stored_keys(), seasons) | {"seasons": seasons}
        return self.raw_sample(index, seasons)

    def read_raw_batch(self, indices) -> dict[str, Any]:
        """:meth:`read_raw` of every index, stacked: from a packed store one read per chunk and season (a native
        batch with ``native_season``: the images of the drawn season only)."""
        seasons = [self._season_list(i) for i in indices]
        if self.store is None:
            return stack_raw([self.raw_sample(i, s) for i, s in zip(indices, seasons)])
        if self.native and self.native_season:
            drawn = [[season_for(self.seed, self.epoch, i, self.n_seasons)] for i in indices]
            labels = tuple(k for k in self._stored_keys() if k not in self.modalities)
            return (self.store.read_batch(indices, self.modalities, drawn, native=True)
                    | self.store.read_batch(indices, labels, seasons, native=True) | {"seasons": drawn})
        return self.store.read_batch(indices, self._stored_keys(), seasons, self.native) | {"seasons": seasons}

    def multilabel(self, index: int) -> np.ndarray:
        """The multi-labels [T, 9] of sample ``index`` in the seasons it reads now (``seasons``, this epoch's
        draw for "random"), from the label file or the packed store alone: no image is decoded."""
        if not self.multilabels:
            raise ValueError("multilabel: this reader was opened without multilabels=True")
        seasons = self._season_list(index)
        if self.store is not None:
            return self.store.read(index, ("multilabel",), seasons)["multilabel"]
        return self._multilabel(self.ids[index], seasons)[0]

    def _stored_keys(self) -> tuple[str, ...]:
        """The ``raw_sample`` keys the samples are made of: the modalities and the labels asked for."""
        labels = (("dw",) if self.dw_labels else ()) + (("multilabel", "has_multilabel") if self.multilabels else ())
        return (*self.modalities, *labels)

    def raw_sample(self, index: int, seasons: list[int] | None = None) -> dict[str, Any]:
        """Arrays of the given seasons (all four by default), each with a leading time axis."""
        seasons = list(range(self.n_seasons)) if seasons is None else seasons
        loc = self.ids[index]
        raw: dict[str, Any] = {"id": loc, "seasons": seasons}
        size = None
        for modality in self.modalities:
            products = self._products(self.root / modality / loc)
            stacks = [self._read_bands(modality, products[t]) for t in seasons]  # [C, H, W] each
            size = size or stacks[0].shape[-1]
            for t, stack in zip(seasons, stacks):
                if stack.shape[-1] != size:
                    raise DataError(products[t], f"size {stack.shape[-1]}, other modalities have {size}")
            raw[modality] = np.stack(stacks)  # [T, C, H, W]
        if self.dw_labels:
            products = self._products(self.root / self.dw_dir / loc)
            raw["dw"] = np.stack([self._read_dw(products[t] / "dw.tif", size) for t in seasons])
        if self.multilabels:
            raw["multilabel"], raw["has_multilabel"] = self._multilabel(loc, seasons)
        return raw

    def _read_bands(self, modality: str, folder: Path) -> np.ndarray:
        if modality == "s1":
            arrays = [read_tif(folder / f"{b}.tif", dtypes=("float32",), bands=1) for b in S1_BANDS]
            require_size(folder / "VV.tif", arrays[0], self.size)
            return np.concatenate(arrays).astype(np.float32)
        ref_path = folder / "B2.tif"
        size = read_tif(ref_path, dtypes=("uint16", "int16"), bands=1).shape[-1]
        require_size(ref_path, np.empty((size, size)), self.size)
        out = []
        for band in _BANDS[modality]:
            path = folder / f"{SSL4EO_BAND_FILE[band]}.tif"
            # B10 (cirrus) is legitimately zero over most of the world: no all-nodata check for it.
            array = read_tif(path, dtypes=("uint16", "int16"), bands=1, nodata_check=band != "B10")
            if array.shape[-1] * S2_BAND_GSD[band] != size * 10:
                raise DataError(path, f"size {array.shape[-1]} at {S2_BAND_GSD[band]} m does not match {size} px at 10 m")
            out.append(resample_to(array, size, path))
        return np.concatenate(out)  # [C, H, W]

    @staticmethod
    def _read_dw(path: Path, size: int | None) -> np.ndarray:
        mask = read_tif(path, dtypes=("uint8",), bands=1, nodata_check=False)[0]
        if size is not None and mask.shape != (size, size):
            raise DataError(path, f"shape {mask.shape}, the images are {size}x{size}")
        bad = (mask >= len(DW_CLASSES)) & (mask != DW_NODATA)
        if bad.any():
            raise DataError(path, f"unknown Dynamic World class value(s) {sorted(set(mask[bad].tolist()))}")
        return np.where(mask == DW_NODATA, IGNORE_INDEX, mask).astype(np.int64)

    def _multilabel(self, loc: str, seasons: list[int]) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / MULTILABEL_FILE
        entry = self.labels_ml.get(loc, self.labels_ml.get(str(int(loc)), {}))
        keys = sorted(entry)
        labels = np.zeros((len(seasons), len(DW_CLASSES)), np.float32)
        for row, t in enumerate(seasons):
            names = entry.get(str(t), entry.get(keys[t]) if t < len(keys) else None) or []
            for name in names:
                if not str(name).isdigit() or int(name) >= len(DW_CLASSES):
                    raise DataError(path, f"location {loc}: unknown label {name!r} (expected '0'..'8')")
                labels[row, int(name)] = 1
        return labels, labels.any(axis=1)

    def _key(self, modality: str) -> str:
        """The sample's key of ``modality``: ``s2`` for the one S2 level asked for, else the modality's name."""
        if modality.startswith("s2") and sum(m.startswith("s2") for m in self.modalities) == 1:
            return "s2"
        return modality

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        return self._convert(raw, batched=False)

    def device_normalization(self) -> DeviceNormalization:
        """``to_sample``'s normalisation of a native batch (and the Dynamic World classes' int64), on its device."""
        dtypes = {"dw": torch.int64} if self.dw_labels else {}
        if not self.normalize:
            return DeviceNormalization(dtypes={**dtypes, **{self._key(m): torch.float32 for m in self.modalities}})
        return DeviceNormalization(meanstd2={self._key(m): _S2_STATS[m] for m in self.modalities if m != "s1"},
                                   zscore={"s1": (SSL4EO_S1_MEAN, SSL4EO_S1_STD)} if "s1" in self.modalities else {},
                                   dtypes=dtypes)

    def to_batch(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``to_sample`` of stacked raw samples (:meth:`read_raw_batch`)."""
        return self._convert(raw, batched=True)

    def _convert(self, raw: dict[str, Any], batched: bool) -> dict[str, Any]:
        """Normalised tensors of one raw sample, or of stacked ones (``batched``: a leading batch axis)."""
        single = self.seasons != "all" or (batched and self.native and self.native_season is not None)
        if batched:
            season = np.array([s[0] if single else -1 for s in raw["seasons"]], np.int64)
        else:
            season = raw["seasons"][0] if single else -1
        sample: dict[str, Any] = {"id": raw["id"], "season": season}
        for modality in self.modalities:
            x = raw[modality]  # [T, C, H, W]
            if self.normalize and not (batched and self.native):
                if modality == "s1":
                    x = standardize(x, SSL4EO_S1_MEAN, SSL4EO_S1_STD)
                else:
                    x = normalize_s2_meanstd2(x, *_S2_STATS[modality])
            sample[self._key(modality)] = x
        label_keys = (("dw",) if self.dw_labels else ()) + (("multilabel", "has_multilabel") if self.multilabels else ())
        for key in label_keys:
                sample[key] = raw[key]
        if single:  # drop the time axis (of the images only where the labels keep all seasons: native_season)
            keys = {"s1", "s2", "s2a", "s2c"} | (set() if self.native_season else {"dw", "multilabel", "has_multilabel"})
            sample = {k: ((v[:, 0] if batched else v[0]) if k in keys else v) for k, v in sample.items()}
        return to_tensors(sample)
