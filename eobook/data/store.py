"""Packed store: a dataset's raw samples in one chunked zarr store (one chunk per sample).

``pack(dataset, out)`` writes, through xarray, every ``raw_sample`` of a reader (one variable per key,
leading ``sample`` dimension, chunks of one sample) plus ``id`` and ``split`` coordinates and the
reader's class name in the attributes. Giving the store's path as ``root`` to the same reader class
reads it back (:func:`open_packed`), so a folder and its packed copy yield identical samples.

Reading goes through zarr directly (one chunk read per variable per sample): opening an xarray
Dataset per item would cost more than the read itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .base import DataError

FORMAT = "eobook-packed-v1"
ID_WIDTH = 160  # characters kept of string values (patch ids are < 100)
BATCH = 128  # samples appended per xarray write: bounds memory for datasets of any size


def is_packed(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zgroup").is_file())


class PackedStore:
    """Read access to the samples of one split of a packed store, opened lazily per process."""

    def __init__(self, path: Path, split: str | None):
        import zarr

        self.path = path
        group = zarr.open_group(str(path), mode="r")
        self.attrs = dict(group.attrs)
        splits = group["split"][:].astype(str)
        self.rows = np.flatnonzero(splits == split) if split is not None else np.arange(len(splits))
        self.ids = [str(x) for x in group["id"][:][self.rows]]
        self.variables = [v for v in self.attrs["variables"]]
        self._group, self._pid = None, None

    def _arrays(self):
        import zarr

        if self._group is None or self._pid != os.getpid():
            self._group, self._pid = zarr.open_group(str(self.path), mode="r"), os.getpid()
            self._cache = {v: self._group[v] for v in self.variables}
        return self._cache

    def __getstate__(self):
        return {**self.__dict__, "_group": None, "_pid": None, "_cache": None}

    def read(self, index: int) -> dict[str, Any]:
        row = int(self.rows[index])
        try:
            out = {v: array[row] for v, array in self._arrays().items()}
        except Exception as err:  # zarr/codec errors on a damaged chunk have many types
            raise DataError(self.path, f"sample {row}: unreadable chunk ({err})") from None
        out = {k: (v.item() if v.dtype.kind in "US" and v.ndim == 0 else v) for k, v in out.items()}
        out["id"] = self.ids[index]
        return out


def open_packed(root: Path, reader: str, split: str | None) -> PackedStore | None:
    """The packed store at ``root`` if it is one (checked to belong to ``reader``), else None."""
    if not is_packed(root):
        return None
    store = PackedStore(root, split)
    if store.attrs.get("format") != FORMAT or store.attrs.get("reader") != reader:
        raise DataError(root, f"packed store of {store.attrs.get('reader')!r}, not {reader!r}")
    return store


def _to_dataset(samples: list[dict[str, Any]], split: str):
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


def pack(datasets: Iterable[tuple[str | None, Any]], out: Path, attrs: dict[str, Any]) -> Path:
    """Write the raw samples of ``(split, reader)`` pairs into one zarr store at ``out``.

    Args:
        datasets: (split name, reader instance) pairs; readers must use ``normalize=False`` semantics
            only in ``to_sample`` (the store keeps ``raw_sample`` output, unnormalised).
        out: the store folder (must not exist).
        attrs: stored as attributes; ``reader`` must name the reader class.
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
            if first:
                variables = list(ds.data_vars)
                encoding = {v: {"chunks": (1, *ds[v].shape[1:])} for v in ds.data_vars}
                ds.to_zarr(tmp, mode="w", encoding=encoding, consolidated=False, zarr_format=2)
                first = False
            else:
                ds.to_zarr(tmp, append_dim="sample", consolidated=False, zarr_format=2)
    if first:
        raise DataError(out, "nothing to pack: the source has no samples")
    import zarr

    # attributes last: xarray's appends rewrite the group attributes
    zarr.open_group(str(tmp), mode="a").attrs.update(format=FORMAT, variables=variables, **attrs)
    os.replace(tmp, out)  # a store that exists is complete
    return out


def _ssl4eo_parts(root: Path, cls):
    from .ssl4eo import MODALITIES, MULTILABEL_FILE

    modalities = tuple(m for m in MODALITIES if (root / m).is_dir())
    reader = cls(root, modalities=modalities, seasons="all", dw_labels=(root / "dw").is_dir(),
                 multilabels=(root / MULTILABEL_FILE).is_file(), normalize=False)
    return [(None, reader)], {"modalities": list(modalities)}


def prepare(name: str, root: Path, out: Path, task: str | None = None) -> Path:
    """Pack dataset ``name`` (a reader class name, e.g. ``BigEarthNetMM``) found at ``root`` into ``out``."""
    from . import READERS

    if name not in READERS:
        raise ValueError(f"dataset: expected one of {sorted(READERS)}, got {name!r}")
    cls = READERS[name]
    root = Path(root)
    if name == "SSL4EOS12":
        parts, attrs = _ssl4eo_parts(root, cls)
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
        attrs = {"layout": getattr(parts[0][1], "layout", None)} if name == "BigEarthNetMM" else {}
    synthetic = (root / "SYNTHETIC").is_file() or (root.parent / "SYNTHETIC").is_file()
    return pack(parts, out, {"reader": name, "source": root.name, "synthetic": synthetic, **attrs})
