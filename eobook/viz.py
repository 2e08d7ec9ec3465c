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
