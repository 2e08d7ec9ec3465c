"""Packed store: a dataset's raw samples in one chunked zarr store, read back by the same reader class.

:func:`eobook.data.pack.pack` writes, through xarray, every ``raw_sample`` of one or more readers
(:func:`eobook.data.pack.prepare` for a dataset folder); giving the store's path as ``root`` to the same
reader class reads it back (:func:`open_packed`), so a folder and its packed copy yield identical samples.

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

Chunks are compressed with Blosc LZ4 and byte shuffle (:func:`eobook.data.pack.compressor`): it decodes a 120 px BigEarthNet
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
REPACK = "re-pack it with `python -m eobook data prepare` (after moving the old store away)"


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
