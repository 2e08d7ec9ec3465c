"""Packed store: a dataset's raw samples in one chunked zarr store, read back by the same reader class.

:func:`eobook.data.pack.pack` writes, through xarray, every ``raw_sample`` of one or more readers
(:func:`eobook.data.pack.prepare` for a dataset folder); giving the store's path as ``root`` to the same
reader class reads it back (:func:`open_packed`), so a folder and its packed copy yield the same samples.

One difference, by design: Sentinel-2 reflectances are stored as int16 integers. Where the reader resampled
20 m and 60 m bands to the 10 m grid (bicubic, BigEarthNet-MM and SSL4EO-S12), the store keeps them rounded
to whole DN: within 0.5 DN of the folder's values (at most 0.003 of a band's mean +/- 2 std range, against the
authors' own cast of that range to 256 levels), at half the bytes of float32. int16, not the files' uint16,
keeps bicubic's undershoot below 0 (hundreds of DN at sharp edges); values above 32767 (saturation) become
32767, which the mean +/- 2 std normalisation maps to 1 either way. Every other array is stored exactly
(labels in the narrowest integer type that holds them, e.g. Dynamic World's int64 classes -1..8 as int8).

Layout (``FORMAT`` = ``eobook-packed-v3``; a zarr format 2 group that zarr and xarray open as usual)::

    <key>/        one array per key of ``raw_sample`` (``id`` and ``seasons`` excepted), leading
                  ``sample`` dimension, several samples per chunk (:func:`eobook.data.pack.samples_per_chunk`:
                  as many as fit in ``CHUNK_BYTES``, a power of two up to ``MAX_SAMPLES_PER_CHUNK``); every
                  chunk is written, also one equal to zarr's fill value (a class-0 label), so that a missing
                  chunk means a damaged copy
    <key>/        for the keys listed in the ``seasonal`` attribute (SSL4EO-S12's s1, s2a, s2c, dw,
                  multilabel, has_multilabel): [sample, season, ...], chunks of (several samples, one season),
                  so that a reader asking for one season reads a quarter of the bytes
    id, split     [sample] strings: the sample's id and the split it was packed from ('' for none)
    attributes    format, reader (class name), variables, seasonal, dtypes (the ``raw_sample`` dtype of
                  arrays stored narrower), source,
                  synthetic, and what the reader needs back (BigEarthNet's layout and its snow/cloud-listed
                  patches, GEO-Bench's band statistics, ...)

Chunks are stored as they are by default (``compression="none"``): read straight into the batch, at about
13 GB/s on one core from the page cache. ``compression="lz4"`` (Blosc LZ4 with byte shuffle, about 3 GB/s to
decode per core; Blosc Zstd level 1 packs about 10% smaller but decodes 5x slower) stores the sample world's
int16 reflectances at 0.77 of their size. A training step consumes up to tens of GB/s of input per GPU
(``python -m eobook bench data``): data read at such rates lies in memory, and there decoding, not reading,
limits a worker, so the default keeps the cores free; ``lz4`` is for storage that cannot keep up.

Reading bypasses zarr: :class:`ChunkedArray` reads a chunk's file and decodes it with the array's numcodecs
codec. zarr-python 3 indexing costs about 1 ms per call (a round trip through its asyncio thread), more
than the read and decompression of the chunk itself. The format-2 chunk layout (``<key>/<i>.<j>...``, C
order) is simple enough to read directly; :class:`ChunkedArray` refuses arrays laid out otherwise.

Batches are read whole (:meth:`PackedStore.read_batch`, behind the readers' ``__getitems__``): the rows of a
batch are grouped by chunk and each chunk is read and decoded once, so that a batch drawn from a few chunks
(the loop's chunk-aligned sampler, :class:`eobook.train.loop.ResumableBatchSampler`) costs a few reads, not
one per sample and array. A single read keeps its array's last decoded chunk, so reading samples one by one
in order decodes each chunk once too.

Stores of earlier formats (v1: the four seasons of a location in one chunk; v2: one sample per chunk) are
refused with a message to re-pack them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from . import ring
from .base import DataError

FORMAT = "eobook-packed-v3"
REPACK = "re-pack it with `python -m eobook data prepare` (after moving the old store away)"


def is_packed(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zgroup").is_file())


def empty_batch(shape: tuple[int, ...], dtype: np.dtype, as_tensor: bool) -> tuple[torch.Tensor | None, np.ndarray]:
    """(tensor or None, numpy view of it) of an uninitialised batch. With ``as_tensor`` (and a numeric dtype),
    inside a DataLoader worker the tensor lies in shared memory: in the slot of the worker's ring that the
    batch is being read into (:mod:`eobook.data.ring`: memory already mapped), else fresh, as
    ``default_collate`` allocates its output. Handing the batch to the main process then copies nothing (else
    torch would copy it into shared memory)."""
    if not as_tensor or dtype.kind in "USO":
        return None, np.empty(shape, dtype)
    torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    if torch.utils.data.get_worker_info() is None:
        tensor = torch.empty(shape, dtype=torch_dtype)
    elif (tensor := ring.lend(shape, torch_dtype)) is None:
        storage = torch.empty(0, dtype=torch_dtype)._typed_storage()._new_shared(int(np.prod(shape)))
        tensor = torch.empty(0, dtype=torch_dtype).new(storage).view(shape)
    return tensor, tensor.numpy()


class ChunkedArray:
    """One array of a packed store, read one chunk file at a time without zarr (see the module docstring).

    Holds only the array's metadata (and, once read, its last decoded chunk), so it pickles into DataLoader
    workers and needs no re-opening there.
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
        # The two chunkings pack() writes: whole samples, or one season of each sample.
        whole = self.chunks[1:] == self.shape[1:]
        per_season = len(self.shape) > 1 and self.chunks[1] == 1 and self.chunks[2:] == self.shape[2:]
        if (meta.get("zarr_format") != 2 or meta.get("order") != "C" or meta.get("filters")
                or self.dtype.hasobject or not (whole or per_season)):
            raise DataError(folder, f"unexpected array layout (chunks {self.chunks} of {self.shape}); {REPACK}")
        self.per_season = per_season and not whole  # shape[1] == 1 reads the same either way
        self.samples_per_chunk = self.chunks[0]
        self._prefix = os.path.join(folder, "")  # chunk paths as strings: pathlib joins cost 5% of a read
        self._cached: tuple[tuple[int, ...], np.ndarray] | None = None

    def __getstate__(self):
        return {**self.__dict__, "_cached": None}  # a worker starts without the parent's decoded chunk

    def _path(self, index: tuple[int, ...]) -> str:
        return self._prefix + self.separator.join(map(str, index + (0,) * (len(self.shape) - len(index))))

    def _decode(self, index: tuple[int, ...]) -> np.ndarray:
        """The chunk at chunk ``index``, decoded (a whole chunk: the last one of an array is padded)."""
        if self._cached is None or self._cached[0] != index:
            out = np.empty(self.chunks, self.dtype)
            self._decode_into(index, out)
            self._cached = (index, out)
        return self._cached[1]

    def _decode_into(self, index: tuple[int, ...], out: np.ndarray) -> None:
        """Decode the compressed chunk at chunk ``index`` into ``out`` (contiguous, of the chunk's size)."""
        path = self._path(index)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            # pack() writes every chunk: a missing one is a damaged or incomplete copy, not a fill value
            raise DataError(path, "missing chunk") from None
        try:
            if self.codec.codec_id == "blosc":  # Blosc decodes a truncated chunk without complaint
                expected = int.from_bytes(data[12:16], "little")  # the header's compressed size
                if expected != len(data):
                    raise ValueError(f"{len(data)} bytes, its header says {expected}")
            self.codec.decode(data, out=out)
        except Exception as err:  # codecs raise several types (RuntimeError, ValueError, ...) on bad bytes
            raise DataError(path, f"unreadable chunk ({err})") from None

    def _read_samples(self, index: tuple[int, ...], members: list[tuple[int, np.ndarray]]) -> None:
        """Samples of the uncompressed chunk at ``index``: each (position in the chunk, target) read from the
        file straight into its target, a contiguous view of the batch (one copy, from the page cache)."""
        path = self._path(index)
        sample_bytes = members[0][1].nbytes
        try:
            with open(path, "rb", buffering=0) as f:
                if os.fstat(f.fileno()).st_size != sample_bytes * self.samples_per_chunk:
                    raise DataError(path, f"unreadable chunk (not {sample_bytes * self.samples_per_chunk} bytes)")
                for position, target in members:
                    f.seek(position * sample_bytes)
                    if f.readinto(target.reshape(-1).view(np.uint8)) != sample_bytes:
                        raise DataError(path, "unreadable chunk (ends early)")
        except FileNotFoundError:
            raise DataError(path, "missing chunk") from None

    def read_rows(self, rows: Sequence[int], seasons: Sequence[Sequence[int]] | None = None,
                  as_tensor: bool = False) -> np.ndarray | torch.Tensor:
        """Samples ``rows`` stacked ([n, ...] as written); with ``seasons`` (one list per row, all of one
        length), only those positions of each sample's first axis. Each chunk file is opened once and read
        into the batch (uncompressed) or decoded once. ``as_tensor``: a torch tensor (numbers only), in shared
        memory inside a DataLoader worker (:func:`empty_batch`)."""
        rows = np.asarray(rows, np.int64)
        k = self.samples_per_chunk
        if self.per_season:
            seasons = np.tile(np.arange(self.shape[1]), (len(rows), 1)) if seasons is None else np.asarray(seasons)
            tensor, out = empty_batch((len(rows), seasons.shape[1], *self.shape[2:]), self.dtype, as_tensor)
            places = [((int(rows[r] // k), int(seasons[r, t])), int(rows[r] % k), (r, slice(t, t + 1)))
                      for r in range(len(rows)) for t in range(seasons.shape[1])]
        else:
            tensor, out = empty_batch((len(rows), *self.shape[1:]), self.dtype, as_tensor)
            places = [((int(rows[r] // k),), int(rows[r] % k), slice(r, r + 1)) for r in range(len(rows))]
        chunks: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for index, position, place in places:  # slices: views into ``out``, also for one number per sample
            chunks.setdefault(index, []).append((position, out[place]))
        for index, members in chunks.items():
            if self.codec is None:
                self._read_samples(index, members)
            elif k == 1:  # a chunk of one sample: decoded straight into the batch
                self._decode_into(index, members[0][1])
            else:
                decoded = self._decode(index)
                for position, target in members:
                    target[...] = decoded[position].reshape(target.shape)
        if seasons is not None and not self.per_season:  # seasons of whole samples (a season axis of 1)
            out = out[np.arange(len(rows))[:, None], np.asarray(seasons, np.int64)]
            return torch.from_numpy(out) if tensor is not None else out
        return tensor if tensor is not None else out

    def read(self, row: int, seasons: Sequence[int] | None = None) -> np.ndarray:
        """Sample ``row`` ([...] as written); with ``seasons``, only those positions of its first axis."""
        return self.read_rows([row], None if seasons is None else [list(seasons)])[0]

    def chunk_bytes(self) -> float:
        """Mean size on disk of this array's chunk files (compressed), in bytes."""
        sizes = [entry.stat().st_size for entry in os.scandir(self.folder) if not entry.name.startswith(".")]
        return float(np.mean(sizes)) if sizes else 0.0


class PackedStore:
    """Read access to the samples of one split of a packed store."""

    def __init__(self, path: Path, split: str | None, group):
        self.path, self.attrs = path, dict(group.attrs)
        splits = group["split"][:].astype(str)
        self.rows = np.flatnonzero(splits == split) if split is not None else np.arange(len(splits))
        self.ids = [str(x) for x in group["id"][:][self.rows]]
        self.variables = list(self.attrs["variables"])
        self.seasonal = set(self.attrs.get("seasonal", ()))
        #: raw_sample dtypes of the arrays stored narrower (see the module docstring)
        self.dtypes = {k: np.dtype(v) for k, v in self.attrs.get("dtypes", {}).items()}
        self.arrays = {v: ChunkedArray(path / v) for v in self.variables}

    @property
    def samples_per_chunk(self) -> int:
        """Samples per chunk of the array with the most bytes per sample: the block a chunk-aligned sampler
        keeps together (smaller arrays hold more samples per chunk, and are read once per batch anyway)."""
        def sample_bytes(a: ChunkedArray) -> int:
            return int(np.prod(a.chunks[1:])) * a.dtype.itemsize

        return max(self.arrays.values(), key=sample_bytes).samples_per_chunk

    def keep(self, positions: Sequence[int]) -> None:
        """Restrict the split to the samples at ``positions`` (e.g. BigEarthNet without its snow/cloud patches)."""
        self.rows = self.rows[list(positions)]
        self.ids = [self.ids[i] for i in positions]

    def require(self, keys: Iterable[str]) -> None:
        """Refuse a reader option whose arrays were not packed (e.g. Dynamic World masks absent at packing)."""
        missing = [k for k in keys if k not in self.arrays]
        if missing:
            raise DataError(self.path, f"packed without {missing}; it holds {self.variables}")

    def read_batch(self, indices: Sequence[int], keys: Iterable[str] | None = None,
                   seasons: Sequence[Sequence[int]] | None = None, native: bool = False) -> dict[str, Any]:
        """The raw samples ``indices`` of the split, stacked: arrays ``keys`` (default: all) [n, ...], and of
        the ``seasonal`` ones only ``seasons`` (one list per index; default: all); ``id``: the n ids. Arrays
        stored narrower come back in their ``raw_sample`` dtype; with ``native`` as stored, and as torch
        tensors (in shared memory inside a DataLoader worker: see :func:`empty_batch`)."""
        rows = self.rows[np.asarray(indices, np.int64)]
        out: dict[str, Any] = {}
        for key in self.variables if keys is None else keys:
            value = self.arrays[key].read_rows(rows, seasons if key in self.seasonal else None, as_tensor=native)
            out[key] = value if native or key not in self.dtypes else value.astype(self.dtypes[key])
        out["id"] = [self.ids[i] for i in indices]
        return out

    def read(self, index: int, keys: Iterable[str] | None = None,
             seasons: Sequence[int] | None = None) -> dict[str, Any]:
        """The raw sample ``index`` of the split: arrays ``keys`` (default: all), and of the ``seasonal``
        ones only ``seasons`` (default: all); nothing else is read from disk."""
        batch = self.read_batch([index], keys, None if seasons is None else [list(seasons)])
        out = {}
        for key, value in batch.items():
            value = value[0]
            out[key] = value.item() if isinstance(value, np.generic) and value.dtype.kind in "US" else value
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
