"""The training loop: :func:`fit` and what it needs (its config, the step context, the resumable sampler)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import ring
from ..data.base import BatchCollate, CollatedBatch
from ..runtime import DistInfo, amp_dtype, autocast, choose_device, init_distributed, seed_everything
from .checkpoint import (MetricsLog, load_checkpoint, newest_checkpoint, remove_stale_temp_files, rng_state,
                         save_checkpoint, set_rng_state)
from .optim import build_optimizer, param_groups
from .schedules import constant_schedule, cosine_schedule

#: Optimiser steps of every stage of a smoke run (``TrainConfig.smoke``).
SMOKE_STEPS = 2


# --------------------------------------------------------------------------------------------------
# Configuration of the loop
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """What the loop needs. Every chapter profile (:class:`eobook.config.ChapterConfig`) is one, with
    validation and the method's own fields added; evaluation stages get theirs from :meth:`stage`."""

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
    #: Global batch size (split across DDP ranks) of one forward/backward pass.
    batch_size: int = 8
    #: Micro-batches whose gradients one optimiser step accumulates: the effective batch is
    #: ``batch_size * grad_accum``, so one GPU reaches the paper's batch of four (batch-wise statistics such as
    #: BatchNorm's, DINO's centre or a contrastive loss's negatives still see ``batch_size`` samples at a time).
    grad_accum: int = 1
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
    #: Smoke run: every stage trains ``SMOKE_STEPS`` optimiser steps in one epoch, its batch shrunk to fit the
    #: few samples it has (what to run before booking a GPU for the full profile; the numbers mean nothing).
    smoke: bool = False

    #: Fields an evaluation stage inherits from the run (:meth:`stage`).
    RUN_FIELDS = ("seed", "device", "amp", "num_workers", "checkpoint_every", "keep_checkpoints", "progress", "smoke")

    def stage(self, **settings: Any) -> TrainConfig:
        """The loop settings of an evaluation stage (linear probe, fine-tuning, transfer): this run's seed,
        device, precision, workers, checkpoint cadence and progress display, the stage's own optimisation
        ``settings``, the loop's defaults for the rest (no warm-up, constant weight decay, no clipping,
        cosine to 0, quiet)."""
        run = {name: getattr(self, name) for name in self.RUN_FIELDS}
        return TrainConfig(**{**run, "log_every": 0, **settings})


@dataclass
class StepContext:
    """What ``forward(batch, ctx)`` and the hooks know about where training is; also the step's
    :class:`eobook.rng.Random` source (``ctx.rand``, ``ctx.randn``, ``ctx.randint``)."""

    epoch: int
    step: int                  # global optimiser step, 0-based
    step_in_epoch: int
    steps_per_epoch: int
    total_steps: int
    device: torch.device
    generator: torch.Generator  # checkpointed; seeded alike on every rank
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


