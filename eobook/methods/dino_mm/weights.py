"""DINO-MM's released weights (zhu-xlab/DINO-MM README) and their keys in the book's :class:`.model.DINOMM`.

The authors published one checkpoint: DINO-MM's ViT-S/8 on the 14-channel input, epoch 99 of 100. It is the
whole DINO training state as ``main_dino_B14.py`` saves it::

    {"student": DDP state dict ("module.backbone.*", "module.head.*"),
     "teacher": state dict ("backbone.*", "head.*"; no DDP wrapper for a ViT, which has no batch norm),
     "optimizer": ..., "epoch": 100, "args": argparse.Namespace(...), "dino_loss": {"center": [1, 65536]},
     possibly "fp16_scaler": ...}

Backbone keys are timm's ViT keys (DINO's ViT uses the same names). Two things differ from the book's model:
the positional embedding is the 28 x 28 grid of DINO's default 224 px (the authors resize BigEarthNet to 128 px
and crop 112, interpolating the grid at every forward pass), resampled here once to the profile's grid; and the
head's weight-normalised last layer is stored as ``weight_g`` / ``weight_v`` (``nn.utils.weight_norm``) where the
book's parametrisation names them ``original0`` / ``original1``.
"""
from __future__ import annotations

from typing import Any

from ...weights import KeyMap, LoadReport, Released, load_strict, resample_pos_embed
from .evaluation import PAPER_TABLE2
from .model import DINOMM

RELEASED = (
    Released(
        name="dino-mm-vits8-s1s2", chapter="dino_mm",
        url="https://huggingface.co/wangyi111/dino-mm/resolve/main/B14_vits8_dinomm_ep99.pth",
        file="B14_vits8_dinomm_ep99.pth", licence="Apache-2.0 (zhu-xlab/DINO-MM)",
        encoder="ViT-S/8 student and teacher with DINO heads (K = 65,536), 14 input channels",
        bands=("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "VH", "VV"),
        input_px=128,
        normalisation="each band clipped to mean +/- 2 std of BigEarthNet-MM and scaled to [0, 1] (the authors "
                      "scaled to uint8 and back); S1 in dB (VH -19.22 +/- 5.42, VV -12.59 +/- 5.04)",
        reported={f"linear mAP {labels} {inputs}": value
                  for (labels, inputs), value in PAPER_TABLE2["DINO-MM"].items()},
        reported_source="Table 2 (linear probe on the frozen teacher, BigEarthNet-MM)",
        fields={"embed_dim": 384, "depth": 12, "num_heads": 6, "patch_size": 8, "out_dim": 65536,
                "head_hidden_dim": 2048, "head_bottleneck_dim": 256, "norm_last_layer": True},
        metadata_types=("argparse.Namespace",),
        notes="The only released DINO-MM model. The paper's S1 and S2 columns evaluate this same S1+S2 model with "
              "the other sensor's channels zeroed (Sec. 3.1); no S2-only teacher was published."),
)

KEYMAP = KeyMap(
    skip=((r"^optimizer\.", "optimiser state, not needed to evaluate"),
          (r"^fp16_scaler\.", "mixed-precision loss-scaler state")),
    rename=((r"^teacher\.", "teacher."),
            (r"^student\.module\.", "student."),
            (r"^dino_loss\.center$", "loss.center"),
            (r"\.last_layer\.weight_g$", ".last_layer.parametrizations.weight.original0"),
            (r"\.last_layer\.weight_v$", ".last_layer.parametrizations.weight.original1")))


def load_released(module: DINOMM, entry: Released, checkpoint: Any) -> LoadReport:
    """Put the authors' student, teacher and DINO centre into ``module`` (a full-size :class:`DINOMM`)."""
    return load_strict(module, checkpoint, KEYMAP, entry.file, adapters={
        r"backbone\.pos_embed$": (resample_pos_embed(prefix_tokens=1), "positional grid resampled bicubically")})
