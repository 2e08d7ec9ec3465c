"""What every reader shares: the error type, the skip policy, checked GeoTIFF/HDF5 reading.

Readers split their work in two: ``raw_sample(i)`` returns numpy arrays as they lie on disk (after
resampling to a common grid) and ``to_sample(raw)`` turns them into tensors (normalisation, label
mapping). The packed store (:mod:`eobook.data.store`) saves ``raw_sample`` output, so the same class
reads a folder or a packed store and returns the same samples (packed S2 reflectances rounded to whole DN: see
:mod:`eobook.data.store`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
CRS_POLICY = ("warn", "raise", "ignore")
#: Warnings of one kind printed per process; the rest are counted (see :func:`data_warnings`).
WARNINGS_SHOWN = 10


class DataError(ValueError):
    """Bad input data: the message names the file and what is wrong with it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


#: What h5py raises on damaged files and objects (besides OSError it surfaces HDF5 errors as KeyError,
#: ValueError, RuntimeError or TypeError); readers turn these into a DataError naming the file.
HDF5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError)


class DataWarnings:
    """What readers noticed but read anyway (a GeoTIFF without CRS, a known broken patch dropped from a list).

    Each warning is logged once per (file, problem), the first :data:`WARNINGS_SHOWN` of each problem only;
    all are counted, so ``python -m eobook data check`` can report them. One instance per process.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.first: list[tuple[str, str]] = []   # (file, problem), the first WARNINGS_SHOWN of all
        self.per_problem: dict[str, int] = {}
        self._seen: set[tuple[str, str]] = set()

    def warn(self, path: str | os.PathLike, problem: str, kind: str | None = None) -> None:
        """Record (and log, while few) that ``path`` has ``problem``; ``kind`` groups problems for the log."""
        key = (str(path), problem)
        if key in self._seen:
            return
        self._seen.add(key)
        self.count += 1
        kind = kind or problem
        n = self.per_problem[kind] = self.per_problem.get(kind, 0) + 1
        if len(self.first) < WARNINGS_SHOWN:
            self.first.append(key)
        if n <= WARNINGS_SHOWN:
            tail = " (further files with this problem are counted, not logged)" if n == WARNINGS_SHOWN else ""
            log.warning("%s: %s%s", path, problem, tail)


#: The process's data warnings (readers write, ``data check`` reads and resets).
DATA_WARNINGS = DataWarnings()


def warn_data(path: str | os.PathLike, problem: str, kind: str | None = None) -> None:
    """Warn that ``path`` has ``problem`` and go on (see :class:`DataWarnings`)."""
    DATA_WARNINGS.warn(path, problem, kind)


def check_split(split: str | None, splits, optional: bool = True) -> str | None:
    """``split`` if it is one of ``splits`` (or None when ``optional``), else a ValueError listing them."""
    if split in splits or (split is None and optional):
        return split
    raise ValueError(f"split: expected one of {tuple(splits)}{' or None' if optional else ''}, got {split!r}")


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error: expected one of {ON_ERROR}, got {on_error!r}")
    return on_error


class EODataset(Dataset):
    """Base of all readers: ``__getitem__`` = ``to_sample(raw_sample(i))`` under the error policy.

    With ``on_error="skip"`` a sample that raises :class:`DataError` is replaced by the next good one
    (index + 1, wrapping), logged as a warning and counted in :attr:`skipped`; :meth:`skip_report`
    summarises them. Each DataLoader worker keeps its own count.
    """

    #: Where a sample's label lies, how it reads ("scene": one class index, "multilabel": multi-hot,
    #: "segmentation": a class per pixel, None: no label), and the class names (for ``data check``).
    label_key: str | None = "label"
    label_kind: str | None = None
    classes: tuple[str, ...] = ()
    #: The expected on-disk layout, in a phrase (the message for a root in another layout).
    LAYOUT = ""

    def __init__(self, on_error: str = "raise", store=None):
        self.on_error = check_on_error(on_error)
        self.store = store  # a PackedStore when reading a packed copy, else None
        self.skipped: list[tuple[str, str]] = []

    # Subclasses implement these three.
    def __len__(self) -> int:
        raise NotImplementedError

    def raw_sample(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def read_raw(self, index: int) -> dict[str, Any]:
        """``raw_sample`` from the packed store when there is one, else from the native files."""
        return self.store.read(index) if self.store is not None else self.raw_sample(index)

    #: The reader converts whole batches (:meth:`to_batch`), so a DataLoader's batch is read and converted
    #: at once (:meth:`__getitems__`); else one sample at a time, as ``__getitem__`` does.
    BATCHED = False

    #: Set (by :class:`eobook.train.loop.NativeBatches`, while it reads a batch): ``to_batch`` of a packed
    #: store returns the arrays as stored, not normalised, for :meth:`device_normalization` on the device.
    native = False

    def read_raw_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """The raw samples ``indices`` stacked along a new first axis (``id`` a list): from a packed store one
        read and one decompression per chunk (:meth:`~eobook.data.store.PackedStore.read_batch`), from the
        native files one sample after the other."""
        if self.store is not None:
            return self.store.read_batch(indices, native=self.native)
        return stack_raw([self.raw_sample(i) for i in indices])

    def to_batch(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``to_sample`` of stacked raw samples: the batch ``default_collate`` makes of their samples."""
        raise NotImplementedError

    def device_normalization(self):
        """What turns a ``native`` batch into the normalised one on its device
        (:class:`~eobook.data.transforms.DeviceNormalization`); None: the reader has no native batches."""
        return None

    def __getitems__(self, indices: Sequence[int]) -> SequenceABC:
        """The samples ``indices`` (what a DataLoader asks for). A ``BATCHED`` reader reads and converts them
        as one batch and returns a :class:`CollatedBatch`, equal to ``[self[i] for i in indices]`` and
        already collated; with ``on_error="skip"`` a batch holding a bad sample is read again sample by sample."""
        n = len(self)
        indices = [self._position(i, n) for i in indices]
        if self.BATCHED:
            try:
                return CollatedBatch(self.to_batch(self.read_raw_batch(indices)), len(indices))
            except DataError:
                if self.on_error == "raise":
                    raise
        return [self[i] for i in indices]

    def _position(self, index: int, n: int) -> int:
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        return index % n

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        index = self._position(index, n)
        for attempt in range(n):
            try:
                return self.to_sample(self.read_raw((index + attempt) % n))
            except DataError as err:
                if self.on_error == "raise":
                    raise
                self.skipped.append((err.path, err.problem))
                log.warning("skipped %s (%d skipped so far)", err, len(self.skipped))
        raise DataError(type(self).__name__, f"all {n} samples failed; first: {self.skipped[0]}")

    def skip_report(self) -> str:
        """One line per skipped file, headed by the count ('' when nothing was skipped)."""
        if not self.skipped:
            return ""
        lines = [f"{type(self).__name__}: skipped {len(self.skipped)} bad sample(s)"]
        lines += [f"  {path}: {problem}" for path, problem in self.skipped]
        return "\n".join(lines)


