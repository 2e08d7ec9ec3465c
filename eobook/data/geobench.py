"""GEO-Bench reader: one HDF5 per sample, one dataset per band, partitions and band statistics.

Lacoste, A., et al. (2023). GEO-Bench: Toward foundation models for Earth monitoring. NeurIPS D&B.

Layout: ``<root>/{classification,segmentation}_v1.0/<task>/<sample>.hdf5`` plus, per task,
``band_stats.json`` and ``{0.01x,...,1.00x}_train_partition.json`` (or ``default_partition.json``),
each ``{"train": [...], "valid": [...], "test": [...]}``. ``root`` may also be the task folder itself.

Band datasets are named as GEO-Bench's ``Band.get_descriptor``: the band's name, with ``_<date>`` appended
where the band has a date (m-cashew-plantation: ``"02 - Blue_2019-11-05"``); a sample holding one band on
several dates is refused. The reader returns the task's Sentinel-2 bands (those of ``GEOBENCH_S2_BANDS`` that
``band_stats.json`` lists): m-so2sat's 8 Sentinel-1 channels and the cloud-probability band of
m-cashew-plantation and m-SA-crop-type are not read. ``GEOBENCH_TASKS`` records each task's label kind and
classes (from GEO-Bench's converters); labels outside them are errors naming the file.

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

from .bands import GEOBENCH_S2_BANDS, GEOBENCH_TASKS
from .base import HDF5_ERRORS, DataError, EODataset, check_values, read_json, require_size, to_tensors
from .store import open_packed
from .transforms import standardize

#: Folder names of GEO-Bench's converters (``DATASET_NAME``) for the benchmark's task names.
TASK_ALIASES = {"brick_kiln_v1.0": "m-brick-kiln"}
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


def band_datasets(path: Path, f, bands) -> list[str]:
    """The dataset of each band in an open GEO-Bench HDF5: its name, or its name with a date appended."""
    names, missing = [], []
    keys = list(f.keys())
    for band in bands:
        if band in f:
            names.append(band)
            continue
        dated = [k for k in keys if k.startswith(band + "_")]
        if len(dated) > 1:
            raise DataError(path, f"band {band!r} on {len(dated)} dates ({dated[:3]}...): the reader reads "
                                  "single-date samples")
        (names.append(dated[0]) if dated else missing.append(band))
    if missing:
        raise DataError(path, f"missing band dataset(s) {missing}")
    return names


def check_label(path: Path, label: np.ndarray, spec) -> None:
    """Refuse a label that does not fit the task's kind and class count."""
    n = len(spec.classes)
    if spec.kind == "segmentation":
        if label.ndim != 2:
            raise DataError(path, f"label of shape {label.shape}, a segmentation task has a [H, W] mask")
        if label.min() < 0 or label.max() >= n:
            bad = sorted(set(label[(label < 0) | (label >= n)].tolist()))[:5]
            raise DataError(path, f"label value(s) {bad}, expected the task's classes 0..{n - 1}")
    elif spec.kind == "multilabel":
        if label.shape != (n,) or not np.isin(label, (0, 1)).all():
            raise DataError(path, f"label of shape {label.shape}, expected a {n}-class multi-hot vector")
    elif label.ndim != 0 or not 0 <= int(label) < n:
        raise DataError(path, f"label {label.tolist()}, expected one class index 0..{n - 1}")


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

    LAYOUT = ("{classification,segmentation}_v1.0/<task>/ folders (or one task folder) with band_stats.json, "
              "*_partition.json and one <sample>.hdf5 per sample")

    def __init__(self, root, task: str | None = None, split: str = "train", partition: str = "1.00x",
                 normalize: bool = True, size: int | None = None, on_error: str = "raise"):
        if split not in _SPLIT_NAME:
            raise ValueError(f"split: expected one of {tuple(_SPLIT_NAME)}, got {split!r}")
        self.root, self.task, self.split = Path(root), task, _SPLIT_NAME[split]
        self.partition, self.normalize, self.size = partition, normalize, size
        store = open_packed(self.root, type(self).__name__, self.split)
        super().__init__(on_error, store)
        if store is not None:
            self._set_task(store.attrs.get("task") or task)
            self.samples, self.band_stats = store.ids, store.attrs["band_stats"]
            self.bands = tuple(store.attrs["bands"])
            return
        self.task_dir = find_task_dir(self.root, task)
        self._set_task(self.task_dir.name)
        self.band_stats = read_json(self.task_dir / "band_stats.json")
        self.bands = tuple(b for b in GEOBENCH_S2_BANDS if b in self.band_stats)
        partition_file = self._partition_file()
        parts = read_json(partition_file)
        if self.split not in parts:
            raise DataError(partition_file, f"no {self.split!r} list (has {sorted(parts)})")
        self.samples = list(parts[self.split])
        sidecar = self.task_dir / "labels.json"
        self.sidecar_labels = read_json(sidecar) if sidecar.is_file() else None

    def _set_task(self, name: str | None) -> None:
        """Label kind and classes of a task the book knows (``GEOBENCH_TASKS``); else taken from the labels."""
        self.task_name = name
        spec = GEOBENCH_TASKS.get(TASK_ALIASES.get(name or "", name or ""))
        self.spec = spec
        if spec is not None:
            self.label_kind = "scene" if spec.kind == "multiclass" else spec.kind
            self.classes = spec.classes

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
                s2 = np.stack([f[name][()] for name in band_datasets(path, f, self.bands)]).astype(np.float32)  # [C,H,W]
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
        if self.spec is not None:
            check_label(path, label, self.spec)
        return {"s2": s2, "label": label, "id": name}

    def to_sample(self, raw: dict[str, Any]) -> dict[str, Any]:
        sample = dict(raw)
        if self.normalize:
            mean = [self.band_stats[b]["mean"] for b in self.bands]
            std = [self.band_stats[b]["std"] for b in self.bands]
            sample["s2"] = standardize(raw["s2"], mean, std)
        return to_tensors(sample)
