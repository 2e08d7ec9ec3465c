"""Packing a dataset into the store that :mod:`eobook.data.store` reads (see its docstring for the layout).

``pack(datasets, out, attrs)`` writes, through xarray, every ``raw_sample`` of one or more readers;
``prepare(name, root, out)`` does it for a dataset folder. Giving the store's path as ``root`` to the same
reader class reads it back, so a folder and its packed copy yield the same samples (see the store for the one
rounding).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .base import DataError
from .readers import READERS
from .ssl4eo import MODALITIES as SSL4EO_MODALITIES
from .ssl4eo import MULTILABEL_FILE, SEASONAL_KEYS
from .store import FORMAT

ID_WIDTH = 160  # characters kept of string values (patch ids are < 100)
#: Samples per chunk: a power of two, at most this many (a batch of 256 then spans at least 4 chunks, and the
#: chunk-aligned sampler's blocks stay small against an epoch) ...
MAX_SAMPLES_PER_CHUNK = 64
#: ... and at most this many bytes per chunk, decoded (a 264 px SSL4EO-S12 season of 13 int16 bands is
#: 1.8 MB: 2 per chunk; a 120 px BigEarthNet S2 patch is 0.35 MB: 8 per chunk; labels: 64 per chunk). Beyond a
#: few MB a chunk file costs its bytes, not its opening, so larger chunks would only coarsen the shuffle.
CHUNK_BYTES = 4 << 20
BATCH = 128  # samples appended per xarray write (a multiple of every chunk): bounds memory for any dataset


def samples_per_chunk(sample_bytes: int) -> int:
    """Samples per chunk of an array whose samples (or seasons of a sample) take ``sample_bytes``."""
    k = 1
    while k < MAX_SAMPLES_PER_CHUNK and 2 * k * sample_bytes <= CHUNK_BYTES:
        k *= 2
    return k


#: How chunks are stored (see :mod:`eobook.data.store` for the choice): ``none`` is read straight into the
#: batch (about 13 GB/s on one core, from the page cache); ``lz4`` (Blosc LZ4 with byte shuffle) stores int16
#: reflectances at 0.6-0.8 of their size and decodes at about 3 GB/s per core.
COMPRESSIONS = ("none", "lz4")


def compressor(compression: str = "none"):
    """The chunks' codec for ``compression`` (None: stored as they are)."""
    from numcodecs import Blosc

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression: expected one of {COMPRESSIONS}, got {compression!r}")
    return None if compression == "none" else Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)


def _narrow(key: str, stacked: np.ndarray, dtype: str | None, where: Path) -> np.ndarray:
    """``stacked`` in the reader's narrower storage ``dtype`` (None: as it is), refusing a lossy cast of
    integers. Floats stored as integers are the S2 reflectances that ``raw_sample`` resampled to the 10 m grid
    (integer DN in the files): rounded to whole DN and clipped to the dtype's range (see :mod:`eobook.data.store`)."""
    if dtype is None:
        return stacked
    if stacked.dtype.kind == "f" and np.dtype(dtype).kind in "iu":
        limits = np.iinfo(dtype)
        return np.clip(np.rint(stacked), limits.min, limits.max).astype(dtype)
    narrow = stacked.astype(dtype)
    if not np.array_equal(narrow, stacked):
        raise DataError(where, f"{key}: values outside {dtype}, the reader's storage dtype for it")
    return narrow


def _to_dataset(samples: list[dict[str, Any]], splits: list[str | None], dtypes: dict[str, str], where: Path):
    """Raw samples (and the split of each) -> xarray Dataset with a leading ``sample`` dimension."""
    import xarray as xr

    variables = {}
    for key in samples[0]:
        if key in ("id", "seasons"):
            continue
        stacked = _narrow(key, np.stack([np.asarray(s[key]) for s in samples]), dtypes.get(key), where)
        if stacked.dtype.kind == "U":  # fixed width, so that appended batches share one dtype
            stacked = stacked.astype(f"<U{ID_WIDTH}")
        dims = ("sample", *[f"{key}_{i}" for i in range(1, stacked.ndim)])
        variables[key] = (dims, stacked)
    coords = {"id": ("sample", np.array([str(s["id"]) for s in samples], dtype=f"<U{ID_WIDTH}")),
              "split": ("sample", np.array([split or "" for split in splits], dtype=f"<U{ID_WIDTH}"))}
    return xr.Dataset(variables, coords=coords)


def _encoding(ds, seasonal: Sequence[str], compression: str) -> dict[str, dict[str, Any]]:
    """Chunks of several samples (whole, or one season of each for the ``seasonal`` variables); the codec of
    ``compression``."""
    encoding = {}
    for v in ds.data_vars:
        shape = ds[v].shape[1:]
        per_chunk = shape[1:] if v in seasonal else shape
        k = samples_per_chunk(int(np.prod(per_chunk, dtype=np.int64)) * ds[v].dtype.itemsize)
        chunks = (k, 1, *shape[1:]) if v in seasonal else (k, *shape)
        encoding[v] = {"chunks": chunks, "compressors": compressor(compression)}
    return encoding


