"""What every reader shares: the error type, the skip policy, checked GeoTIFF/HDF5 reading.

Readers split their work in two: ``raw_sample(i)`` returns numpy arrays as they lie on disk (after
resampling to a common grid) and ``to_sample(raw)`` turns them into tensors (normalisation, label
mapping). The packed store (:mod:`eobook.data.store`) saves ``raw_sample`` output, so the same class
reads a folder or a packed store and returns identical samples.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


class DataError(ValueError):
    """Bad input data: the message names the file and what is wrong with it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


#: What h5py raises on damaged files and objects (besides OSError it surfaces HDF5 errors as KeyError,
#: ValueError, RuntimeError or TypeError); readers turn these into a DataError naming the file.
HDF5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError)


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

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        index %= n
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


def to_tensors(sample: dict[str, Any]) -> dict[str, Any]:
    """numpy arrays -> torch tensors (strings and ints pass through)."""
    return {k: (torch.from_numpy(np.ascontiguousarray(v)) if v.ndim else torch.tensor(v.item()))
            if isinstance(v, (np.ndarray, np.generic)) else v for k, v in sample.items()}


# --------------------------------------------------------------------------------------------------
# Checked reading
# --------------------------------------------------------------------------------------------------
def read_tif(path: Path, dtypes: Sequence[str] | None = None, bands: int | None = None,
             crs_required: bool = False, nodata_check: bool = True) -> np.ndarray:
    """Read all bands of a GeoTIFF as [C, H, W], refusing missing, corrupt or implausible files.

    Args:
        path: the file.
        dtypes: accepted numpy dtype names (None: any).
        bands: required band count (None: any).
        crs_required: refuse files without a coordinate reference system.
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
            if bands is not None and src.count != bands:
                raise DataError(path, f"{src.count} bands, expected {bands}")
            if crs_required and src.crs is None:
                raise DataError(path, "no CRS (georeferencing missing)")
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

