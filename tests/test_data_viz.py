"""Figures of real and synthetic samples render, with legends and 'synthetic' in the titles."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from eobook.data import BigEarthNetMM, DW_CLASSES, SSL4EOS12, ensure_sample_world, real_data_root  # noqa: E402
from eobook.data.bands import DW_COLORS  # noqa: E402
from eobook.viz import false_colour, show_label_map, show_sar  # noqa: E402


def test_synthetic_and_real_figures(tmp_path):
    world = ensure_sample_world("tiny", 0)
    s = SSL4EOS12(world / "SSL4EO-S12", modalities=("s1", "s2c"), dw_labels=True, seasons=1)[0]
    fig = Figure(figsize=(9, 3))
    axes = fig.subplots(1, 3)
    rgb = false_colour(s["s2"].numpy(), bands=(7, 3, 2), ax=axes[0], title="S2 NIR false colour", synthetic=True)
    show_sar(s["s1"].numpy(), ax=axes[1], title="S1", synthetic=True)
    show_label_map(s["dw"].numpy(), DW_CLASSES, DW_COLORS, axes[2], title="Dynamic World", synthetic=True)
    assert rgb.shape == (36, 36, 3) and 0 <= rgb.min() and rgb.max() <= 1
    assert all("synthetic" in ax.get_title() for ax in axes) and axes[2].get_legend() is not None
    fig.savefig(tmp_path / "synthetic.png")
    real = real_data_root()
    if real is not None and (real / "bigearthnet-mm-v1").is_dir():
        sample = BigEarthNetMM(real / "bigearthnet-mm-v1")[0]
        fig = Figure()
        ax = fig.subplots()
        false_colour(sample["s2"].numpy(), ax=ax, title="BigEarthNet-MM (real)")
        assert "synthetic" not in ax.get_title()
        fig.savefig(tmp_path / "real.png")
    assert (tmp_path / "synthetic.png").stat().st_size > 1000
