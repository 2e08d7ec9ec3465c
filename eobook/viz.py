"""Figures: false-colour Sentinel-2, SAR, label maps with legends.

Every function draws on a given matplotlib ``ax`` (no pyplot state). Pass ``synthetic=True`` for
sample-world data: the title then says so.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _title(ax, title: str | None, synthetic: bool) -> None:
    if title is not None or synthetic:
        ax.set_title(f"{title or ''}{' (synthetic)' if synthetic else ''}".strip())
    ax.set_axis_off()


def _stretch(x: np.ndarray, lower: float = 2, upper: float = 98) -> np.ndarray:
    """Percentile stretch per channel to [0, 1] (robust to clouds and snow)."""
    lo, hi = np.percentile(x, [lower, upper], axis=(-2, -1), keepdims=True)
    return np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def false_colour(s2, bands: Sequence[int] = (3, 2, 1), ax=None, title: str | None = None, synthetic: bool = False):
    """Show three bands of an S2 stack [C, H, W] as RGB (default B04, B03, B02 = true colour in
    ``S2_L1C_BANDS``/``S2_L2A_BANDS`` order; (7, 3, 2) is the classic NIR false colour). Returns the image."""
    rgb = _stretch(np.asarray(s2, dtype=np.float32)[list(bands)]).transpose(1, 2, 0)
    if ax is not None:
        ax.imshow(rgb)
        _title(ax, title, synthetic)
    return rgb


def show_sar(s1, ax=None, title: str | None = None, synthetic: bool = False):
    """Show S1 [2, H, W] (VV, VH) as the common RGB composite (VV, VH, VV/VH ratio). Returns the image."""
    s1 = np.asarray(s1, dtype=np.float32)
    rgb = _stretch(np.stack([s1[0], s1[1], s1[0] - s1[1]])).transpose(1, 2, 0)
    if ax is not None:
        ax.imshow(rgb)
        _title(ax, title, synthetic)
    return rgb


def show_label_map(labels, classes: Sequence[str], colors: Sequence[str], ax, title: str | None = None,
                   synthetic: bool = False, ignore_index: int = -1):
    """Draw an integer class map [H, W] with a legend of the classes present (ignored pixels white)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels = np.asarray(labels)
    shown = np.ma.masked_equal(labels, ignore_index)
    ax.imshow(shown, cmap=ListedColormap(list(colors)), vmin=-0.5, vmax=len(classes) - 0.5, interpolation="nearest")
    present = [int(c) for c in np.unique(labels) if c != ignore_index]
    ax.legend(handles=[Patch(color=colors[c], label=classes[c]) for c in present], loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    _title(ax, title, synthetic)
    return ax


# --- MultiMAE figures ---
def plot_multimae_reconstructions(examples: dict, samples: int = 3, synthetic: bool = False):
    """MultiMAE-EO appendix Fig. 5: per modality (RGB, DEPTH, SEG) and sample, masked input / reconstruction /
    ground truth. ``examples`` is the output of ``multimae_eo.reconstruction_examples`` (hidden pixels NaN,
    hidden SEG pixels -1, drawn white). Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from .data.bands import WORLDCOVER_CLASSES, WORLDCOVER_COLORS

    modalities = [m for m in ("rgb", "depth", "seg") if m in examples]
    samples = min(samples, len(examples[modalities[0]]["target"]))
    columns = ("masked input", "reconstruction", "ground truth")
    fig, axes = plt.subplots(samples, 3 * len(modalities), figsize=(2.0 * 3 * len(modalities), 2.1 * samples),
                             squeeze=False)
    seg_cmap = ListedColormap(list(WORLDCOVER_COLORS))
    seg_cmap.set_bad("white")
    for j, m in enumerate(modalities):
        images = [np.asarray(examples[m][k].detach().cpu()) for k in ("masked", "reconstruction", "target")]
        for i in range(samples):
            for k, image in enumerate(images):
                ax = axes[i, 3 * j + k]
                if m == "seg":
                    ax.imshow(np.ma.masked_less(image[i], 0), cmap=seg_cmap, vmin=-0.5,
                              vmax=len(WORLDCOVER_CLASSES) - 0.5, interpolation="nearest")
                elif m == "rgb":  # stretch with the ground truth's range so the three panels compare
                    ref = images[2][i]
                    lo, hi = np.nanpercentile(ref, [2, 98], axis=(-2, -1), keepdims=True)
                    rgb = np.clip((image[i] - lo) / np.maximum(hi - lo, 1e-6), 0, 1).transpose(1, 2, 0)
                    ax.imshow(np.where(np.isnan(rgb), 1.0, rgb))
                else:
                    ref = images[2][i, 0]
                    cmap = plt.get_cmap("terrain").copy()
                    cmap.set_bad("white")
                    ax.imshow(np.ma.masked_invalid(image[i, 0]), cmap=cmap, vmin=ref.min(), vmax=ref.max())
                ax.set_axis_off()
                if i == 0:
                    ax.set_title(f"{m.upper()}: {columns[k]}", fontsize="small")
    if synthetic:
        fig.suptitle("Reconstructions of masked tokens (synthetic sample world)")
    fig.tight_layout()
    return fig


def plot_token_allocation(counts, modalities: Sequence[str], ax=None, title: str | None = None):
    """Visible tokens per modality for each sample of a batch (a stacked bar per sample): the per-sample
    Dirichlet allocation of MultiMAE. ``counts`` is [B, M]. Returns the axis."""
    import matplotlib.pyplot as plt

    counts = np.asarray(counts)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    bottom = np.zeros(len(counts))
    for m, name in enumerate(modalities):
        ax.bar(np.arange(len(counts)), counts[:, m], bottom=bottom, label=name.upper(), width=0.85)
        bottom += counts[:, m]
    ax.set_xlabel("sample in the batch")
    ax.set_ylabel("visible tokens")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    ax.set_title(title or "Dirichlet allocation of visible tokens")
    return ax


def plot_loss_terms(history: Sequence[dict], keys: Sequence[str], ax=None, title: str | None = None):
    """Training curves of several logged scalars (e.g. MultiMAE's per-modality losses) against the step."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    steps = [row["step"] for row in history]
    for key in keys:
        ax.plot(steps, [row[key] for row in history], label=key)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    ax.set_title(title or "Training losses")
    return ax


def plot_segmentation_examples(rgb, target, pred, classes: Sequence[str], colors: Sequence[str],
                               synthetic: bool = False, ignore_index: int = -1):
    """MultiMAE-EO appendix Fig. 6: per sample, RGB input / ground truth / prediction, with legends.
    ``rgb`` [B,3,H,W] (bands R, G, B), ``target`` and ``pred`` [B,H,W] class ids. Returns the figure."""
    import matplotlib.pyplot as plt

    n = len(target)
    fig, axes = plt.subplots(n, 3, figsize=(9.5, 2.6 * n), squeeze=False)
    for i in range(n):
        false_colour(np.asarray(rgb[i]), bands=(0, 1, 2), ax=axes[i, 0], title="RGB input" if i == 0 else None,
                     synthetic=synthetic and i == 0)
        show_label_map(np.asarray(target[i]), classes, colors, axes[i, 1], "ground truth" if i == 0 else None,
                       ignore_index=ignore_index)
        show_label_map(np.asarray(pred[i]), classes, colors, axes[i, 2], "prediction" if i == 0 else None,
                       ignore_index=ignore_index)
    fig.tight_layout()
    return fig


# --- SoftCon figures ---
def plot_similarity_matrices(label_sim, embed_sim, synthetic: bool = False, title: str | None = None):
    """SoftCon Fig. 4: the label-similarity matrix (the soft targets) beside the learned embedding
    cosine-similarity matrix of the same batch in the same order. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    panels = ((label_sim, "label similarity (targets)", 0.0), (embed_sim, "embedding cosine similarity", -1.0))
    for ax, (matrix, name, low) in zip(axes, panels):
        image = ax.imshow(np.asarray(matrix), vmin=low, vmax=1.0, cmap="viridis", interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("scene (view 2)")
        ax.set_ylabel("scene (view 1)")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"{title or 'One batch, scenes sorted by label set'}{' (synthetic)' if synthetic else ''}")
    fig.tight_layout()
    return fig


def plot_siamese_masking(rgb, keep, patch_size: int, synthetic: bool = False):
    """SoftCon's Siamese masking: the momentum branch encodes the whole view, the trainable branch only
    the visible patches ``keep`` (indices in row-major patch order) of its view. ``rgb`` is [H, W, 3]."""
    import matplotlib.pyplot as plt

    rgb = np.asarray(rgb, dtype=np.float32)
    grid_w = rgb.shape[1] // patch_size
    visible = np.zeros((rgb.shape[0] // patch_size, grid_w), bool)
    keep = np.asarray(keep)
    visible[keep // grid_w, keep % grid_w] = True
    mask = np.kron(visible, np.ones((patch_size, patch_size), bool))[..., None]
    masked = np.where(mask, rgb, 0.5)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    suffix = " (synthetic)" if synthetic else ""
    for ax, image, name in ((axes[0], rgb, "momentum branch: whole view"),
                            (axes[1], masked, f"trainable branch: {len(keep)}/{visible.size} patches")):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(name + suffix, fontsize="medium")
        ax.set_xticks(np.arange(0, rgb.shape[1] + 1, patch_size) - 0.5, labels=[])
        ax.set_yticks(np.arange(0, rgb.shape[0] + 1, patch_size) - 0.5, labels=[])
        ax.grid(color="white", linewidth=0.5)
        ax.tick_params(length=0)
    fig.tight_layout()
    return fig


def plot_lambda_effect(label_sim, lambdas: Sequence[float], scores: dict, metric: str = "BigEarthNet linear mAP",
                       synthetic: bool = False):
    """The effect of SoftCon's lambda: the row-normalised training target ``lambda I + (1 - lambda) P``
    of one batch for each lambda, and the downstream score of each run in ``scores`` ({name: value})."""
    import matplotlib.pyplot as plt

    label_sim = np.asarray(label_sim, dtype=np.float64)
    rows = label_sim.sum(1, keepdims=True)
    p = np.divide(label_sim, rows, out=np.zeros_like(label_sim), where=rows > 0)
    fig, axes = plt.subplots(1, len(lambdas) + 1, figsize=(3.3 * (len(lambdas) + 1), 3.4))
    for ax, lam in zip(axes, lambdas):
        ax.imshow(lam * np.eye(len(p)) + (1 - lam) * p, vmin=0, cmap="magma", interpolation="nearest")
        ax.set_title(f"target, lambda = {lam:g}", fontsize="medium")
        ax.set_axis_off()
    names, values = list(scores), [scores[n] for n in scores]
    bars = axes[-1].bar(range(len(names)), values, color="tab:blue")
    axes[-1].bar_label(bars, fmt="%.1f", fontsize="small")
    axes[-1].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
    axes[-1].set_ylim(min(values) - 5, max(values) + 5)
    axes[-1].set_title(metric + (" (synthetic)" if synthetic else ""), fontsize="medium")
    fig.tight_layout()
    return fig
