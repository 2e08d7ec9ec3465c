"""GEO-Bench reader: one HDF5 per sample, one dataset per band, partitions and band statistics.

Lacoste, A., et al. (2023). GEO-Bench: Toward foundation models for Earth monitoring. NeurIPS D&B.

Layout: ``<root>/{classification,segmentation}_v1.0/<task>/<sample>.hdf5`` plus, per task,
``band_stats.json`` and ``{0.01x,...,1.00x}_train_partition.json`` (or ``default_partition.json``),
each ``{"train": [...], "valid": [...], "test": [...]}``. ``root`` may also be the task folder itself.

Labels: segmentation tasks store a ``label`` band dataset. Classification tasks keep the label in a
pickled ``attrs["pickle"]`` that references GEO-Bench's own classes. The book never runs that pickle:
:func:`read_pickled_label` replays it with an unpickler that builds only plain containers and numpy
scalars/arrays and turns every other class into an inert placeholder. A ``labels.json`` sidecar
(``{sample: label}``) in the task folder takes precedence when present.

Normalisation: per-band z-score with the task's ``band_stats.json`` (GEO-Bench's convention).
"""
from __future__ import annotations

import ast
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .bands import GEOBENCH_S2_BANDS
from .base import HDF5_ERRORS, DataError, EODataset, check_values, read_json, require_size, to_tensors
from .store import open_packed
from .transforms import standardize

_SPLIT_NAME = {"train": "train", "val": "valid", "valid": "valid", "test": "test"}
_NUMPY_RECONSTRUCTORS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _Inert:
    """Stands in for any class a pickle names: accepts arguments and state, does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_RECONSTRUCTORS:
            return super().find_class(module, name)
        return _Inert


def read_pickled_label(path: Path, attrs) -> Any:
    """The ``label`` entry of a GEO-Bench ``attrs["pickle"]`` without executing foreign code."""
    blob = attrs.get("pickle")
    if blob is None:
        raise DataError(path, "no 'pickle' attribute holding the label (and no labels.json sidecar)")
    if isinstance(blob, str):  # stored as the repr of a bytes object
        try:
            blob = ast.literal_eval(blob)
        except (ValueError, SyntaxError):
            raise DataError(path, "the 'pickle' attribute is not a bytes literal") from None
    try:
        meta = _RestrictedUnpickler(io.BytesIO(bytes(blob))).load()
    except Exception as err:  # a corrupt pickle can raise nearly anything
        raise DataError(path, f"corrupt label pickle ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict) or "label" not in meta:
        raise DataError(path, "the label pickle holds no 'label' entry")
    return meta["label"]


def find_task_dir(root: Path, task: str | None) -> Path:
    if task is None:
        if (root / "band_stats.json").is_file():
            return root
        raise DataError(root, "no band_stats.json here: pass task=... to pick a task folder")
    for candidate in (root / task, *sorted(root.glob(f"*_v1.0/{task}"))):
        if candidate.is_dir():
            return candidate
    raise DataError(root, f"no task folder {task!r} (looked in ./ and */_v1.0/)")


class GeoBench(EODataset):
    """A GEO-Bench task as ``{"s2", "label", "id"}``.

    Sample:
        s2: float32 [C, H, W], the task's Sentinel-2 band datasets in L1C order (``GEOBENCH_S2_BANDS``).
        label: int64 scalar (single-label classification), float32 [K] multi-hot (multi-label), or
            int64 [H, W] (segmentation).

    Args:
        root: the GEO-Bench folder, a task folder, or a packed store.
        task: task folder name (e.g. ``m-eurosat``); None when ``root`` is the task folder.
        split: ``train``, ``val``/``valid`` or ``test``.
        partition: training-label fraction, e.g. ``"1.00x"`` or ``"0.10x"``; ``"1.00x"`` falls back
            to ``default_partition.json`` (the same partition) when its own file is absent.
        normalize, size, on_error: as in :class:`~eobook.data.BigEarthNetMM`.
    """

    def __init__(self, root, task: str | None = None, split: str = "train", partition: str = "1.00x",
                 normalize: bool = True, size: int | None = None, on_error: str = "raise"):
        if split not in _SPLIT_NAME:
            raise ValueError(f"split: expected one of {tuple(_SPLIT_NAME)}, got {split!r}")
        self.root, self.task, self.split = Path(root), task, _SPLIT_NAME[split]
        self.partition, self.normalize, self.size = partition, normalize, size
        store = open_packed(self.root, type(self).__name__, self.split)
        super().__init__(on_error, store)
        if store is not None:
            self.samples, self.band_stats = store.ids, store.attrs["band_stats"]
            self.bands = tuple(store.attrs["bands"])
            return
        self.task_dir = find_task_dir(self.root, task)
        self.band_stats = read_json(self.task_dir / "band_stats.json")
        self.bands = tuple(b for b in GEOBENCH_S2_BANDS if b in self.band_stats)
        partition_file = self._partition_file()
        parts = read_json(partition_file)
        if self.split not in parts:
            raise DataError(partition_file, f"no {self.split!r} list (has {sorted(parts)})")
        self.samples = list(parts[self.split])
        sidecar = self.task_dir / "labels.json"
        self.sidecar_labels = read_json(sidecar) if sidecar.is_file() else None

    def _partition_file(self) -> Path:
        path = self.task_dir / f"{self.partition}_train_partition.json"
        if not path.is_file() and self.partition == "1.00x" and (self.task_dir / "default_partition.json").is_file():
            return self.task_dir / "default_partition.json"
        return path

    def __len__(self) -> int:
        return len(self.samples)

    def raw_sample(self, index: int) -> dict[str, Any]:
        import h5py

        name = self.samples[index]
        path = self.task_dir / f"{name}.hdf5"
        if not path.is_file():
            raise DataError(path, "missing file")
        try:
            with h5py.File(path, "r") as f:
                missing = [b for b in self.bands if b not in f]
                if missing:
                    raise DataError(path, f"missing band dataset(s) {missing}")
                s2 = np.stack([f[b][()] for b in self.bands]).astype(np.float32)  # [C, H, W]
                if "label" in f:
                    label = f["label"][()].astype(np.int64)  # segmentation mask [H, W]
                elif self.sidecar_labels is not None:
                    label = self.sidecar_labels[name]
                else:
                    label = read_pickled_label(path, f.attrs)
        except DataError:
            raise
        except HDF5_ERRORS as err:
            raise DataError(path, f"unreadable or corrupt HDF5 ({type(err).__name__}: {err})") from None
        require_size(path, s2, self.size)
        check_values(path, s2)
        label = np.asarray(label)
        if label.ndim == 2 and label.shape != s2.shape[-2:]:
            raise DataError(path, f"label mask {label.shape}, bands {s2.shape[-2:]}")
        label = label.astype(np.int64) if label.ndim != 1 else label.astype(np.float32)
        return {"s2": s2, "label": label, "id": name}

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        sample = dict(raw)
        if self.normalize:
            mean = [self.band_stats[b]["mean"] for b in self.bands]
            std = [self.band_stats[b]["std"] for b in self.bands]
            sample["s2"] = standardize(raw["s2"], mean, std)
        return to_tensors(sample)
