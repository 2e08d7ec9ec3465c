"""Exponential moving averages of a network: DINO's teacher, SoftCon's momentum encoder."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * source`` for every parameter; buffers copied.

    The two modules must have the same parameter names and shapes (``target`` starts as a copy of
    ``source``). The momentum usually follows :func:`eobook.train.schedules.ema_momentum`.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum: expected a value in [0, 1], got {momentum}")
    src = dict(source.named_parameters())
    for name, p_t in target.named_parameters():
        p_t.mul_(momentum).add_(src[name].detach(), alpha=1.0 - momentum)
    src_buffers = dict(source.named_buffers())
    for name, b_t in target.named_buffers():
        b_t.copy_(src_buffers[name])