def stack_raw(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Raw samples -> one dict of arrays with a leading batch axis (other values, e.g. ids, as lists)."""
    return {k: np.stack([s[k] for s in samples]) if isinstance(samples[0][k], (np.ndarray, np.generic))
            else [s[k] for s in samples] for k in samples[0]}


class CollatedBatch(SequenceABC):
    """A batch that a reader's ``__getitems__`` read and collated at once: ``collated`` is what
    ``default_collate`` makes of its samples, which :class:`BatchCollate` returns as it is. As a sequence it
    still yields the single samples (views of the batch), for any other collate function."""

    def __init__(self, collated: dict[str, Any], size: int):
        self.collated, self.size = collated, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.size))]
        if not -self.size <= i < self.size:
            raise IndexError(i)
        return {k: v[i] for k, v in self.collated.items()}


class BatchCollate:
    """A DataLoader's collate function that passes a :class:`CollatedBatch` through (with the default
    collation) instead of splitting it into samples and stacking them again; a picklable class, as workers
    started by spawn need."""

    def __init__(self, collate_fn: Callable | None = None):
        self.collate_fn = collate_fn or default_collate

    def __call__(self, data: Sequence) -> Any:
        if isinstance(data, CollatedBatch) and self.collate_fn is default_collate:
            return data.collated
        return self.collate_fn(data)


def to_tensors(sample: dict[str, Any]) -> dict[str, Any]:
    """numpy arrays -> torch tensors (tensors, strings and ints pass through)."""
    return {k: (torch.from_numpy(np.ascontiguousarray(v)) if v.ndim else torch.tensor(v.item()))
            if isinstance(v, (np.ndarray, np.generic)) else v for k, v in sample.items()}


# --------------------------------------------------------------------------------------------------
# Checked reading
# --------------------------------------------------------------------------------------------------
def read_tif(path: Path, dtypes: Sequence[str] | None = None, bands: int | Sequence[int] | None = None,
             crs: str = "warn", nodata_check: bool = True) -> np.ndarray:
    """Read all bands of a GeoTIFF as [C, H, W], refusing missing, corrupt or implausible files.

    Args:
        path: the file.
        dtypes: accepted numpy dtype names (None: any).
        bands: required band count, or the accepted counts (None: any).
        crs: a file without a coordinate reference system is read with a warning (``"warn"``, the default:
            several real datasets ship patches without one), refused (``"raise"``) or read (``"ignore"``).
        nodata_check: refuse NaN/inf values and patches that are entirely the file's nodata value
            (or entirely zero when the file declares none).
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    if not path.is_file():
        raise DataError(path, "missing file")
    try:
        with rasterio.open(path) as src:
            if dtypes is not None and src.dtypes[0] not in dtypes:
                raise DataError(path, f"dtype {src.dtypes[0]}, expected one of {tuple(dtypes)}")
            counts = (bands,) if isinstance(bands, int) else bands
            if counts is not None and src.count not in counts:
                expected = counts[0] if len(counts) == 1 else " or ".join(map(str, counts))
                raise DataError(path, f"{src.count} bands, expected {expected}")
            if src.crs is None and crs != "ignore":
                if crs == "raise":
                    raise DataError(path, "no CRS (georeferencing missing)")
                warn_data(path, "no CRS (georeferencing missing); read without it", kind="no CRS")
            nodata = src.nodata
            array = src.read()
    except RasterioIOError as err:
        raise DataError(path, f"unreadable or corrupt GeoTIFF ({err})") from None
    if nodata_check:
        check_values(path, array, nodata)
    return array


