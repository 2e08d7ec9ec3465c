"""SoftCon's released backbones (zhu-xlab/softcon README) and their keys in the book's :class:`.model.Backbone`.

Six files, each a plain state dict of a backbone as the README builds it before ``load_state_dict``:

* ResNet-50: torchvision's ``resnet50`` with ``conv1`` for 13 (or 2) bands and ``fc = Identity`` (so no ``fc.*``
  keys). timm's ``resnet50``, the book's, uses the same names.
* ViT-S/14, ViT-B/14: DINOv2's ``vision_transformer`` (``img_size=224``, ``block_chunks=0`` so blocks are not
  nested, ``init_values=1e-5`` so LayerScale ``ls1.gamma`` / ``ls2.gamma``, no register tokens). timm's DINOv2
  ViTs use the same names and the same 16 x 16 + 1 positional grid at 224 px; DINOv2's ``mask_token`` (its
  masked-image pretraining) is not used to encode an image and has no counterpart in timm.

Loaded into the trainable branch's backbone and copied into the momentum branch, as pretraining starts.
"""
from __future__ import annotations

from typing import Any

from ...data.bands import S1_BANDS, S2_L1C_BANDS
from ...weights import KeyMap, LoadReport, Released, load_strict
from .evaluation import PAPER_RESULTS
from .model import SoftCon

_BASE = "https://huggingface.co/wangyi111/softcon/resolve/main/"
_NORMALISATION = ("per channel: clipped to mean +/- 2 std of SSL4EO-S12 and scaled to [0, 1] (the README's "
                  "normalize() scales to uint8 0-255)")
_ARCH_NAMES = {"resnet50": ("rn50", "RN50"), "vit_small_patch14_dinov2": ("vits14", "ViT-S/14"),
               "vit_base_patch14_dinov2": ("vitb14", "ViT-B/14")}
_MODALITIES = {"s2c": ("B13", "ms", "MS", S2_L1C_BANDS), "s1": ("B2", "sar", "SAR", S1_BANDS)}


def _entry(arch: str, modality: str) -> Released:
    short, arch_name = _ARCH_NAMES[arch]
    prefix, suffix, modality_name, bands = _MODALITIES[modality]
    ben, eurosat = PAPER_RESULTS[arch, modality]
    fields: dict[str, Any] = {"arch": arch, "modality": modality, "img_size": 224, "weights": "",
                              "ablation_lambdas": ()}
    if arch == "resnet50":
        fields["mask_ratio"] = 0.0
    fields["probe_blocks"] = 4 if arch == "vit_base_patch14_dinov2" else 1  # README: ViT-B's head on 4 layers
    return Released(
        name=f"softcon-{short}-{suffix}", chapter="softcon", url=f"{_BASE}{prefix}_{short}_softcon.pth",
        file=f"{prefix}_{short}_softcon.pth", licence="Apache-2.0 (zhu-xlab/softcon)",
        encoder=f"{arch_name} backbone, {len(bands)} {modality_name} bands", bands=bands, input_px=224,
        normalisation=_NORMALISATION,
        reported={"BigEarthNet-10% linear mAP": ben, "EuroSAT linear OA": eurosat},
        reported_source="the authors' README (Pretrained models)" + (
            "; ViT-B with a linear head on the last 4 layers" if arch == "vit_base_patch14_dinov2" else ""),
        fields=fields,
        notes="The backbone only: no projector or predictor was released, so the chapter evaluates it and does "
              "not continue pretraining from it.")


RELEASED = tuple(_entry(arch, modality) for modality in ("s2c", "s1")
                 for arch in ("resnet50", "vit_small_patch14_dinov2", "vit_base_patch14_dinov2"))

KEYMAP = KeyMap(skip=((r"^mask_token$", "DINOv2's mask token for masked-image pretraining, unused to encode"),),
                rename=((r"^", ""),))


def load_released(module: SoftCon, entry: Released, checkpoint: Any) -> LoadReport:
    """Put the authors' backbone into both branches of ``module`` (built with ``entry.fields``)."""
    report = load_strict(module.encoder.net, checkpoint, KEYMAP, entry.file)
    module.momentum_branch.encoder.load_state_dict(module.encoder.state_dict())
    return report
