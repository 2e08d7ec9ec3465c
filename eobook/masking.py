"""Token masking for masked image modelling and Siamese masking (Fus-MAE, MultiMAE-EO, SoftCon).

Conventions: a *mask* is bool ``[B, N]`` with True = hidden (as in MAE); *keep* indices are the sorted
positions of the visible tokens, ``[B, K]``; draws come from a :class:`eobook.rng.Random` (the step
context during training), one row per sample.
"""
from __future__ import annotations

import torch

from .rng import Random


def random_keep_indices(batch_size: int, num_tokens: int, num_keep: int, rng: Random,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-sample uniformly random subsets of ``num_keep`` of ``num_tokens`` positions, sorted: [B, num_keep]."""
    if not 0 < num_keep <= num_tokens:
        raise ValueError(f"num_keep: expected 1..{num_tokens}, got {num_keep}")
    noise = rng.rand(batch_size, num_tokens)
    return noise.argsort(dim=1)[:, :num_keep].sort(dim=1).values.to(device)


def random_mask(batch_size: int, num_tokens: int, mask_ratio: float, rng: Random) -> torch.Tensor:
    """Bool mask [B, N] hiding exactly ``round(mask_ratio * N)`` uniformly random tokens per row; at least
    one token stays visible."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio: expected a value in [0, 1), got {mask_ratio}")
    if batch_size < 1 or num_tokens < 1:
        raise ValueError(f"batch_size, num_tokens: expected >= 1, got {batch_size}, {num_tokens}")
    num_masked = round(mask_ratio * num_tokens)
    if num_masked >= num_tokens:
        raise ValueError(f"mask_ratio: {mask_ratio} masks all {num_tokens} tokens; keep at least one visible")
    keep = random_keep_indices(batch_size, num_tokens, num_tokens - num_masked, rng)
    return torch.ones(batch_size, num_tokens, dtype=torch.bool).scatter_(1, keep, False)


def keep_indices(mask: torch.Tensor) -> torch.Tensor:
    """Sorted positions of the visible tokens of a mask [B, N] (True = hidden) -> [B, K]; every row must
    show the same number K >= 1 of tokens (so that the rows stack)."""
    if mask.ndim != 2:
        raise ValueError(f"mask: expected [B, N], got shape {tuple(mask.shape)}")
    visible = (~mask).sum(-1)
    if bool((visible != visible[0]).any()) or int(visible[0]) == 0:
        raise ValueError("mask: expected the same number (>= 1) of visible tokens in every row, got "
                         f"{sorted(set(visible.tolist()))}")
    return torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, :int(visible[0])]


def take_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather tokens [B, N, D] at per-sample positions [B, K] -> [B, K, D]."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of per-token losses [B, N] over the hidden tokens (mask True) only: the MAE objective.

    With no hidden token there is nothing to reconstruct and the term is 0 (still part of the graph), as
    happens when a multi-modal allocation leaves one modality fully visible in a whole batch.
    """
    if per_token.shape != mask.shape:
        raise ValueError(f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} differ in shape")
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)
