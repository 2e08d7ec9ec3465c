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
def render_elevation(image, reference, cmap: str = "terrain") -> np.ndarray:
    """DEPTH / elevation [1,H,W] -> RGBA [H,W,4] on ``reference``'s value range; NaN (hidden) pixels white.
    A renderer for :func:`plot_reconstructions`."""
    import matplotlib.pyplot as plt

    image, reference = np.asarray(image, dtype=np.float32)[0], np.asarray(reference, dtype=np.float32)
    lo, hi = np.nanmin(reference), np.nanmax(reference)
    rgba = plt.get_cmap(cmap)(np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1))
    rgba[np.isnan(image)] = 1.0
    return rgba


def render_class_map(image, colors: Sequence[str], ignore_index: int = -1) -> np.ndarray:
    """Class ids [1,H,W] or [H,W] -> RGB [H,W,3] in ``colors``; ``ignore_index`` (hidden) pixels white.
    With ``functools.partial(render_class_map, colors=...)`` a renderer for :func:`plot_reconstructions`."""
    from matplotlib.colors import to_rgb

    ids = np.asarray(image).reshape(np.asarray(image).shape[-2:]).astype(np.int64)
    palette = np.array([to_rgb(c) for c in colors] + [(1.0, 1.0, 1.0)])
    return palette[np.where(ids == ignore_index, len(colors), ids)]


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
    panels = ((label_sim, "label similarity s_ij (soft targets)", 0.0),
              (embed_sim, "learned similarity cos(q_i, k_j)", -1.0))
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


