"""Analyses of what pretrained networks learned: PCA variance curves, weight drift, BN-statistics KL.

These are the encoder analyses of CromSS (Liu et al., 2025, "CromSS: Cross-modal pretraining with noisy
labels for remote sensing image segmentation", IEEE TGRS 63, Sec. IV-D/E), written for any network so
that every chapter can use them:

* :func:`accumulated_variance_ratio` (Fig. 13): how many principal components carry a feature set's
  variance; a curve near the diagonal ``y = x`` means the features are used evenly, a steep start means
  a few directions dominate (redundant features).
* :func:`weight_kl_divergence` (Fig. 12): how far fine-tuning moved a module's weight distribution.
* :func:`batchnorm_kl_divergence` (Fig. 8 c, d): how far apart two networks' batch-norm feature
  statistics are (e.g. a single-modal and a multimodal encoder over training).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

TensorLike = torch.Tensor | np.ndarray


def accumulated_variance_ratio(features: TensorLike) -> np.ndarray:
    """Cumulative explained-variance ratio of the principal components of ``features`` (Fig. 13).

    Args:
        features: [N, D] feature vectors (image-level: one per image; pixel-level: one per pixel).
    Returns:
        float64 [K] with K = min(N, D): entry k is the variance fraction carried by the first k + 1
        components (scikit-learn ``PCA``); it rises to 1. Plot it against ``(k + 1) / K`` beside y = x.
    """
    from sklearn.decomposition import PCA

    x = _as_numpy(features, "features").astype(np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"features: expected [N, D] with N >= 2 and D >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features: contains NaN or infinite values")
    if np.allclose(x.var(0), 0):
        raise ValueError("features: every dimension is constant; the explained variance is undefined")
    return np.cumsum(PCA().fit(x).explained_variance_ratio_)


def weight_kl_divergence(before: TensorLike | Iterable[TensorLike], after: TensorLike | Iterable[TensorLike],
                         bins: int = 100, eps: float = 1e-10) -> float:
    """Discrete KL(P_before || P_after) of two weight histograms (Fig. 12).

    Both weight sets are flattened and binned with ``bins`` even bins over their common range
    ``[min(before, after), max(before, after)]``; P and Q are the normalised counts and
    ``KL = sum_b P_b log(P_b / Q_b)`` with ``eps`` added to every bin so that empty bins give no log 0.
    The paper plots ``-1 / log(KL)`` for readability.

    Args:
        before, after: a tensor/array or an iterable of them (e.g. ``module.parameters()``).
        bins: number of even bins (n = 100 in the paper).
    """
    if bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins}")
    p_values, q_values = _flat(before, "before"), _flat(after, "after")
    low, high = min(p_values.min(), q_values.min()), max(p_values.max(), q_values.max())
    if high == low:  # both sets are one and the same constant
        return 0.0
    p = np.histogram(p_values, bins=bins, range=(low, high))[0] + eps
    q = np.histogram(q_values, bins=bins, range=(low, high))[0] + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def batchnorm_statistics(module: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer name: (running_mean [C], running_var [C])}`` of every batch-norm layer of ``module``."""
    return {name: (m.running_mean.detach().cpu().clone(), m.running_var.detach().cpu().clone())
            for name, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None}


def batchnorm_kl_divergence(stats_a: dict[str, tuple[torch.Tensor, torch.Tensor]] | nn.Module,
                            stats_b: dict[str, tuple[torch.Tensor, torch.Tensor]] | nn.Module,
                            eps: float = 1e-5) -> float:
    """Mean KL(N_a || N_b) between the per-channel feature Gaussians two networks' BN layers store (Fig. 8 c, d).

    Each BN channel summarises its feature by a mean and a variance; for each channel the closed-form
    ``KL(N(m_a, v_a) || N(m_b, v_b)) = 0.5 (log(v_b / v_a) + (v_a + (m_a - m_b)^2) / v_b - 1)`` is taken
    (``eps`` added to the variances as BN does), then averaged over all channels of all shared layers.
    The paper does not spell out its estimator; this is the book's reading of "KL divergence of the
    feature means and standard deviations in the batch normalization layers".

    Args:
        stats_a, stats_b: :func:`batchnorm_statistics` dicts, or modules to read them from; only layers
            present in both (same name and channel count) are compared.
    """
    a = batchnorm_statistics(stats_a) if isinstance(stats_a, nn.Module) else stats_a
    b = batchnorm_statistics(stats_b) if isinstance(stats_b, nn.Module) else stats_b
    shared = [k for k in a if k in b and a[k][0].shape == b[k][0].shape]
    if not shared:
        raise ValueError("stats_a, stats_b: no batch-norm layer with the same name and size in both")
    kls = []
    for name in shared:
        (m_a, v_a), (m_b, v_b) = a[name], b[name]
        v_a, v_b = v_a.double() + eps, v_b.double() + eps
        kls.append(0.5 * (torch.log(v_b / v_a) + (v_a + (m_a.double() - m_b.double()) ** 2) / v_b - 1))
    return float(torch.cat(kls).mean())


def pooled_features(feature_maps: Sequence[torch.Tensor], level: str = "image", pixels_per_image: int = 64,
                    generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Turn per-module feature maps [B, C_k, H_k, W_k] into feature sets [N, C_k] for Fig. 13.

    ``level="image"``: global average pooling, one vector per image (the paper's EuroSAT curves).
    ``level="pixel"``: ``pixels_per_image`` feature vectors per image at the same random positions in
    relative coordinates for every module (the paper's SSL4EO-S12@DW curves).
    """
    if level not in ("image", "pixel"):
        raise ValueError(f"level: expected 'image' or 'pixel', got {level!r}")
    if level == "image":
        return [f.float().mean((2, 3)) for f in feature_maps]
    batch = feature_maps[0].shape[0]
    pos = torch.rand(batch, pixels_per_image, 2, generator=generator)  # relative (row, col) in [0, 1)
    out = []
    for f in feature_maps:
        h, w = f.shape[-2:]
        rows, cols = (pos[..., 0] * h).long(), (pos[..., 1] * w).long()  # [B, P]
        picked = f.float()[torch.arange(batch)[:, None], :, rows, cols]  # [B, P, C]
        out.append(picked.reshape(-1, f.shape[1]))
    return out


def _as_numpy(x: TensorLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name}: expected a tensor or an array, got {type(x).__name__}")


def _flat(values: TensorLike | Iterable[TensorLike], name: str) -> np.ndarray:
    parts = [values] if isinstance(values, (torch.Tensor, np.ndarray)) else list(values)
    if not parts:
        raise ValueError(f"{name}: no weights given")
    flat = np.concatenate([_as_numpy(p, name).reshape(-1) for p in parts]).astype(np.float64)
    if flat.size == 0 or not np.isfinite(flat).all():
        raise ValueError(f"{name}: expected a non-empty set of finite weights")
    return flat
