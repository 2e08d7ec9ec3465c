"""The one optimizer factory and its parameter groups (weight decay only where it belongs)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("adamw", "adam", "sgd")


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Full names of the parameters that submodules exempt from weight decay through timm's convention,
    a ``no_weight_decay()`` method returning local names (timm's ViT: ``pos_embed``, ``cls_token``)."""
    names = set()
    for prefix, sub in module.named_modules():
        if hasattr(sub, "no_weight_decay"):
            names |= {f"{prefix}.{n}" if prefix else n for n in sub.no_weight_decay()}
    return names


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW/SGD groups: matrices and kernels decay; biases, norm scales, tokens, positional embeddings
    and whatever ``no_weight_decay()`` names do not (MAE, DINO, MoCo v3). Frozen parameters are left out.

    The decaying group carries ``apply_wd_schedule``: the loop's weight-decay schedule updates it only.
    """
    exempt = no_weight_decay_names(module)
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = (p.ndim <= 1 or name.endswith(".bias") or "token" in name or "pos_embed" in name or name in exempt)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "apply_wd_schedule": True},
            {"params": no_decay, "weight_decay": 0.0, "apply_wd_schedule": False}]


def build_optimizer(groups: list[dict[str, Any]], name: str, lr: float, *, betas: tuple[float, float] = (0.9, 0.999),
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adamw``, ``adam`` or ``sgd`` (with momentum) over ``groups``; each group keeps its weight decay."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {name!r}")
