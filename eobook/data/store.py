"""Packed store: a dataset's raw samples in one chunked zarr store, read back by the same reader class.

``pack(datasets, out, attrs)`` writes, through xarray, every ``raw_sample`` of one or more readers;
``prepare(name, root, out)`` does it for a dataset folder, and giving the store's path as ``root`` to the
same reader class reads it back (:func:`open_packed`), so a folder and its packed copy yield identical
samples.

Layout (``FORMAT`` = ``eobook-packed-v2``; a zarr format 2 group that zarr and xarray open as usual)::

    <key>/        one array per key of ``raw_sample`` (``id`` and ``seasons`` excepted), leading
                  ``sample`` dimension, one sample per chunk; every chunk is written, also one equal
                  to zarr's fill value (a class-0 label), so that a missing chunk means a damaged copy
    <key>/        for the keys listed in the ``seasonal`` attribute (SSL4EO-S12's s1, s2a, s2c, dw,
                  multilabel, has_multilabel): [sample, season, ...], one (sample, season) per chunk,
                  so that a reader asking for one season reads a quarter of the bytes
    id, split     [sample] strings: the sample's id and the split it was packed from ('' for none)
    attributes    format, reader (class name), variables, seasonal, source, synthetic, and what the
                  reader needs back (BigEarthNet's layout and its snow/cloud-listed patches, GEO-Bench's band
                  statistics, ...)

Chunks are compressed with Blosc LZ4 and byte shuffle (:func:`compressor`): it decodes a 120 px BigEarthNet
S2 sample (12 float32 bands) in 0.2 ms at 0.71 of its size; Blosc Zstd level 1 packs to 0.66 but decodes
about 5x slower, and decoding is most of the time of a packed read.

Reading bypasses zarr: :class:`ChunkedArray` reads a chunk's file and decodes it with the array's numcodecs
codec. zarr-python 3 indexing costs about 1 ms per call (a round trip through its asyncio thread), more
than the read and decompression of the chunk itself, and a sample reads 2 to 6 arrays. The format-2 chunk
layout (``<key>/<i>.<j>...``, C order) is simple enough to read directly; :class:`ChunkedArray` refuses
arrays laid out otherwise.

Version 1 stores (the four seasons of a location in one chunk, so that one season read them all) are
refused with a message to re-pack them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .base import DataError

FORMAT = "eobook-packed-v2"
ID_WIDTH = 160  # characters kept of string values (patch ids are < 100)
BATCH = 128  # samples appended per xarray write: bounds memory for datasets of any size
REPACK = "re-pack it with `python -m eobook data prepare` (after moving the old store away)"


def compressor():
    """The chunks' codec (see the module docstring for the choice)."""
    from numcodecs import Blosc

    return Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)


def is_packed(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zgroup").is_file())


class ChunkedArray:
    """One array of a packed store, read one chunk file at a time without zarr (see the module docstring).

    Holds only the array's metadata, so it pickles into DataLoader workers and needs no re-opening there.
    """

    def __init__(self, folder: Path):
        from numcodecs import get_codec

        self.folder = folder
        try:
            meta = json.loads((folder / ".zarray").read_text())
        except (OSError, ValueError) as err:
            raise DataError(folder, f"no readable zarr format 2 array ({err}); {REPACK}") from None
        self.shape, self.chunks = tuple(meta["shape"]), tuple(meta["chunks"])
        self.dtype = np.dtype(meta["dtype"])
        self.separator = meta.get("dimension_separator", ".")
        self.codec = get_codec(meta["compressor"]) if meta.get("compressor") else None
        # The two chunkings pack() writes: one sample per chunk, or one (sample, season) per chunk.
        whole = self.chunks[1:] == self.shape[1:]
        per_season = len(self.shape) > 1 and self.chunks[1] == 1 and self.chunks[2:] == self.shape[2:]
        if (meta.get("zarr_format") != 2 or meta.get("order") != "C" or meta.get("filters")
                or self.dtype.hasobject or self.chunks[0] != 1 or not (whole or per_season)):
            raise DataError(folder, f"unexpected array layout (chunks {self.chunks} of {self.shape}); {REPACK}")
        self.per_season = per_season and not whole  # shape[1] == 1 reads the same either way
        self._prefix = os.path.join(folder, "")  # chunk paths as strings: pathlib joins cost 5% of a read

    def _decode(self, index: tuple[int, ...], out: np.ndarray) -> None:
        """Decode the chunk at chunk ``index`` into ``out`` (a buffer of the chunk's size)."""
        path = self._prefix + self.separator.join(map(str, index + (0,) * (len(self.shape) - len(index))))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            # pack() writes every chunk: a missing one is a damaged or incomplete copy, not a fill value
            raise DataError(path, "missing chunk") from None
        try:
            if self.codec is None:
                out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8)
            else:
                self.codec.decode(data, out=out)
        except Exception as err:  # codecs raise several types (RuntimeError, ValueError, ...) on bad bytes
            raise DataError(path, f"unreadable chunk ({err})") from None

    def read(self, row: int, seasons: Sequence[int] | None = None) -> np.ndarray:
        """Sample ``row`` ([...] as written); with ``seasons``, only those positions of its first axis.

        Per-season arrays decode only the chunks of those seasons, straight into the stacked result."""
        if self.per_season:
            seasons = range(self.shape[1]) if seasons is None else seasons
            out = np.empty((len(seasons), *self.shape[2:]), self.dtype)
            for i, season in enumerate(seasons):
                self._decode((row, season), out[i])
            return out
        out = np.empty(self.shape[1:], self.dtype)
        self._decode((row,), out)
        return out if seasons is None else out[list(seasons)]