# --- Fus-MAE / masked reconstruction figures ---
def stretch_like(image, reference, lower: float = 2, upper: float = 98) -> np.ndarray:
    """Percentile-stretch ``image`` [C,H,W] to [0, 1] with the percentiles of ``reference`` (per channel),
    so that masked input, reconstruction and original share one colour scale; NaN stays NaN."""
    image, reference = np.asarray(image, dtype=np.float32), np.asarray(reference, dtype=np.float32)
    lo, hi = np.nanpercentile(reference, [lower, upper], axis=(-2, -1), keepdims=True)
    return np.clip((image - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def render_s2(image, reference, bands: Sequence[int] = (7, 3, 2)) -> np.ndarray:
    """S2 [C,H,W] -> RGB [H,W,3]; default NIR false colour (B08, B04, B03 in ``S2_L2A_BANDS`` order).
    NaN pixels (hidden patches) are white."""
    rgb = stretch_like(np.asarray(image)[list(bands)], np.asarray(reference)[list(bands)]).transpose(1, 2, 0)
    return np.where(np.isnan(rgb), 1.0, rgb)


def render_sar(image, reference) -> np.ndarray:
    """S1 [2,H,W] (VV, VH) -> RGB [H,W,3] composite (VV, VH, VV - VH), as :func:`show_sar`; NaN white."""
    def composite(x):
        x = np.asarray(x, dtype=np.float32)
        return np.stack([x[0], x[1], x[0] - x[1]])
    rgb = stretch_like(composite(image), composite(reference)).transpose(1, 2, 0)
    return np.where(np.isnan(rgb), 1.0, rgb)


def plot_reconstructions(examples: dict, render: dict, samples: int = 3, synthetic: bool = False,
                         title: str | None = None):
    """Masked input / reconstruction / original for any modalities (MAE Fig. 2 style).

    Args:
        examples: {name: {"masked", "reconstruction", "original"}}, each [B,C,H,W] (tensor or array);
            hidden pixels of "masked" are NaN. One block of three columns per name, one row per sample.
        render: {name: callable(image [C,H,W], original [C,H,W]) -> [H,W,3] or [H,W]} (e.g.
            :func:`render_s2`, :func:`render_sar`); it receives the original to share its colour scale.
        samples: rows (at most the batch size).
    Returns:
        the figure.
    """
    import matplotlib.pyplot as plt

    names = list(examples)
    missing = [n for n in names if n not in render]
    if missing:
        raise ValueError(f"render: no renderer for {missing}")
    arrays = {n: {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
                  for k, v in examples[n].items()} for n in names}
    samples = min(samples, len(arrays[names[0]]["original"]))
    columns = ("masked input", "reconstruction", "original")
    fig, axes = plt.subplots(samples, 3 * len(names), figsize=(1.9 * 3 * len(names), 2.0 * samples), squeeze=False)
    for j, name in enumerate(names):
        for i in range(samples):
            original = arrays[name]["original"][i]
            for k, key in enumerate(("masked", "reconstruction", "original")):
                ax = axes[i, 3 * j + k]
                ax.imshow(render[name](arrays[name][key][i], original), cmap="gray", interpolation="nearest")
                ax.set_axis_off()
                if i == 0:
                    ax.set_title(f"{name}\n{columns[k]}", fontsize="small")
    fig.suptitle(f"{title or 'Reconstructions of masked patches'}{' (synthetic sample world)' if synthetic else ''}")
    fig.tight_layout()
    return fig


def plot_cross_attention(rows: dict, query: int, grid: int, synthetic: bool = False, title: str | None = None):
    """Cross-attention maps: per direction, the query patch, where it attends in the other modality, and
    the whole head-averaged attention matrix.

    Args:
        rows: {label: (attention [Nq, Nk], query image [H,W,3], key image [H,W,3])}, e.g.
            {"SAR -> optical": (maps["s1->s2"][0], sar_rgb, s2_rgb), ...} with Nq = Nk = grid * grid.
        query: index of the query patch (row-major) outlined in the first column.
        grid: patches per side.
    Returns:
        the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(len(rows), 3, figsize=(10.5, 3.4 * len(rows)), squeeze=False)
    for ax_row, (label, (attention, query_image, key_image)) in zip(axes, rows.items()):
        attention = np.asarray(attention, dtype=np.float32)
        size = np.asarray(query_image).shape[0]
        patch = size / grid
        ax_row[0].imshow(query_image)
        ax_row[0].add_patch(Rectangle(((query % grid) * patch - 0.5, (query // grid) * patch - 0.5), patch, patch,
                                      fill=False, edgecolor="red", linewidth=2))
        ax_row[0].set_title(f"{label}: query patch {query}", fontsize="medium")
        heat = np.kron(attention[query].reshape(grid, grid), np.ones((int(patch), int(patch))))
        ax_row[1].imshow(key_image)
        overlay = ax_row[1].imshow(heat, cmap="inferno", alpha=0.6, extent=(-0.5, size - 0.5, size - 0.5, -0.5))
        fig.colorbar(overlay, ax=ax_row[1], fraction=0.046)
        ax_row[1].set_title("its attention over the other modality", fontsize="medium")
        matrix = ax_row[2].imshow(attention, cmap="viridis", interpolation="nearest")
        fig.colorbar(matrix, ax=ax_row[2], fraction=0.046)
        ax_row[2].set_xlabel("key patch")
        ax_row[2].set_ylabel("query patch")
        ax_row[2].set_title("attention matrix (mean over heads)", fontsize="medium")
        for ax in ax_row[:2]:
            ax.set_axis_off()
    fig.suptitle(f"{title or 'XAttnEncoder cross-attention'}{' (synthetic sample world)' if synthetic else ''}")
    fig.tight_layout()
    return fig


# --- CromSS figures ---
def plot_variance_curves(curves: dict, title: str | None = None, synthetic: bool = False):
    """Fig. 13 of CromSS: accumulated PCA variance ratio against the fraction of components, one panel per
    model and one curve per encoder module, beside the diagonal y = x. ``curves``: {model: [curve per module]}."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.4), squeeze=False)
    for ax, (model, per_module) in zip(axes[0], curves.items()):
        for k, curve in enumerate(per_module, start=1):
            curve = np.asarray(curve)
            ax.plot(np.arange(1, len(curve) + 1) / len(curve), curve, label=f"module {k}")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="y = x")
        ax.set_xlabel("fraction of principal components")
        ax.set_title(model)
    axes[0, 0].set_ylabel("accumulated variance ratio")
    axes[0, -1].legend(loc="lower right", fontsize="small", frameon=False)
    fig.suptitle(f"{title or 'Accumulated variance ratio'}{' (synthetic sample world)' if synthetic else ''}")
    fig.tight_layout()
    return fig


def plot_selection_masks(rows: dict, synthetic: bool = False, title: str | None = None):
    """Fig. 11 of CromSS: selection masks (values in [0, 1]) per row, e.g. {"season 1": {"W_l from F": [H,W], ...}}."""
    import matplotlib.pyplot as plt

    names = list(next(iter(rows.values())))
    fig, axes = plt.subplots(len(rows), len(names), figsize=(2.6 * len(names), 2.6 * len(rows)), squeeze=False)
    for ax_row, (row_name, masks) in zip(axes, rows.items()):
        for ax, name in zip(ax_row, names):
            image = ax.imshow(np.asarray(masks[name]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{row_name}: {name}", fontsize="small")
            ax.set_axis_off()
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    fig.suptitle(f"{title or 'Sample selection masks'}{' (synthetic sample world)' if synthetic else ''}")
    return fig


def plot_weight_drift(kl: dict, ax=None, title: str | None = None):
    """Fig. 12 of CromSS: -1/log(KL) of encoder and decoder weights before vs after fine-tuning, per
    initialisation. ``kl``: {weights name: {"encoder": KL, "decoder": KL}}."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    names, parts = list(kl), ("encoder", "decoder")
    x = np.arange(len(names))
    for i, part in enumerate(parts):
        values = [-1 / np.log(max(kl[n][part], 1e-300)) for n in names]
        ax.bar(x + (i - 0.5) * 0.38, values, width=0.38, label=part)
    ax.set_xticks(x, names)
    ax.set_ylabel("-1 / log(KL)")
    ax.legend(frameon=False, fontsize="small")
    ax.set_title(title or "Weight drift during fine-tuning")
    return ax


# --- DINO-MM figures ---
def plot_sensor_drop_views(x, views, modes: Sequence[str], synthetic: bool = False):
    """DINO-MM inputs before and after augmentation + RandomSensorDrop. ``x`` [B,14,H,W] (12 S2 bands, then
    S1 VH, VV), ``views`` a list of [B,14,h,w] views, ``modes[v][i]`` what view v of sample i kept
    ("S1+S2", "S2", "S1"). Per sample: S2 false colour (B08, B04, B03) row and SAR row. Returns the figure."""
    import matplotlib.pyplot as plt

    n, cols = len(x), 1 + len(views)
    fig, axes = plt.subplots(2 * n, cols, figsize=(1.9 * cols, 3.8 * n), squeeze=False)
    for i in range(n):
        images = [np.asarray(x[i])] + [np.asarray(v[i]) for v in views]
        for j, image in enumerate(images):
            head = "input" if j == 0 else f"view {j}: keeps {modes[j - 1][i]}"
            false_colour(image[:12], bands=(7, 3, 2), ax=axes[2 * i, j], title=f"{head}\nS2",
                         synthetic=synthetic and i == 0 and j == 0)
            show_sar(image[[13, 12]], ax=axes[2 * i + 1, j], title="S1 (VV, VH)")
    fig.tight_layout()
    return fig


def plot_dino_curves(history: Sequence[dict], out_dim: int, title: str | None = None):
    """DINO training curves: loss, learning rate, teacher temperature tau_t, and the collapse monitor
    (teacher entropy against log K, KL of the teacher's output to the centre). Returns the figure."""
    import matplotlib.pyplot as plt

    step = [row["step"] for row in history]
    series = lambda key: [row[key] for row in history]  # noqa: E731
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, key, label in zip(axes[:3], ("loss", "lr", "teacher_temp"), ("DINO loss", "learning rate", "tau_t")):
        ax.plot(step, series(key))
        ax.set(xlabel="step", title=label)
    ax = axes[3]
    ax.plot(step, series("teacher_entropy"), color="C0", label="teacher entropy H(P_t)")
    ax.axhline(np.log(out_dim), color="C0", ls=":", label="log K (uniform collapse)")
    ax.set(xlabel="step", ylabel="nats", title="collapse monitor")
    twin = ax.twinx()
    twin.plot(step, series("kl_to_center"), color="C3", label="KL(teacher || centre)")
    twin.set_ylabel("KL (nats)", color="C3")
    ax.legend(handles=ax.get_lines() + twin.get_lines(), fontsize="x-small", frameon=False, loc="center right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_attention_maps(x, maps, synthetic: bool = False):
    """DINO self-attention of the CLS token in the last block, one column per head, beside the S2 false
    colour of the input. ``x`` [B,14,H,W], ``maps`` [B,heads,h,w]. Returns the figure."""
    import matplotlib.pyplot as plt

    n, heads = maps.shape[0], maps.shape[1]
    fig, axes = plt.subplots(n, heads + 1, figsize=(1.9 * (heads + 1), 2.0 * n), squeeze=False)
    for i in range(n):
        false_colour(np.asarray(x[i])[:12], bands=(7, 3, 2), ax=axes[i, 0], title="input" if i == 0 else None,
                     synthetic=synthetic and i == 0)
        for h in range(heads):
            axes[i, h + 1].imshow(np.asarray(maps[i, h]), cmap="inferno", interpolation="nearest")
            _title(axes[i, h + 1], f"head {h}" if i == 0 else None, False)
    fig.tight_layout()
    return fig


# --- Side-by-side figures (chapter 6) ---
def plot_quality_vs_cost(points: dict, xlabel: str, ylabel: str, baseline: float | None = None,
                         baseline_label: str = "random init", title: str | None = None, synthetic: bool = False):
    """One point per method at (cost, mean quality) with the seeds' range as a vertical bar: ``points`` maps a
    name to ``(cost, mean, low, high)``; ``baseline`` is drawn as a dashed line. Cost on a log axis. Returns the
    figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for k, (name, (cost, mean, low, high)) in enumerate(points.items()):
        color = f"C{k}"
        ax.errorbar([cost], [mean], yerr=[[mean - low], [high - mean]], fmt="o", color=color, capsize=4, ms=7)
        ax.annotate(name, (cost, mean), textcoords="offset points", xytext=(7, 5), fontsize=9, color=color)
    if baseline is not None:
        ax.axhline(baseline, color="0.4", ls="--", lw=1)
        ax.annotate(baseline_label, (ax.get_xlim()[0], baseline), textcoords="offset points", xytext=(4, 4),
                    fontsize=9, color="0.3")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(f"{title or ''}{' (synthetic)' if synthetic else ''}".strip() or None)
    fig.tight_layout()
    return fig


def plot_scores_by_input(scores: dict, tasks: dict, title: str | None = None, synthetic: bool = False):
    """Grouped bars per task: for each input (S1, S2, S1+S2) one bar per encoder at its seeds' mean, the range
    of the seeds as an error bar. ``scores`` maps an encoder to ``{(task, inputs): [score of each seed]}``;
    ``tasks`` maps a task to ``(axis label, inputs)``. Returns the figure."""
    import matplotlib.pyplot as plt

    names = list(scores)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.0), squeeze=False,
                             gridspec_kw={"width_ratios": [len(inputs) + 0.6 for _, inputs in tasks.values()]})
    width = 0.8 / len(names)
    for ax, (task, (label, inputs)) in zip(axes[0], tasks.items()):
        for k, name in enumerate(names):
            runs = [np.asarray(scores[name][task, i], dtype=float) for i in inputs]
            means = np.array([r.mean() for r in runs])
            err = np.array([[m - r.min() for m, r in zip(means, runs)], [r.max() - m for m, r in zip(means, runs)]])
            ax.bar(np.arange(len(inputs)) + (k - (len(names) - 1) / 2) * width, means, width, yerr=err, capsize=2,
                   color=f"C{k}", label=name)
        ax.set_xticks(np.arange(len(inputs)), inputs)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    if title or synthetic:
        fig.suptitle(f"{title or ''}{' (synthetic)' if synthetic else ''}".strip())
    fig.tight_layout()
    return fig


def plot_segmentations(s2, target, predictions: dict, classes: Sequence[str], colors: Sequence[str],
                       synthetic: bool = False, ignore_index: int = -1):
    """One scene: its S2 true colour, the ground truth and each encoder's prediction (``predictions``: name ->
    class map [H, W]), five panels to a row, with one legend. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n = 2 + len(predictions)
    columns = min(n, 5)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.7 * columns + 1.8, 2.9 * rows), squeeze=False)
    panels = axes.ravel()
    false_colour(s2, ax=panels[0], title="S2", synthetic=synthetic)
    maps = {"ground truth": np.asarray(target), **{k: np.asarray(v) for k, v in predictions.items()}}
    cmap = ListedColormap(list(colors))
    for ax, (name, labels) in zip(panels[1:], maps.items()):
        ax.imshow(np.ma.masked_equal(labels, ignore_index), cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5,
                  interpolation="nearest")
        _title(ax, name, False)
    for ax in panels[n:]:
        ax.set_axis_off()
    present = sorted({int(c) for m in maps.values() for c in np.unique(m) if c != ignore_index})
    axes[0, -1].legend(handles=[Patch(color=colors[c], label=classes[c]) for c in present], loc="upper left",
                       bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# The package at a glance (book/package.md)
# --------------------------------------------------------------------------------------------------
#: The boxes of :func:`package_diagram`: (column, row, module, what it holds); rows count from the top.
PACKAGE_BOXES = (
    (0, 0, "eobook.data", "readers of the real layouts,\nsample world, packed store"),
    (1, 0, "eobook.methods.<paper>", "config: profiles, paper values\nmodel: networks, loss\nevaluation: the paper's protocol"),
    (2, 0, "eobook.train", "fit: the one loop\noptim, schedules, EMA,\ncheckpoints and resume"),
    (3, 0, "eobook.evaluate", "probes, fine-tuning, transfer\n(trained by fit), metrics,\nrandom-init baselines"),
    (4, 0, "eobook.viz / analysis", "figures, PCA curves,\nKL drift; run folder:\nmetrics.json, figures/"),
    (1, 1, "eobook.augment / masking / rng", "batched augmentations, token\nmasks, per-sample draws"),
    (2, 1, "eobook.config / chapters", "Chapter records, profiles,\noverrides, deviations"),
    (3, 1, "notebooks/ + python -m eobook", "narrate, configure, plot;\nPapermill, torchrun"),
)
#: Arrows of the flow data -> method -> loop -> evaluation -> figures, and who uses whom below it.
PACKAGE_ARROWS = ((0, 1), (1, 2), (2, 3), (3, 4), (5, 1), (6, 2), (7, 6))


def package_diagram():
    """The flow data -> method -> loop -> evaluation -> figures between eobook's modules, as a figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(15, 5.2))
    width, height, centres = 2.5, 1.5, []
    for col, row, name, text in PACKAGE_BOXES:
        x, y = col * 3.0 + (1.5 if row else 0.0), -row * 2.4
        main = row == 0
        ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.05",
                                    facecolor="#dbe9f6" if main else "#f2f2f2", edgecolor="#2b5d8a" if main else "#777"))
        ax.text(x + width / 2, y + height - 0.2, name, ha="center", va="top", fontsize=9.5, fontweight="bold",
                family="monospace")
        ax.text(x + width / 2, y + height / 2 - 0.2, text, ha="center", va="center", fontsize=8.5)
        centres.append((x, y))
    for a, b in PACKAGE_ARROWS:
        (xa, ya), (xb, yb) = centres[a], centres[b]
        if ya < yb:  # from below up into a box of the flow
            start, end = (xa + width / 2, ya + height + 0.05), (xb + width / 2, yb - 0.05)
        elif xa < xb:  # along a row, left to right
            start, end = (xa + width + 0.05, ya + height / 2), (xb - 0.05, yb + height / 2)
        else:  # along a row, right to left
            start, end = (xa - 0.05, ya + height / 2), (xb + width + 0.05, yb + height / 2)
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color="#2b5d8a", lw=1.4))
    ax.set_xlim(-0.2, 14.8)
    ax.set_ylim(-2.7, 1.8)
    ax.set_axis_off()
    ax.set_title("One chapter's run: data -> method -> the one loop -> evaluation -> figures", fontsize=11)
    fig.tight_layout()
    return fig