def check_values(path: Path | str, array: np.ndarray, nodata: float | None = None) -> None:
    """Refuse NaN/inf and all-nodata arrays (a failed export, not a scene)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(path, f"{int((~np.isfinite(array)).sum())} NaN/inf values")
    fill = 0 if nodata is None else nodata
    if array.size and (array == fill).all():
        raise DataError(path, f"all pixels are nodata ({fill})")


def as_float32(path: Path | str, array: np.ndarray) -> np.ndarray:
    """``array`` as float32, refusing values that float32 cannot hold (a damaged float64 file)."""
    with np.errstate(over="ignore"):  # reported below, naming the file
        out = array.astype(np.float32)
    if array.dtype.itemsize > 4 and array.dtype.kind == "f" and not np.isfinite(out).all():
        raise DataError(path, f"{int((~np.isfinite(out)).sum())} values beyond the float32 range")
    return out


def resample_to(array: np.ndarray, size: int, path: Path | str, order: int = 3) -> np.ndarray:
    """Resample a [C, h, w] band stack to [C, size, size] (bicubic by default, as torchvision).

    Only integer up-sampling factors (20 m and 60 m bands to the 10 m grid) and identity are accepted:
    anything else means the file does not belong to this patch.
    """
    h, w = array.shape[-2:]
    if (h, w) == (size, size):
        return array.astype(np.float32)
    if h != w or size % h:
        raise DataError(path, f"size {h}x{w} does not divide the patch size {size}")
    t = torch.from_numpy(array.astype(np.float32))[None]
    mode = "bicubic" if order == 3 else "nearest"
    kwargs = {"align_corners": False} if mode == "bicubic" else {}
    return torch.nn.functional.interpolate(t, size=(size, size), mode=mode, **kwargs)[0].numpy()


def read_json(path: Path) -> Any:
    import json

    if not path.is_file():
        raise DataError(path, "missing file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"invalid JSON ({err})") from None


def require_size(path: Path | str, array: np.ndarray, size: int | None) -> None:
    """Enforce the ``size`` parameter of a reader (None: accept what the files hold)."""
    if size is not None and array.shape[-2:] != (size, size):
        raise DataError(path, f"patch size {array.shape[-2]}x{array.shape[-1]}, the reader requires {size}x{size}")

