"""The one training loop every chapter uses.

A chapter hands :func:`fit` a *pretraining module*: an ``nn.Module`` whose ``forward(batch, ctx)``
returns a dict with a scalar ``"loss"`` (and any other scalars to log). Teachers, momentum encoders and
centres live inside that module as buffers or frozen parameters, so one ``state_dict`` checkpoints all of
it and one ``DistributedDataParallel`` wrapper synchronises the gradients of what trains.

Optional hooks the module may define (called on the unwrapped module):

* ``param_groups(weight_decay)``: custom optimiser groups (default: no decay for biases, norms, tokens).
* ``on_after_backward(ctx)``: e.g. DINO cancels the last layer's gradients in epoch 0.
* ``on_step_end(ctx)``: e.g. EMA updates of a teacher, after the optimiser step.
* ``on_epoch_end(ctx)``: anything per epoch.

Runs resume: with a ``checkpoint_dir``, :func:`fit` loads the newest checkpoint there and continues at the
exact step, with the model, optimiser, schedules, scaler and every random generator restored, so an
interrupted run ends bitwise equal to an uninterrupted one on CPU in deterministic mode.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .runtime import (DistInfo, amp_dtype, atomic_torch_save, autocast, choose_device, init_distributed,
                      require_free_disk)

CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")


# --------------------------------------------------------------------------------------------------
# Schedules (values per optimiser step)
# --------------------------------------------------------------------------------------------------
def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """Per-step values: linear warm-up ``warmup_start -> base`` over ``warmup_steps``, then a half
    cosine ``base -> final`` over the remaining steps (the schedule of DINO, MAE and MoCo v3).

    ``values[s]`` is used at step ``s``; ``values[warmup_steps] == base`` and the last value tends to
    ``final``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps: expected > 0, got {total_steps}")
    warmup_steps = min(int(warmup_steps), total_steps)
    warmup = np.linspace(warmup_start, base, warmup_steps, endpoint=False)
    rest = np.arange(total_steps - warmup_steps)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * rest / max(len(rest), 1)))
    return np.concatenate([warmup, cosine])


def rampup(epoch: float, length: float) -> float:
    """Sigmoid-shaped ramp-up ``exp(-5 (1 - e/length)^2)`` for ``e < length``, else 1 (Laine & Aila 2017)."""
    if length <= 0 or epoch >= length:
        return 1.0
    return float(math.exp(-5.0 * (1.0 - max(epoch, 0.0) / length) ** 2))


# --------------------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * source`` for every parameter; buffers copied.

    Used for DINO's teacher and SoftCon's momentum encoder. The two modules must have the same
    parameter names and shapes.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum: expected a value in [0, 1], got {momentum}")
    src = dict(source.named_parameters())
    for name, p_t in target.named_parameters():
        p_t.mul_(momentum).add_(src[name].detach(), alpha=1.0 - momentum)
    src_buffers = dict(source.named_buffers())
    for name, b_t in target.named_buffers():
        b_t.copy_(src_buffers[name])


