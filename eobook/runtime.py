"""Runtime: seeding and determinism, device and precision policy, provenance, run folders.

Every chapter calls :func:`setup_run` first. It seeds all generators, picks the device, prints the
provenance record (git sha, dirty flag, package versions, device, all parameters) and, when the chapter
runs inside a run folder, saves it there. Results are written atomically (temp file, fsync, rename)
so that a run killed at any moment never leaves a half-written file that looks complete.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .attribution import copernicus_attribution
from .resources import checkout_root

PACKAGES = (
    "torch", "torchvision", "timm", "segmentation-models-pytorch", "torchmetrics", "numpy",
    "scikit-learn", "rasterio", "h5py", "xarray", "zarr", "papermill", "eobook",
)
#: The source checkout this package runs from, or None for an installed wheel (whose provenance then records the
#: package's version and no git state: a wheel inside some other repository must not report that one's commit).
REPO_ROOT = checkout_root()


# --------------------------------------------------------------------------------------------------
# Seeding and determinism
# --------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) with one integer."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (bitwise-repeatable runs on CPU; on CUDA where kernels allow).

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` set before its first call to be deterministic.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled


# --------------------------------------------------------------------------------------------------
# Device and precision
# --------------------------------------------------------------------------------------------------
def choose_device(preference: str = "auto") -> torch.device:
    """The device to compute on: ``auto`` picks cuda > mps > cpu; a name forces that device.

    Under ``torchrun`` each process takes the GPU of its ``LOCAL_RANK``.
    """
    valid = ("auto", "cpu", "cuda", "mps")
    kind = preference.split(":")[0]
    if kind not in valid:
        raise ValueError(f"device: expected one of {valid} (optionally 'cuda:N'), got {preference!r}")
    if kind == "auto":
        if torch.cuda.is_available():
            kind = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            kind = "mps"
        else:
            kind = "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' was requested but torch sees no CUDA device")
        if ":" in preference:
            return torch.device(preference)
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if kind == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device: 'mps' was requested but it is not available")
    return torch.device(kind)


def amp_dtype(device: torch.device, preference: str = "auto") -> torch.dtype | None:
    """Mixed-precision policy: autocast only on CUDA (bf16 where supported, else fp16).

    On CPU, bf16/fp16 autocast is 10-100x slower than fp32 on common hardware, so ``auto`` returns
    ``None`` (plain fp32) there; asking for ``bf16``/``fp16`` on a CPU is refused rather than slow.
    """
    valid = ("auto", "off", "bf16", "fp16")
    if preference not in valid:
        raise ValueError(f"amp: expected one of {valid}, got {preference!r}")
    if preference == "off":
        return None
    if device.type != "cuda":
        if preference != "auto":
            raise ValueError(f"amp: {preference!r} is only used on CUDA (this run is on {device.type})")
        return None
    if preference == "fp16":
        return torch.float16
    if preference == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context that autocasts to ``dtype`` on ``device``, or does nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# Distributed (torchrun) facts
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank facts from the process group if one is initialised, else from torchrun's environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return DistInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (nccl on CUDA, gloo on CPU); else no-op."""
    info = dist_info()
    if info.world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
        info = dist_info()
    return info


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Any]:
    """Open a temp file beside ``path`` for binary writing; on success fsync it and rename it to ``path``.

    Readers see the old file or the whole new one, never a part: a run killed mid-write leaves at most
    a ``.<name>.*.tmp`` file, which checkpoint listing ignores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_file` (a kill mid-write leaves the old checkpoint intact)."""
    with atomic_file(path) as f:
        torch.save(obj, f)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def require_free_disk(path: str | os.PathLike, needed_bytes: int) -> None:
    """Refuse to start writing ``needed_bytes`` under ``path`` when the disk has less free space."""
    path = Path(path)
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise OSError(f"{path}: needs {needed_bytes / 2**30:.2f} GiB free, the disk has {free / 2**30:.2f} GiB")


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------
def git_state(repo: Path | None = REPO_ROOT) -> dict[str, Any]:
    """The commit this code came from and whether the work tree differs from it (both None outside a checkout)."""
    if repo is None:
        return {"sha": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda, {torch.cuda.device_count()} visible)"
    return f"{device.type}: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def provenance(params: dict[str, Any], device: torch.device, command: list[str] | None = None) -> dict[str, Any]:
    """Everything a reader needs to re-run exactly: command, git sha, versions, device, parameters."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else _command_from_env(),
        "git": git_state(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": device_description(device),
        "torch_threads": torch.get_num_threads(),
        "parameters": params,
    }


def _command_from_env() -> list[str]:
    """The CLI command that launched a Papermill run (set by ``python -m eobook run``), else argv."""
    recorded = os.environ.get("EOBOOK_COMMAND")
    return json.loads(recorded) if recorded else list(sys.argv)


# --------------------------------------------------------------------------------------------------
# Run folder
# --------------------------------------------------------------------------------------------------
class RunFolder:
    """One run's folder: executed notebook, ``metrics.json``, figures (PNG), ``provenance.json``.

    ``metrics.json`` carries ``"status": "complete"`` only when the chapter called :meth:`finish`;
    partial metrics written along the way say ``"status": "running"``.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        if self.path is not None:
            (self.path / "figures").mkdir(parents=True, exist_ok=True)
        self.metrics: dict[str, Any] = {}
        self.started = time.monotonic()

    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.path is None else self.path / "checkpoints"

    def log_metrics(self, **values: Any) -> None:
        """Add results; written at once with status "running"."""
        self.metrics.update(values)
        self._write(status="running")

    def finish(self) -> None:
        """Mark the run complete, with its wall time since the folder was opened (the chapter's setup)."""
        self.metrics["wall_seconds"] = round(time.monotonic() - self.started, 1)
        self._write(status="complete")

    def _write(self, status: str) -> None:
        if self.path is not None:
            atomic_write_json(self.path / "metrics.json", {"status": status, **self.metrics})

    def savefig(self, fig, name: str, dpi: int = 110) -> None:
        """Save a matplotlib figure as ``figures/<name>.png`` (no-op outside a run folder). Returns nothing, so
        that a cell ending with it shows the figure and no path."""
        if self.path is None:
            return
        target = self.path / "figures" / f"{name}.png"
        tmp = target.with_name(f".{target.name}.tmp.png")
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, target)