def _batches(datasets: Iterable[tuple[str | None, Any]]):
    """(samples, their splits, the storage dtypes) of ``BATCH`` samples at a time across all ``datasets``, so
    that every write but the last starts and ends on chunk boundaries."""
    samples, splits, dtypes = [], [], {}
    for split, dataset in datasets:
        dtypes = {**dtypes, **getattr(dataset, "PACKED_DTYPES", {})}
        for i in range(len(dataset)):
            samples.append(dataset.raw_sample(i))
            splits.append(split)
            if len(samples) == BATCH:
                yield samples, splits, dtypes
                samples, splits = [], []
    if samples:
        yield samples, splits, dtypes


def pack(datasets: Iterable[tuple[str | None, Any]], out: Path, attrs: dict[str, Any],
         seasonal: Sequence[str] = (), compression: str = "none") -> Path:
    """Write the raw samples of ``(split, reader)`` pairs into one zarr store at ``out``.

    Args:
        datasets: (split name, reader instance) pairs; readers must use ``normalize=False`` semantics
            only in ``to_sample`` (the store keeps ``raw_sample`` output, unnormalised).
        out: the store folder (must not exist).
        attrs: stored as attributes; ``reader`` must name the reader class.
        seasonal: keys whose first axis (after ``sample``) is the season: chunked one season per chunk.
        compression: ``none`` or ``lz4`` (:data:`COMPRESSIONS`).
    """
    compressor(compression)  # refuses an unknown name before any reading
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists (remove it to re-pack)")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    first, variables, original = True, None, {}
    for samples, splits, dtypes in _batches(datasets):
        ds = _to_dataset(samples, splits, dtypes, out)
        # write_empty_chunks: zarr otherwise skips chunks equal to the fill value (a label 0, an all-water
        # mask), and the reader could not tell a skipped chunk from a lost one
        if first:
            variables = list(ds.data_vars)
            original = {k: str(np.asarray(samples[0][k]).dtype) for k in dtypes if k in ds.data_vars}
            ds.to_zarr(tmp, mode="w", encoding=_encoding(ds, seasonal, compression), consolidated=False, zarr_format=2,
                       write_empty_chunks=True)
            first = False
        else:
            ds.to_zarr(tmp, append_dim="sample", consolidated=False, zarr_format=2, write_empty_chunks=True)
    if first:
        raise DataError(out, "nothing to pack: the source has no samples")
    import zarr

    # attributes last: xarray's appends rewrite the group attributes
    zarr.open_group(str(tmp), mode="a").attrs.update(format=FORMAT, variables=variables, dtypes=original,
                                                     seasonal=[v for v in variables if v in seasonal], **attrs)
    os.replace(tmp, out)  # a store that exists is complete
    return out


def _ssl4eo_parts(root: Path, cls):
    modalities = tuple(m for m in SSL4EO_MODALITIES if (root / m).is_dir())
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


def prepare(name: str, root: Path, out: Path, task: str | None = None, split: str | None = None,
            compression: str = "none") -> Path:
    """Pack dataset ``name`` (a reader class name, e.g. ``BigEarthNetMM``) found at ``root`` into ``out``
    (``task``: GEO-Bench's or NoLDO-S12's; ``split``: NoLDO-S12's, one per store; ``compression``: see
    :data:`COMPRESSIONS`)."""
    if name not in READERS:
        raise ValueError(f"dataset: expected one of {sorted(READERS)}, got {name!r}")
    cls = READERS[name]
    root = Path(root)
    seasonal = ()
    if name == "SSL4EOS12":
        parts, attrs, seasonal = _ssl4eo_parts(root, cls)
    elif name == "GeoBench":
        parts = [(s, cls(root, task=task, split=s, normalize=False)) for s in ("train", "valid", "test")]
        attrs = {"band_stats": parts[0][1].band_stats, "bands": list(parts[0][1].bands), "task": parts[0][1].task_name}
    elif name == "MMEarth":
        parts = [(s, cls(root, split=s, normalize=False)) for s in ("train", "val", "test")]
        attrs = {"band_stats": parts[0][1].stats}
    elif name == "SEN12MS":
        parts = [(s, cls(root, split=s, normalize=False)) for s in ("train", "test")]
        attrs = {}
    elif name == "DFC2020":
        parts = [(s, cls(root, split=s, normalize=False)) for s in ("validation", "test")]
        attrs = {}
    elif name == "NoLDOS12":
        # one store per task and split: training tiles (510 px) and test tiles (512 px) differ in size
        if task not in ("dw", "osm") or split not in ("train", "test"):
            raise ValueError(f"NoLDOS12 packs one task ('dw' or 'osm') and one split ('train' or 'test') per store, "
                             f"got task={task!r}, split={split!r}")
        parts = [(f"{task}_{split}", cls(root, task=task, split=split, normalize=False))]
        attrs = {"task": task}
    elif name == "FMoWSentinel":
        raise ValueError("FMoWSentinel: its images differ in size, so they are not packed; read the folder")
    else:  # BigEarthNetMM, EuroSATMS: train / val / test lists
        parts = [(s, cls(root, split=s, normalize=False)) for s in ("train", "val", "test")]
        attrs = _bigearthnet_attrs(parts[0][1]) if name == "BigEarthNetMM" else {}
    synthetic = (root / "SYNTHETIC").is_file() or (root.parent / "SYNTHETIC").is_file()
    return pack(parts, out, {"reader": name, "source": root.name, "synthetic": synthetic, **attrs}, seasonal,
                compression)
