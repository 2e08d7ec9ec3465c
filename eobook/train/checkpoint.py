"""Checkpoints and resume: ``ckpt-<step>.pt`` files written atomically, the newest few kept, refused when
they belong to another run; the JSON-lines step log truncated back to the resumed step."""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..runtime import atomic_torch_save, require_free_disk

CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that does not belong to this run (other chapter, other model size) or is unreadable."""


def stage_dir(parent: str | os.PathLike | None, *names: str) -> Path | None:
    """The checkpoint folder of one stage of a run (a probe, a baseline seed) inside ``parent``; None when
    the run keeps no checkpoints (``parent`` None)."""
    return None if parent is None else Path(parent).joinpath(*names)


def list_checkpoints(directory: str | os.PathLike | None) -> list[Path]:
    if directory is None or not Path(directory).is_dir():
        return []
    found = [p for p in Path(directory).iterdir() if CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def newest_checkpoint(directory: str | os.PathLike | None) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def remove_stale_temp_files(directory: Path | None) -> None:
    """Delete half-written ``.ckpt-*.tmp`` files a killed run left behind (never a finished checkpoint)."""
    if directory is not None and directory.is_dir():
        for tmp in directory.glob(".ckpt-*.tmp"):
            tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, expected_meta: dict[str, Any] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint and refuse it when its ``meta`` differs from ``expected_meta``.

    Only tensors and plain containers are read (``weights_only``): a checkpoint never runs code on load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an eobook checkpoint (no 'model' entry)")
    check_meta(path, state.get("meta", {}), expected_meta or {})
    return state


def check_meta(path: Path, found: dict[str, Any], expected: dict[str, Any]) -> None:
    diffs = [f"{k}: expected {v!r}, checkpoint has {found.get(k)!r}" for k, v in expected.items() if found.get(k) != v]
    if diffs:
        raise CheckpointError(f"{path}: checkpoint does not match this run ({'; '.join(diffs)})")


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as ``ckpt-<step>.pt`` atomically (after checking the disk has room) and delete all
    but the newest ``keep`` checkpoints."""
    require_free_disk(directory, 2 * state_bytes(state))  # the new file, with room to spare
    path = atomic_torch_save(state, directory / f"ckpt-{step:08d}.pt")
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random generator a step may touch: Python, NumPy, torch (CPU, CUDA) and the step generator,
    as tensors and plain values (so that checkpoints load with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "step_generator": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["step_generator"])


def state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint state."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


class MetricsLog:
    """JSON-lines log of per-step scalars, truncated back to the resumed step on restart."""

    def __init__(self, path: Path | None, enabled: bool):
        self.path = path if enabled else None

    def truncate_after(self, step: int) -> list[dict[str, float]]:
        if self.path is None or not self.path.exists():
            return []
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                break
            if row.get("step", -1) < step:
                kept.append(row)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def append(self, row: dict[str, float]) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