class PackedStore:
    """Read access to the samples of one split of a packed store."""

    def __init__(self, path: Path, split: str | None, group):
        self.path, self.attrs = path, dict(group.attrs)
        splits = group["split"][:].astype(str)
        self.rows = np.flatnonzero(splits == split) if split is not None else np.arange(len(splits))
        self.ids = [str(x) for x in group["id"][:][self.rows]]
        self.variables = list(self.attrs["variables"])
        self.seasonal = set(self.attrs.get("seasonal", ()))
        self.arrays = {v: ChunkedArray(path / v) for v in self.variables}

    def keep(self, positions: Sequence[int]) -> None:
        """Restrict the split to the samples at ``positions`` (e.g. BigEarthNet without its snow/cloud patches)."""
        self.rows = self.rows[list(positions)]
        self.ids = [self.ids[i] for i in positions]

    def require(self, keys: Iterable[str]) -> None:
        """Refuse a reader option whose arrays were not packed (e.g. Dynamic World masks absent at packing)."""
        missing = [k for k in keys if k not in self.arrays]
        if missing:
            raise DataError(self.path, f"packed without {missing}; it holds {self.variables}")

    def read(self, index: int, keys: Iterable[str] | None = None,
             seasons: Sequence[int] | None = None) -> dict[str, Any]:
        """The raw sample ``index`` of the split: arrays ``keys`` (default: all), and of the ``seasonal``
        ones only ``seasons`` (default: all); nothing else is read from disk."""
        row = int(self.rows[index])
        out = {}
        for key in self.variables if keys is None else keys:
            value = self.arrays[key].read(row, seasons if key in self.seasonal else None)
            out[key] = value.item() if value.dtype.kind in "US" and value.ndim == 0 else value
        out["id"] = self.ids[index]
        return out


def open_packed(root: Path, reader: str, split: str | None) -> PackedStore | None:
    """The packed store at ``root`` if it is one (checked to be of this format and ``reader``), else None."""
    if not is_packed(root):
        return None
    import zarr

    group = zarr.open_group(str(root), mode="r")  # once, for the attributes and the small id and split arrays
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise DataError(root, f"packed store format {attrs.get('format')!r}, this eobook reads {FORMAT!r}: re-pack "
                              f"it with `python -m eobook data prepare {attrs.get('reader', reader)} --root "
                              f"<dataset folder> --out {root}` (after moving the old store away)")
    if attrs.get("reader") != reader:
        raise DataError(root, f"packed store of {attrs.get('reader')!r}, not {reader!r}")
    return PackedStore(root, split, group)


def _to_dataset(samples: list[dict[str, Any]], split: str | None):
    """A list of raw samples -> xarray Dataset with a leading ``sample`` dimension."""
    import xarray as xr

    variables = {}
    for key in samples[0]:
        if key in ("id", "seasons"):
            continue
        stacked = np.stack([np.asarray(s[key]) for s in samples])
        if stacked.dtype.kind == "U":  # fixed width, so that appended batches share one dtype
            stacked = stacked.astype(f"<U{ID_WIDTH}")
        dims = ("sample", *[f"{key}_{i}" for i in range(1, stacked.ndim)])
        variables[key] = (dims, stacked)
    coords = {"id": ("sample", np.array([str(s["id"]) for s in samples], dtype=f"<U{ID_WIDTH}")),
              "split": ("sample", np.array([split or ""] * len(samples), dtype=f"<U{ID_WIDTH}"))}
    return xr.Dataset(variables, coords=coords)


