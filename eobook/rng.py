"""The one contract for randomness inside a training step: per-sample draws from a :class:`Random` source.

Every method draws what it randomises (crops, jitter, masks, sensor drop, seasons) with
``rng.rand(B, ...)``, ``rng.randn(B, ...)`` or ``rng.randint(low, high, B, ...)``, where the first
dimension is the local batch size. During training the source is the step's context
(:class:`eobook.train.StepContext`): its generator is checkpointed, so a resumed run draws exactly what an
uninterrupted one draws, and under DDP each rank keeps its rows of one draw for the global batch, so N
processes draw what one process with the same global batch draws. Outside training (figures, tests) a
:class:`GeneratorRandom` gives the same interface over a plain ``torch.Generator``.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Random(Protocol):
    """Per-sample random draws on the CPU; ``shape[0]`` is the (local) batch size."""

    def rand(self, *shape: int) -> torch.Tensor: ...

    def randn(self, *shape: int) -> torch.Tensor: ...

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor: ...


class GeneratorRandom:
    """:class:`Random` over a ``torch.Generator`` (``None``: torch's global generator) or a seed."""

    def __init__(self, generator: torch.Generator | int | None = None):
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        self.generator = generator

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator)

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=self.generator)


def as_random(source: Random | torch.Generator | int | None) -> Random:
    """A :class:`Random` from a step context, a generator, a seed or ``None`` (the global generator)."""
    if isinstance(source, Random):
        return source
    return GeneratorRandom(source)


class ViewRandom:
    """Draws for ``n_views`` views of each of ``batch_size`` samples, view-major (rows ``v*B:(v+1)*B`` are
    view ``v``), taken from one per-sample draw of ``rng`` so that DDP ranks still keep their samples' rows."""

    def __init__(self, rng: Random, batch_size: int, n_views: int):
        self.rng, self.batch_size, self.n_views = rng, batch_size, n_views

    def _views(self, values: torch.Tensor, rows: int) -> torch.Tensor:
        if rows != self.batch_size * self.n_views:
            raise ValueError(f"rows: expected batch_size x n_views = {self.batch_size * self.n_views}, got {rows}")
        return values.transpose(0, 1).reshape(rows, *values.shape[2:])

    def rand(self, rows: int, *shape: int) -> torch.Tensor:
        return self._views(self.rng.rand(self.batch_size, self.n_views, *shape), rows)

    def randn(self, rows: int, *shape: int) -> torch.Tensor:
        return self._views(self.rng.randn(self.batch_size, self.n_views, *shape), rows)

    def randint(self, low: int, high: int, rows: int, *shape: int) -> torch.Tensor:
        return self._views(self.rng.randint(low, high, self.batch_size, self.n_views, *shape), rows)