@dataclasses.dataclass
class Run:
    """What :func:`setup_run` hands back to a chapter."""
    config: Any
    device: torch.device
    amp_dtype: torch.dtype | None
    folder: RunFolder
    provenance: dict[str, Any]
    dist: DistInfo

    @property
    def synthetic(self) -> bool:
        """True when the run reads the synthetic sample world (no ``data_root``)."""
        return not self.config.data_root

    def caption(self) -> str:
        """Which profile, data and hardware produced this run's numbers, and what they are not: the line
        every results table carries."""
        profile = self.config.profile or "custom"
        data = "the synthetic sample world" if self.synthetic else "the real data"
        if self.config.smoke:
            note = "A smoke run (2 steps a stage, a handful of samples): its numbers mean nothing."
        elif profile == "full" and not self.synthetic:
            note = "The paper's settings on the paper's data: comparable with the paper's numbers."
        elif profile == "tiny":
            note = "A tiny run checks the mechanics on a toy world; it is not a reproduction."
        else:
            note = "Not a reproduction: only the full profile on the real data reproduces the paper."
        credit = "" if self.synthetic else f" {copernicus_attribution()}."
        return f"Profile '{profile}' on {data}; hardware: {self.provenance['device']}. {note}{credit}"

    def banner(self):
        """The box a chapter opens with: which profile, data and hardware produced what the reader sees, and
        that the paper's numbers need the ``full`` profile on the real data (an HTML admonition)."""
        from html import escape

        from IPython.display import HTML

        data = "the synthetic sample world" if self.synthetic else "the real datasets"
        when = self.provenance["created"][:10]
        body = (f"Everything below was computed by this notebook with the <b>{escape(self.config.profile or 'custom')}</b> "
                f"profile on {data}, on {escape(self.provenance['device'])} ({when}). It shows how the method "
                "works and whether it learns at this scale; it is not a reproduction. The paper's numbers need the "
                "<code>full</code> profile on the real data, on GPUs (see the book's Reproducibility page).")
        return HTML(f'<div class="admonition note"><p class="admonition-title">What you are reading</p><p>{body}</p></div>')


def setup_run(config: Any, out_dir: str | os.PathLike | None = None, *, verbose: bool = True) -> Run:
    """Seed, choose device and precision, and record provenance for a chapter run.

    Args:
        config: the chapter's resolved profile (a dataclass with at least ``seed``, ``device``,
            ``deterministic`` and ``amp`` fields).
        out_dir: the run folder (``None`` in an interactive session: nothing is written).
    """
    seed_everything(config.seed)
    set_deterministic(config.deterministic)
    device = choose_device(config.device)
    dtype = amp_dtype(device, config.amp)
    dist = dist_info()
    folder = RunFolder(out_dir if dist.is_main else None)  # under torchrun only rank 0 writes
    params = dataclasses.asdict(config)
    record = provenance(params, device)
    if folder.path is not None:
        atomic_write_json(folder.path / "provenance.json", record)
    folder.metrics.update(profile=getattr(config, "profile", ""), smoke=bool(getattr(config, "smoke", False)))
    if verbose:
        print_provenance(record, dtype)
        if folder.metrics["smoke"]:
            print("SMOKE RUN: every stage trains 2 steps on a handful of samples; its numbers mean nothing.")
    return Run(config, device, dtype, folder, record, dist)


def print_provenance(record: dict[str, Any], dtype: torch.dtype | None = None) -> None:
    git = record["git"]
    sha = (git["sha"] or "unknown")[:10] + (" (dirty)" if git["dirty"] else "")
    pk = record["packages"]
    print(f"eobook {pk.get('eobook')} @ {sha} | python {record['python']} | torch {pk.get('torch')} | "
          f"timm {pk.get('timm')} | smp {pk.get('segmentation-models-pytorch')}")
    print(f"device: {record['device']} | precision: {dtype or 'fp32'} | threads: {record['torch_threads']}")
    params = record["parameters"]
    print("parameters: " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
