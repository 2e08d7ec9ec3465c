"""Per-step schedules of the learning rate, weight decay, EMA momentum and ramps (values indexed by step)."""
from __future__ import annotations

import math

import numpy as np


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


def constant_schedule(base: float, total_steps: int, warmup_steps: int = 0) -> np.ndarray:
    """Linear warm-up ``0 -> base`` over ``warmup_steps``, then ``base``."""
    warmup_steps = min(int(warmup_steps), total_steps)
    warm = np.linspace(0.0, base, warmup_steps, endpoint=False)
    return np.concatenate([warm, np.full(total_steps - warmup_steps, base)])


def ema_momentum(base: float, step: int, total_steps: int) -> float:
    """EMA momentum at ``step``: a half cosine from ``base`` to 1 over training (BYOL, DINO's teacher,
    MoCo v3's momentum encoder): ``1 - (1 - base) (cos(pi step / total) + 1) / 2``."""
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base: expected a momentum in [0, 1], got {base}")
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def rampup(epoch: float, length: float) -> float:
    """Sigmoid-shaped ramp-up ``exp(-5 (1 - e/length)^2)`` for ``e < length``, else 1 (Laine & Aila 2017)."""
    if length <= 0 or epoch >= length:
        return 1.0
    return float(math.exp(-5.0 * (1.0 - max(epoch, 0.0) / length) ** 2))