def _encoding(ds, seasonal: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Chunks of one sample, or one (sample, season) for the ``seasonal`` variables; the pinned codec."""
    encoding = {}
    for v in ds.data_vars:
        shape = ds[v].shape[1:]
        chunks = (1, 1, *shape[1:]) if v in seasonal else (1, *shape)
        encoding[v] = {"chunks": chunks, "compressors": compressor()}
    return encoding


def pack(datasets: Iterable[tuple[str | None, Any]], out: Path, attrs: dict[str, Any],
         seasonal: Sequence[str] = ()) -> Path:
    """Write the raw samples of ``(split, reader)`` pairs into one zarr store at ``out``.

    Args:
        datasets: (split name, reader instance) pairs; readers must use ``normalize=False`` semantics
            only in ``to_sample`` (the store keeps ``raw_sample`` output, unnormalised).
        out: the store folder (must not exist).
        attrs: stored as attributes; ``reader`` must name the reader class.
        seasonal: keys whose first axis (after ``sample``) is the season: chunked one season per chunk.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists (remove it to re-pack)")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    first, variables = True, None
    for split, dataset in datasets:
        for start in range(0, len(dataset), BATCH):
            batch = [dataset.raw_sample(i) for i in range(start, min(start + BATCH, len(dataset)))]
            ds = _to_dataset(batch, split)
            # write_empty_chunks: zarr otherwise skips chunks equal to the fill value (a label 0, an all-water
            # mask), and the reader could not tell a skipped chunk from a lost one
            if first:
                variables = list(ds.data_vars)
                ds.to_zarr(tmp, mode="w", encoding=_encoding(ds, seasonal), consolidated=False, zarr_format=2,
                           write_empty_chunks=True)
                first = False
            else:
                ds.to_zarr(tmp, append_dim="sample", consolidated=False, zarr_format=2, write_empty_chunks=True)
    if first:
        raise DataError(out, "nothing to pack: the source has no samples")
    import zarr

    # attributes last: xarray's appends rewrite the group attributes
    zarr.open_group(str(tmp), mode="a").attrs.update(format=FORMAT, variables=variables,
                                                     seasonal=[v for v in variables if v in seasonal], **attrs)
    os.replace(tmp, out)  # a store that exists is complete
    return out


def _ssl4eo_parts(root: Path, cls):
    from .ssl4eo import MODALITIES, MULTILABEL_FILE, SEASONAL_KEYS

    modalities = tuple(m for m in MODALITIES if (root / m).is_dir())
    reader = cls(root, modalities=modalities, seasons="all", dw_labels=(root / "dw").is_dir(),
                 multilabels=(root / MULTILABEL_FILE).is_file(), normalize=False)
    return [(None, reader)], {"modalities": list(modalities)}, SEASONAL_KEYS


def _bigearthnet_attrs(reader) -> dict[str, Any]:
    """The layout, and the patches of the snow/cloud lists (None when the folder has no lists), so that
    ``remove_snow_cloud`` works on the packed copy too."""
    try:
        snow_cloud = sorted(reader.snow_cloud_patches())
    except DataError:
        snow_cloud = None
    return {"layout": reader.layout, "snow_cloud": snow_cloud}


def prepare(name: str, root: Path, out: Path, task: str | None = None) -> Path:
    """Pack dataset ``name`` (a reader class name, e.g. ``BigEarthNetMM``) found at ``root`` into ``out``."""
    from . import READERS

    if name not in READERS:
        raise ValueError(f"dataset: expected one of {sorted(READERS)}, got {name!r}")
    cls = READERS[name]
    root = Path(root)
    seasonal = ()
    if name == "SSL4EOS12":
        parts, attrs, seasonal = _ssl4eo_parts(root, cls)
    elif name == "GeoBench":
        parts = [(s, cls(root, task=task, split=s, normalize=False)) for s in ("train", "valid", "test")]
        attrs = {"band_stats": parts[0][1].band_stats, "bands": list(parts[0][1].bands)}
    elif name == "MMEarth":
        parts = [(s, cls(root, split=s, normalize=False)) for s in ("train", "val", "test")]
        attrs = {"band_stats": parts[0][1].stats}
    elif name == "SEN12MS":
        parts = [(s, cls(root, split=s, normalize=False)) for s in ("validation", "test")]
        attrs = {}
    else:  # BigEarthNetMM, EuroSATMS: train / val / test lists
        parts = [(s, cls(root, split=s, normalize=False)) for s in ("train", "val", "test")]
        attrs = _bigearthnet_attrs(parts[0][1]) if name == "BigEarthNetMM" else {}
    synthetic = (root / "SYNTHETIC").is_file() or (root.parent / "SYNTHETIC").is_file()
    return pack(parts, out, {"reader": name, "source": root.name, "synthetic": synthetic, **attrs}, seasonal)