# --------------------------------------------------------------------------------------------------
# Configuration of the loop
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """What the loop needs. Every chapter profile (:class:`eobook.config.ChapterConfig`) is one, with
    validation and the method's own fields added."""

    #: Seed for Python, NumPy and torch (and the step generator, :meth:`StepContext.rand`).
    seed: int = 0
    #: "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:N" or "mps".
    device: str = "auto"
    #: Mixed precision: "auto" (bf16 on CUDA, fp32 elsewhere), "off", "bf16" or "fp16" (CUDA only).
    amp: str = "auto"
    #: DataLoader worker processes.
    num_workers: int = 0
    #: Pretraining epochs.
    epochs: int = 1
    #: Global batch size (split across DDP ranks).
    batch_size: int = 8
    #: Cap on optimiser steps per epoch (0 = the whole dataset); tiny profiles use it.
    max_steps_per_epoch: int = 0
    #: "adamw", "adam" or "sgd".
    optimizer: str = "adamw"
    #: Peak learning rate after warm-up (already scaled for the batch size where the paper scales it).
    lr: float = 1e-3
    #: Final learning rate of the cosine schedule.
    min_lr: float = 0.0
    #: Linear warm-up length in epochs (fractions allowed).
    warmup_epochs: float = 0.0
    #: "cosine" (per-step warm-up + cosine), "constant" or "plateau" (ReduceLROnPlateau per epoch).
    lr_schedule: str = "cosine"
    #: ReduceLROnPlateau (lr_schedule="plateau"): epochs without improvement, and the lr factor.
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    #: Weight decay at the start; ``weight_decay_end`` at the end (cosine), None for a constant value.
    weight_decay: float = 0.0
    weight_decay_end: float | None = None
    #: SGD momentum (ignored by Adam/AdamW).
    momentum: float = 0.9
    #: AdamW/Adam betas.
    betas: tuple[float, float] = (0.9, 0.999)
    #: Clip the global gradient norm to this value (0 = off).
    grad_clip: float = 0.0
    #: Write a checkpoint every this many optimiser steps (0 = only at the end); keep the newest few.
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    #: Print a log line every this many steps (0 = never).
    log_every: int = 10
    #: Progress bar: "auto" (only on a terminal), "on" or "off".
    progress: str = "auto"
    #: Convert BatchNorm to SyncBatchNorm under DDP.
    sync_batchnorm: bool = False


@dataclass
class StepContext:
    """What ``forward(batch, ctx)`` and the hooks know about where training is."""

    epoch: int
    step: int                  # global optimiser step, 0-based
    step_in_epoch: int
    steps_per_epoch: int
    total_steps: int
    device: torch.device
    generator: torch.Generator  # for augmentations inside the step (checkpointed; same seed on every rank)
    amp_dtype: torch.dtype | None
    dist: DistInfo
    lr: float = 0.0
    weight_decay: float = 0.0

    # Per-sample random draws. The generator is seeded alike on every rank; each draw is made for the
    # global batch and this rank keeps its rows, so N DDP processes draw exactly what one process with
    # the same global batch draws (and one process gets plain ``torch.rand(B, ...)``). The first
    # dimension of ``shape`` is the local batch size.
    def rand(self, *shape: int) -> torch.Tensor:
        return self._rows(torch.rand(self._global(shape), generator=self.generator))

    def randn(self, *shape: int) -> torch.Tensor:
        return self._rows(torch.randn(self._global(shape), generator=self.generator))

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor:
        return self._rows(torch.randint(low, high, self._global(shape), generator=self.generator))

    def _global(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not shape:
            raise ValueError("shape: expected the local batch size as the first dimension")
        return (shape[0] * self.dist.world_size, *shape[1:])

    def _rows(self, values: torch.Tensor) -> torch.Tensor:
        local = values.shape[0] // self.dist.world_size
        return values[self.dist.rank * local:(self.dist.rank + 1) * local]

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1)."""
        return self.step / max(self.total_steps, 1)

    @property
    def epoch_float(self) -> float:
        return self.epoch + self.step_in_epoch / max(self.steps_per_epoch, 1)


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    steps: int
    resumed_from: int | None
    seconds: float
    samples_per_second: float
    checkpoint: Path | None = None

    def series(self, key: str) -> list[float]:
        return [row[key] for row in self.history if key in row]


class CheckpointError(RuntimeError):
    """A checkpoint that does not belong to this run (other chapter, other model size) or is unreadable."""


# --------------------------------------------------------------------------------------------------
# Data order: a sampler that is seeded per epoch, shards a global batch over ranks, and can start late
# --------------------------------------------------------------------------------------------------
class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices from a permutation seeded by ``(seed, epoch)``.

    Every global batch of ``batch_size`` indices is split into ``world_size`` contiguous shards, so N
    processes see together exactly the batch one process would see. ``start_batch`` skips the batches an
    interrupted run already trained on. Incomplete last batches are dropped.
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, dist: DistInfo = DistInfo(),
                 shuffle: bool = True, max_batches: int = 0):
        if batch_size % dist.world_size:
            raise ValueError(f"batch_size: {batch_size} is not divisible by the world size {dist.world_size}")
        if dataset_len < batch_size:
            raise ValueError(f"batch_size: {batch_size} is larger than the dataset ({dataset_len} samples)")
        self.dataset_len, self.batch_size, self.seed, self.dist = dataset_len, batch_size, seed, dist
        self.shuffle, self.max_batches = shuffle, max_batches
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        n = self.dataset_len // self.batch_size
        return min(n, self.max_batches) if self.max_batches else n

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            order = list(range(self.dataset_len))
        local = self.batch_size // self.dist.world_size
        for b in range(self.start_batch, len(self)):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield batch[self.dist.rank * local:(self.dist.rank + 1) * local]


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, sampler: ResumableBatchSampler, num_workers: int,
                collate_fn: Callable | None = None, device: torch.device | None = None) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
                      worker_init_fn=_seed_worker, pin_memory=bool(device and device.type == "cuda"),
                      persistent_workers=False)


# --------------------------------------------------------------------------------------------------
# Optimiser
# --------------------------------------------------------------------------------------------------
def default_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and kernels; never biases, norm scales, tokens or positional embeddings."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(".bias") or "token" in name or "pos_embed" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "apply_wd_schedule": True},
            {"params": no_decay, "weight_decay": 0.0, "apply_wd_schedule": False}]


def build_optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise ValueError(f"optimizer: expected 'adamw', 'adam' or 'sgd', got {cfg.optimizer!r}")


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------
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
    """Load a checkpoint and refuse it when its ``meta`` differs from ``expected_meta``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
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


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "step_generator": generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["step_generator"])