# --------------------------------------------------------------------------------------------------
# Data order: a sampler that is seeded per epoch, shards a global batch over ranks, and can start late
# --------------------------------------------------------------------------------------------------
class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices from a permutation seeded by ``(seed, epoch)``.

    Every global batch of ``batch_size`` indices is split into ``world_size`` contiguous shards, so N
    processes see together exactly the batch one process would see. ``start_batch`` skips the batches an
    interrupted run already trained on. An incomplete last batch is dropped (``drop_last``, pretraining) or
    kept (probes on a few hundred samples, where it is a good part of the data).

    With ``block`` > 1 (a packed store's samples per chunk, :func:`samples_per_block`) the permutation is
    chunk-aligned: the blocks of ``block`` consecutive indices are shuffled, and the indices are shuffled
    within windows of ``window_batches`` batches' worth of whole blocks. A batch then draws from about
    ``window_batches * batch_size / block`` chunks, each decoded once per batch that uses it (about
    ``window_batches`` times an epoch), instead of one chunk per sample. ``block=1`` is the full permutation.
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, dist: DistInfo = DistInfo(),
                 shuffle: bool = True, max_batches: int = 0, drop_last: bool = True, block: int = 1,
                 window_batches: int = 2):
        if batch_size % dist.world_size:
            raise ValueError(f"batch_size: {batch_size} is not divisible by the world size {dist.world_size}")
        if drop_last and dataset_len < batch_size:
            raise ValueError(f"batch_size: {batch_size} is larger than the dataset ({dataset_len} samples)")
        if dataset_len < 1:
            raise ValueError("dataset: no samples to train on")
        if not drop_last and 0 < dataset_len % batch_size < dist.world_size:
            raise ValueError(f"batch_size: the last batch of {dataset_len % batch_size} samples cannot be split over "
                             f"{dist.world_size} ranks; drop it or change the batch size")
        if block < 1 or window_batches < 1:
            raise ValueError(f"block, window_batches: expected >= 1, got {block}, {window_batches}")
        self.dataset_len, self.batch_size, self.seed, self.dist = dataset_len, batch_size, seed, dist
        self.shuffle, self.max_batches, self.drop_last = shuffle, max_batches, drop_last
        self.block, self.window_batches = block, window_batches
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        n = self.dataset_len // self.batch_size if self.drop_last else -(-self.dataset_len // self.batch_size)
        return min(n, self.max_batches) if self.max_batches else n

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def order(self) -> list[int]:
        """This epoch's order of all indices (a pure function of seed, epoch and the settings)."""
        if not self.shuffle:
            return list(range(self.dataset_len))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.block == 1:
            return torch.randperm(self.dataset_len, generator=g).tolist()
        blocks = torch.arange(self.dataset_len).split(self.block)
        shuffled = [blocks[b] for b in torch.randperm(len(blocks), generator=g).tolist()]
        per_window = max(1, -(-self.window_batches * self.batch_size // self.block))
        order = []
        for first in range(0, len(shuffled), per_window):
            window = torch.cat(shuffled[first:first + per_window])
            order += window[torch.randperm(len(window), generator=g)].tolist()
        return order

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        for b in range(self.start_batch, len(self)):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            local = -(-len(batch) // self.dist.world_size)
            yield batch[self.dist.rank * local:(self.dist.rank + 1) * local]


def batch_reader(dataset: Any) -> Any:
    """The reader under ``dataset`` when whole batches reach it and it reads them from a packed store (every
    layer has ``__getitems__``: a ``Subset`` of consecutive indices, wrappers that keep the reader as
    ``.dataset`` or ``.base``), else None."""
    from torch.utils.data import Subset

    while hasattr(dataset, "__getitems__"):
        if isinstance(dataset, Subset) and list(dataset.indices) != list(range(len(dataset.indices))):
            return None
        inner = getattr(dataset, "dataset", getattr(dataset, "base", None))
        if not isinstance(inner, Dataset):
            batched = getattr(dataset, "BATCHED", False) and getattr(dataset, "store", None) is not None
            return dataset if batched else None
        dataset = inner
    return None


def samples_per_block(dataset: Any) -> int:
    """Samples per chunk of the packed store under ``dataset`` (:func:`batch_reader`), the block a
    chunk-aligned sampler keeps together; 1 (a full shuffle) for anything else. One sample at a time, a
    chunk-aligned order would decode a whole chunk per sample."""
    reader = batch_reader(dataset)
    return reader.store.samples_per_chunk if reader is not None else 1


def native_batches(dataset: Dataset, ring_slots: int = 0) -> tuple[Dataset, Callable | None]:
    """(what the loader reads, what normalises its batches on the device): for a packed reader with native
    batches (:func:`batch_reader`, :meth:`~eobook.data.base.EODataset.device_normalization`)
    ``(NativeBatches(dataset, ring_slots), the normalisation)``, else ``(dataset, None)``. ``fit`` reads through
    a ring of :data:`eobook.data.ring.SLOTS` slots per worker where it passes the reader's batch through."""
    reader = batch_reader(dataset)
    on_device = reader.device_normalization() if reader is not None else None
    return (dataset, None) if on_device is None else (NativeBatches(dataset, reader, ring_slots), on_device)


class NativeBatches(Dataset):
    """``dataset`` whose packed reader (:func:`batch_reader`) delivers its batches native: the arrays as
    stored (uint16 reflectances, int8 classes), not normalised; ``fit`` normalises them on the device with the
    reader's :meth:`~eobook.data.base.EODataset.device_normalization`. The reader is switched to native for
    the duration of each batch read only, in whichever process reads it.

    Inside a DataLoader worker a batch is read into one of the worker's ``ring_slots`` reusable shared
    buffers (:mod:`eobook.data.ring`), which the main process releases once it is done with the batch; 0:
    fresh shared memory for every batch. The ring needs the loader to pass the reader's collated batch through
    (:class:`~eobook.data.base.BatchCollate` without a ``collate_fn``): another collate function would get a
    batch in transit, not the samples.
    """

    def __init__(self, dataset: Dataset, reader: Any, ring_slots: int = 0):
        self.dataset, self.reader, self.ring_slots = dataset, reader, ring_slots

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> Any:
        self.reader.native = True
        try:
            with ring.reading(self.ring_slots) as hand_over:
                batch = self.dataset.__getitems__(indices)
                if isinstance(batch, CollatedBatch):
                    batch.collated = hand_over(batch.collated)
                return batch
        finally:
            self.reader.native = False


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def available_cpus() -> int:
    """CPU cores this process may use (its affinity where the platform tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_loader(dataset: Dataset, sampler: ResumableBatchSampler, num_workers: int,
                collate_fn: Callable | None = None, device: torch.device | None = None) -> DataLoader:
    """The loader of :func:`fit`: ``sampler``'s batches, at most one worker process per available core (a
    profile's worker count is sized for a GPU node; more workers than cores only compete)."""
    num_workers = min(num_workers, available_cpus())
    # BatchCollate: a reader's batch read and collated at once (its __getitems__) is used as it is
    return RingLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=BatchCollate(collate_fn),
                      worker_init_fn=_seed_worker, pin_memory=bool(device and device.type == "cuda"),
                      persistent_workers=False)


class RingLoader(DataLoader):
    """A DataLoader whose pass, once over (exhausted, closed or dropped), forgets the batch buffers its
    workers lent (:func:`eobook.data.ring.forget`): the main process keeps them mapped only while the
    workers that rewrite them live. Batches still held keep their memory by themselves."""

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        try:
            yield from batches
        finally:
            ring.forget(worker.pid for worker in getattr(batches, "_workers", ()))


def _progress_enabled(setting: str) -> bool:
    """"auto": a bar on a terminal and in an interactive notebook (a widget in JupyterLab), never in a
    headless run (``python -m eobook run`` sets ``EOBOOK_PROGRESS=0``, so the book shows no bars)."""
    if setting == "auto":
        return os.environ.get("EOBOOK_PROGRESS", "1") != "0" and (sys.stderr.isatty() or _in_notebook())
    return setting == "on"


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------
def fit(module: nn.Module, dataset: Dataset, cfg: TrainConfig, *, checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_meta: dict[str, Any] | None = None, collate_fn: Callable | None = None, drop_last: bool = True,
        stop_after_steps: int | None = None, log: Callable[[str], None] = print, desc: str = "train") -> TrainResult:
    """Train ``module`` on ``dataset`` with ``cfg``; resume from ``checkpoint_dir`` when it holds a checkpoint.

    Pretraining, linear probes, fine-tuning and segmentation transfer all train here, with the same
    checkpoints and resume, precision policy, gradient clipping, logging and DDP handling.

    Args:
        module: ``forward(batch, ctx) -> {"loss": tensor, ...}`` (other scalars are logged). Optional hooks,
            called on the unwrapped module: ``on_after_backward(ctx)`` (e.g. DINO cancels the last layer's
            gradients in epoch 0), ``on_step_end(ctx)`` (e.g. an EMA teacher update after the optimiser
            step), ``on_epoch_end(ctx)``. Parameters decay as :func:`eobook.train.optim.param_groups` says.
        dataset: map-style dataset; batches are collated dicts of tensors. A ``set_epoch(epoch)`` method, if
            any, is called at the start of every epoch (e.g. to draw new random seasons).
        cfg: loop settings (see :class:`TrainConfig`).
        checkpoint_dir: where ``ckpt-<step>.pt`` files go; ``None`` disables checkpoints and resume.
        checkpoint_meta: identity of the run (chapter, model size, ...); a checkpoint whose meta differs
            is refused instead of silently loaded.
        drop_last: drop an incomplete last batch of an epoch (else train on it too).
        stop_after_steps: end early after this global step (used to test interruption).
        desc: the progress bar's label.
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

    epochs, batch_size, max_steps = _length(cfg, len(dataset), dist)
    micro_batches = cfg.grad_accum
    # the workers' reusable buffers need the reader's collated batch passed through (NativeBatches)
    loaded, on_device = native_batches(dataset, ring.SLOTS if collate_fn is None else 0)
    sampler = ResumableBatchSampler(len(dataset), batch_size, cfg.seed, dist, max_batches=max_steps * micro_batches,
                                    drop_last=drop_last, block=samples_per_block(dataset))
    loader = make_loader(loaded, sampler, cfg.num_workers, collate_fn, device)
    steps_per_epoch = len(sampler) // micro_batches
    if steps_per_epoch == 0:
        raise ValueError(f"grad_accum: {micro_batches} micro-batches of {batch_size} exceed the {len(dataset)} samples")
    total_steps = steps_per_epoch * epochs
    if micro_batches > 1:
        log(f"effective batch {batch_size * micro_batches} = {micro_batches} accumulated micro-batches of {batch_size}")
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    optimizer = build_optimizer(param_groups(raw, cfg.weight_decay), cfg.optimizer, cfg.lr, betas=cfg.betas,
                                momentum=cfg.momentum)
    lr_values = (cosine_schedule(cfg.lr, cfg.min_lr, total_steps, warmup_steps) if cfg.lr_schedule == "cosine"
                 else constant_schedule(cfg.lr, total_steps, warmup_steps))
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
    if newest is None:
        # Python, NumPy and torch draw from their global generators too (dropout, drop-path, worker seeds):
        # seed them here, so that a stage trains the same whatever ran before it; a resume restores them.
        seed_everything(cfg.seed)
    else:
        state = load_checkpoint(newest, checkpoint_meta, map_location=device)
        raw.load_state_dict(state["model"])
        if state["optimizer"] is not None:  # a finished run's checkpoint keeps the model only
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
        if plateau is not None and state.get("plateau") is not None:
            plateau.load_state_dict(state["plateau"])
        set_rng_state(state["rng"], generator)
        start_step = resumed_from = state["step"]
        history = metrics_log.truncate_after(start_step) if dist.is_main else []
        log(f"resumed from {newest.name} (step {start_step} of {total_steps})")

    def save(step: int, finished: bool = False) -> Path | None:
        """A checkpoint at ``step``; once training is finished, the model only (a finished stage resumes to its
        end, where the optimiser's state, twice the model's size with Adam, is never used again)."""
        if ckpt_dir is None or not dist.is_main:
            return None
        state = {"model": raw.state_dict(), "optimizer": None if finished else optimizer.state_dict(),
                 "scaler": None if finished else scaler.state_dict(),
                 "plateau": plateau.state_dict() if plateau is not None else None, "step": step,
                 "rng": rng_state(generator), "meta": checkpoint_meta or {}, "config": dataclasses.asdict(cfg)}
        return save_checkpoint(ckpt_dir, step, state, cfg.keep_checkpoints)

    def backward(batch: Any, ctx: StepContext, last: bool) -> tuple[dict[str, Any], int]:
        """Forward and backward of one micro-batch; DDP synchronises the gradients of the last one only."""
        batch = _to_device(batch, device)
        if on_device is not None:  # a packed reader's native batch: normalised here, on the device
            batch = on_device(batch)
        with contextlib.nullcontext() if last or not dist.enabled else module.no_sync():
            with autocast(device, dtype):
                out = module(batch, ctx)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {ctx.step} (epoch {ctx.epoch}); "
                                         "lower the learning rate or check the inputs for NaN")
            scaler.scale(loss / micro_batches).backward()
        return out, _batch_size(batch)

    progress = None
    if _progress_enabled(cfg.progress) and dist.is_main:
        from tqdm.auto import tqdm
        progress = tqdm(total=total_steps, initial=start_step, desc=desc, dynamic_ncols=True)

    module.train()
    step, t0, samples, last_ckpt = start_step, time.perf_counter(), 0, None
    start_epoch = start_step // steps_per_epoch if steps_per_epoch else 0
    for epoch in range(start_epoch, epochs):
        first_step = step - epoch * steps_per_epoch
        sampler.set_epoch(epoch, first_step * micro_batches)
        if hasattr(dataset, "set_epoch"):  # e.g. SSL4EOS12 draws a new random season per epoch
            dataset.set_epoch(epoch)
        epoch_losses, batches = [], iter(loader)
        for step_in_epoch in range(first_step, steps_per_epoch):
            ctx = StepContext(epoch, step, step_in_epoch, steps_per_epoch, total_steps, device, generator,
                              dtype, dist)
            ctx.lr, ctx.weight_decay = _apply_schedules(optimizer, lr_values, wd_values, step, plateau_from)
            optimizer.zero_grad(set_to_none=True)
            outs = [backward(next(batches), ctx, last=i == micro_batches - 1) for i in range(micro_batches)]
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
            row.update(_mean_rows([_reduce_scalars(out, dist) for out, _ in outs]))
            if grad_norm is not None:
                row["grad_norm"] = grad_norm
            history.append(row)
            metrics_log.append(row)
            epoch_losses.append(row["loss"])
            samples += sum(n for _, n in outs) * dist.world_size
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
    if step == total_steps:
        last_ckpt = save(step, finished=True)
    elif last_ckpt is None or not last_ckpt.name.endswith(f"{step:08d}.pt"):
        last_ckpt = save(step)
    seconds = time.perf_counter() - t0
    return TrainResult(history, step, resumed_from, seconds, samples / max(seconds, 1e-9), last_ckpt)


def _length(cfg: TrainConfig, dataset_len: int, dist: DistInfo) -> tuple[int, int, int]:
    """(epochs, global micro-batch size, cap on optimiser steps per epoch) of a run: the config's, or in a smoke
    run one epoch of ``SMOKE_STEPS`` steps with the batch shrunk to fit them into the samples at hand."""
    if not cfg.smoke:
        return cfg.epochs, cfg.batch_size, cfg.max_steps_per_epoch
    per_step = max(1, min(cfg.batch_size, dataset_len // (SMOKE_STEPS * cfg.grad_accum)))
    batch_size = max(dist.world_size, per_step // dist.world_size * dist.world_size)
    return 1, batch_size, SMOKE_STEPS


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """The logged scalars of an optimiser step: the mean over its micro-batches."""
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[0]}


def _apply_schedules(optimizer: torch.optim.Optimizer, lr_values: np.ndarray, wd_values: np.ndarray,
                     step: int, plateau_from: int | None) -> tuple[float, float]:
    """Set this step's lr and weight decay on every group; from step ``plateau_from`` on,
    ReduceLROnPlateau owns the lr (it starts from the peak lr set at the end of warm-up)."""
    lr = float(lr_values[min(step, len(lr_values) - 1)])
    wd = float(wd_values[min(step, len(wd_values) - 1)])
    for group in optimizer.param_groups:
        if plateau_from is None or step <= plateau_from:
            group["lr"] = lr
        if group.get("apply_wd_schedule", True):
            group["weight_decay"] = wd
    return float(optimizer.param_groups[0]["lr"]), wd


def _batch_size(batch: Any) -> int:
    """Samples in a collated batch: the first dimension of its first tensor (a dict's or a sequence's), else
    the length of a sequence of other things (e.g. a list of ids)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    values = list(batch.values()) if isinstance(batch, dict) else list(batch) if isinstance(batch, (list, tuple)) else []
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.shape[0]
    for value in values:
        if isinstance(value, (dict, list, tuple)) and (n := _batch_size(value)):
            return n
    return len(values) if isinstance(batch, (list, tuple)) else 0


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

