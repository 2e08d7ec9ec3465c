"""Training: the one loop every chapter uses, for pretraining, linear probes, fine-tuning and transfer.

* :mod:`~eobook.train.loop`: :func:`fit`, its :class:`TrainConfig`, the :class:`StepContext` handed to
  every step (where training is, and the step's random source), the resumable, DDP-sharding sampler;
* :mod:`~eobook.train.optim`: the one optimizer factory and its weight-decay parameter groups;
* :mod:`~eobook.train.schedules`: per-step learning-rate, weight-decay and momentum schedules, ramps;
* :mod:`~eobook.train.ema`: EMA updates of teachers and momentum encoders;
* :mod:`~eobook.train.checkpoint`: atomic checkpoints, resume, refusal of foreign checkpoints.

A module trains if its ``forward(batch, ctx)`` returns a dict with a scalar ``"loss"``. Teachers, momentum
encoders and centres live inside it as buffers or frozen parameters, so one ``state_dict`` checkpoints all
of it and one ``DistributedDataParallel`` wrapper synchronises the gradients of what trains. Runs resume:
with a ``checkpoint_dir``, :func:`fit` loads the newest checkpoint there and continues at the exact step,
with the model, optimiser, schedules, scaler and every random generator restored, so an interrupted run
ends bitwise equal to an uninterrupted one on CPU in deterministic mode.
"""
from .checkpoint import CheckpointError, list_checkpoints, load_checkpoint, newest_checkpoint, stage_dir
from .ema import ema_update
from .loop import ResumableBatchSampler, StepContext, TrainConfig, TrainResult, fit
from .optim import build_optimizer, param_groups
from .schedules import cosine_schedule, ema_momentum, rampup

__all__ = ["CheckpointError", "ResumableBatchSampler", "StepContext", "TrainConfig", "TrainResult", "build_optimizer",
           "cosine_schedule", "ema_momentum", "ema_update", "fit", "list_checkpoints", "load_checkpoint",
           "newest_checkpoint", "param_groups", "rampup", "stage_dir"]