# --------------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------------
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


def _progress_enabled(setting: str) -> bool:
    if setting == "auto":
        return sys.stderr.isatty() and os.environ.get("EOBOOK_PROGRESS", "1") != "0"
    return setting == "on"


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------
def fit(module: nn.Module, dataset: Dataset, cfg: TrainConfig, *, checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_meta: dict[str, Any] | None = None, collate_fn: Callable | None = None,
        stop_after_steps: int | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``module`` on ``dataset`` with ``cfg``; resume from ``checkpoint_dir`` when it holds a checkpoint.

    Args:
        module: pretraining module; ``forward(batch, ctx) -> {"loss": tensor, ...}``.
        dataset: map-style dataset; batches are collated dicts of tensors.
        cfg: loop settings (see :class:`TrainConfig`).
        checkpoint_dir: where ``ckpt-<step>.pt`` files go; ``None`` disables checkpoints and resume.
        checkpoint_meta: identity of the run (chapter, model size, ...); a checkpoint whose meta differs
            is refused instead of silently loaded.
        stop_after_steps: end early after this global step (used to test interruption).
    Returns:
        a :class:`TrainResult` with the logged history (rows with ``step``, ``epoch``, ``lr``, ``loss``...).
    """
    device = choose_device(cfg.device)
    dist = init_distributed(device)
    dtype = amp_dtype(device, cfg.amp)
    module.to(device)
    raw = module
    if dist.enabled:
        if cfg.sync_batchnorm:
            raw = module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        module = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = ResumableBatchSampler(len(dataset), cfg.batch_size, cfg.seed, dist,
                                    max_batches=cfg.max_steps_per_epoch)
    loader = make_loader(dataset, sampler, cfg.num_workers, collate_fn, device)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    groups = raw.param_groups(cfg.weight_decay) if hasattr(raw, "param_groups") else default_param_groups(raw, cfg.weight_decay)
    optimizer = build_optimizer(groups, cfg)
    lr_values = _lr_values(cfg, total_steps, warmup_steps)
    plateau_from = warmup_steps if cfg.lr_schedule == "plateau" else None
    wd_end = cfg.weight_decay if cfg.weight_decay_end is None else cfg.weight_decay_end
    wd_values = cosine_schedule(cfg.weight_decay, wd_end, total_steps)
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
               if cfg.lr_schedule == "plateau" else None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)  # alike on all ranks: see StepContext.rand

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    metrics_log = MetricsLog(ckpt_dir / "metrics.jsonl" if ckpt_dir else None, dist.is_main)
    start_step, resumed_from, history = 0, None, []
    remove_stale_temp_files(ckpt_dir)
    newest = newest_checkpoint(ckpt_dir)
    if newest is not None:
        state = load_checkpoint(newest, checkpoint_meta, map_location=device)
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if plateau is not None and state.get("plateau") is not None:
            plateau.load_state_dict(state["plateau"])
        _set_rng_state(state["rng"], generator)
        start_step = resumed_from = state["step"]
        history = metrics_log.truncate_after(start_step) if dist.is_main else []
        log(f"resumed from {newest.name} (step {start_step} of {total_steps})")

    def save(step: int) -> Path | None:
        if ckpt_dir is None or not dist.is_main:
            return None
        state = {"model": raw.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "plateau": plateau.state_dict() if plateau is not None else None, "step": step,
                 "rng": _rng_state(generator), "meta": checkpoint_meta or {},
                 "config": dataclasses.asdict(cfg)}
        require_free_disk(ckpt_dir, 2 * _state_bytes(state))  # the new file, with room to spare
        path = atomic_torch_save(state, ckpt_dir / f"ckpt-{step:08d}.pt")
        for old in list_checkpoints(ckpt_dir)[:-cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    progress = None
    if _progress_enabled(cfg.progress) and dist.is_main:
        from tqdm.auto import tqdm
        progress = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    module.train()
    step, t0, samples, last_ckpt = start_step, time.perf_counter(), 0, None
    start_epoch = start_step // steps_per_epoch if steps_per_epoch else 0
    for epoch in range(start_epoch, cfg.epochs):
        first_batch = step - epoch * steps_per_epoch
        sampler.set_epoch(epoch, first_batch)
        if hasattr(dataset, "set_epoch"):  # e.g. SSL4EOS12 draws a new random season per epoch
            dataset.set_epoch(epoch)
        epoch_losses = []
        for step_in_epoch, batch in enumerate(loader, start=first_batch):
            ctx = StepContext(epoch, step, step_in_epoch, steps_per_epoch, total_steps, device, generator,
                              dtype, dist)
            ctx.lr, ctx.weight_decay = _apply_schedules(optimizer, lr_values, wd_values, step, plateau_from)
            batch = _to_device(batch, device)
            with autocast(device, dtype):
                out = module(batch, ctx)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step} (epoch {epoch}); "
                                         "lower the learning rate or check the inputs for NaN")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if hasattr(raw, "on_after_backward"):
                raw.on_after_backward(ctx)
            grad_norm = None
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                grad_norm = float(nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip))
            scaler.step(optimizer)
            scaler.update()
            if hasattr(raw, "on_step_end"):
                raw.on_step_end(ctx)

            row = {"step": step, "epoch": epoch, "lr": ctx.lr, "wd": ctx.weight_decay}
            row.update(_reduce_scalars(out, dist))
            if grad_norm is not None:
                row["grad_norm"] = grad_norm
            history.append(row)
            metrics_log.append(row)
            epoch_losses.append(row["loss"])
            samples += cfg.batch_size
            step += 1
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{row['loss']:.4f}")
            if dist.is_main and cfg.log_every and (step % cfg.log_every == 0 or step == total_steps):
                log(f"epoch {epoch} step {step}/{total_steps} " +
                    " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("step", "epoch")))
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                last_ckpt = save(step)
            if stop_after_steps is not None and step >= stop_after_steps:
                break
        if plateau is not None and epoch_losses:
            plateau.step(float(np.mean(epoch_losses)))
        if hasattr(raw, "on_epoch_end"):
            raw.on_epoch_end(ctx)
        if stop_after_steps is not None and step >= stop_after_steps:
            break
    if progress is not None:
        progress.close()
    if last_ckpt is None or not last_ckpt.name.endswith(f"{step:08d}.pt"):
        last_ckpt = save(step)
    seconds = time.perf_counter() - t0
    return TrainResult(history, step, resumed_from, seconds, samples / max(seconds, 1e-9), last_ckpt)


def _lr_values(cfg: TrainConfig, total_steps: int, warmup_steps: int) -> np.ndarray:
    if cfg.lr_schedule == "cosine":
        return cosine_schedule(cfg.lr, cfg.min_lr, total_steps, warmup_steps)
    warm = np.linspace(0.0, cfg.lr, warmup_steps, endpoint=False)
    return np.concatenate([warm, np.full(total_steps - warmup_steps, cfg.lr)])


def _apply_schedules(optimizer: torch.optim.Optimizer, lr_values: np.ndarray, wd_values: np.ndarray,
                     step: int, plateau_from: int | None) -> tuple[float, float]:
    """Set this step's lr and weight decay on every group; from step ``plateau_from`` on,
    ReduceLROnPlateau owns the lr (it starts from the peak lr set at the end of warm-up)."""
    lr = float(lr_values[min(step, len(lr_values) - 1)])
    wd = float(wd_values[min(step, len(wd_values) - 1)])
    for group in optimizer.param_groups:
        scale = group.get("lr_scale", 1.0)
        if plateau_from is None or step <= plateau_from:
            group["lr"] = lr * scale
        if group.get("apply_wd_schedule", True):
            group["weight_decay"] = wd
    return float(optimizer.param_groups[0]["lr"]), wd


def _state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint state."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _reduce_scalars(out: dict[str, Any], dist: DistInfo) -> dict[str, float]:
    """Scalars to log, averaged over ranks under DDP (one all-reduce for all of them)."""
    names = [k for k, v in out.items() if isinstance(v, (torch.Tensor, float, int)) and
             (not isinstance(v, torch.Tensor) or v.numel() == 1)]
    values = torch.tensor([float(out[k].detach()) if isinstance(out[k], torch.Tensor) else float(out[k])
                           for k in names], dtype=torch.float64)
    if dist.enabled:
        backend_device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
        values = values.to(backend_device)
        torch.distributed.all_reduce(values)
        values = values.cpu() / dist.world_size
    return {k: float(v) for k, v in zip(names, values)}


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


# --------------------------------------------------------------------------------------------------
# A chapter's pretraining, the same in a notebook, under `python -m eobook pretrain` and under torchrun
# --------------------------------------------------------------------------------------------------
def pretrain(chapter: str, cfg: Any, out_dir: str | os.PathLike | None, **fit_kwargs: Any) -> tuple[nn.Module, TrainResult]:
    """Build the chapter's pretraining module and data (``eobook.methods.<chapter>.build_pretraining``)
    and train it with :func:`fit`, checkpointing into ``<out_dir>/checkpoints``.

    ``build_pretraining(cfg)`` returns ``(module, dataset, collate_fn, meta)``; ``meta`` identifies the
    run (chapter and model-shape fields) so that a checkpoint of another chapter or size is refused.
    """
    import importlib

    methods = importlib.import_module(f"eobook.methods.{chapter}")
    module, dataset, collate_fn, meta = methods.build_pretraining(cfg)
    ckpt_dir = Path(out_dir) / "checkpoints" if out_dir is not None else None
    result = fit(module, dataset, cfg, checkpoint_dir=ckpt_dir,
                 checkpoint_meta={"chapter": chapter, **meta}, collate_fn=collate_fn, **fit_kwargs)
    return module, result
