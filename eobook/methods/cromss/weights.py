"""CromSS's released pretraining checkpoints (zhu-xlab/CromSS README) and their keys in :class:`.model.CromSS`.

Four PyTorch Lightning checkpoints of epoch 199 (13 or 9 S2 bands, middle or late fusion), saved by
``Unet_mm`` (``models/pl_pretrain_mm_sscom.py``), whose network is ``self.net``::

    {"state_dict": {"net.<...>": tensor}, "epoch": 199, "global_step": ..., "pytorch-lightning_version": ...,
     "hyper_parameters": AttributeDict(args=argparse.Namespace(...)), "optimizer_states": [...],
     "lr_schedulers": [...], "callbacks": {...}, "loops": {...}}

Middle fusion (``Unet_midF_2branch``): ``net.encoder1`` is the S1 encoder (2 channels), ``net.encoder`` the S2
encoder, and one ``net.decoder`` / ``net.segmentation_head`` serve both, as the book's middle fusion shares the
S2 branch's. Late fusion (``Unet_lateF_2branch``): ``net.model1`` is the S1 U-Net, ``net.model2`` the S2 U-Net.
Encoders are segmentation-models-pytorch ResNet-50 encoders (torchvision names, no ``fc``), decoders smp's
U-Net decoder (256, 128, 64, 32, 16), the same names in the book's smp. The authors' transfer scripts read the
same prefixes (``utils/finetune.py``: ``mfs1`` / ``mfs2`` / ``lfs1`` / ``lfs2``).
"""
from __future__ import annotations

from typing import Any

from ...data.bands import CROMSS_S2_BANDS, S1_BANDS, S2_L1C_BANDS
from ...weights import KeyMap, LoadReport, Released, load_strict
from .evaluation import TASKS
from .model import CromSS

_BASE = "https://huggingface.co/datasets/vikki23/NoLDO-S12/resolve/main/"
_TRAINING_STATE = ((r"^(optimizer_states|lr_schedulers|callbacks|loops)\.", "Lightning training state"),)
KEYMAPS = {
    "middle": KeyMap(skip=_TRAINING_STATE, rename=(
        (r"^state_dict\.net\.encoder1\.", "unets.s1.encoder."),
        (r"^state_dict\.net\.encoder\.", "unets.s2.encoder."),
        (r"^state_dict\.net\.(decoder|segmentation_head)\.", r"unets.s2.\1."))),
    "late": KeyMap(skip=_TRAINING_STATE, rename=(
        (r"^state_dict\.net\.model1\.", "unets.s1."),
        (r"^state_dict\.net\.model2\.", "unets.s2."))),
}


def _reported(fusion: str, s2_bands: int) -> dict[str, float]:
    """The paper's mIoU of these weights on the three transfer tasks (Tables II-IV), frozen and fine-tuned."""
    name = f"CromSS-{'midF' if fusion == 'middle' else 'lateF'}"
    out = {}
    for key, task in TASKS.items():
        for inputs in ("S1", "S2"):
            if inputs == "S1" and s2_bands == 9:
                continue  # the 9-band models' S1 encoders have no row of their own
            weights = f"{name} (9B)" if inputs == "S2" and s2_bands == 9 else name
            for encoder in ("frozen", "fine-tuned"):
                values = task.paper.get((inputs, weights, encoder))
                if values is not None and values[2] is not None:
                    out[f"{task.name} {inputs} {encoder} mIoU"] = values[2]
    return out


def _entry(s2_bands: int, fusion: str) -> Released:
    tag = f"weights-cromss-{s2_bands}B-{'mid' if fusion == 'middle' else 'late'}Fusion-epoch=199.ckpt"
    bands = S2_L1C_BANDS if s2_bands == 13 else CROMSS_S2_BANDS
    return Released(
        name=f"cromss-{s2_bands}b-{'midf' if fusion == 'middle' else 'latef'}", chapter="cromss",
        url=_BASE + tag.replace("=", "%3D"), file=tag,
        licence="MIT (zhu-xlab/CromSS); the file lies in the NoLDO-S12 dataset repository, see its card",
        encoder=f"two ResNet-50 U-Nets ({fusion} fusion) pretrained with CromSS: S1 (2 bands) and S2 "
                f"({s2_bands} bands) encoders, decoder(s) and 9-class heads",
        bands=tuple(f"S1 {b}" for b in S1_BANDS) + tuple(f"S2 {b}" for b in bands), input_px=256,
        normalisation="S2 L1C clipped to mean +/- 2 std of SSL4EO-S12 and scaled to [0, 1]; S1 dB the same "
                      "(the authors read SSL4EO-S12's uint8 release divided by 255)",
        reported=_reported(fusion, s2_bands),
        reported_source="Tables II-IV (DFC2020 PSPNet, SSL4EO-S12@DW DeepLabv3+, SSL4EO-S12@OSM FPN; mIoU %)",
        fields={"fusion": fusion, "s2_bands": s2_bands, "sample_selection": True, "encoder": "resnet50",
                "encoder_depth": 5, "decoder_channels": (256, 128, 64, 32, 16), "num_classes": 9,
                "pretrain_baseline": False},
        metadata_types=("argparse.Namespace", "lightning_fabric.utilities.data.AttributeDict",
                        "pytorch_lightning.utilities.parsing.AttributeDict"))


RELEASED = tuple(_entry(bands, fusion) for bands in (13, 9) for fusion in ("middle", "late"))


def load_released(module: CromSS, entry: Released, checkpoint: Any) -> LoadReport:
    """Put the authors' two U-Nets into ``module`` (built with ``entry.fields``: same fusion, same bands)."""
    return load_strict(module, checkpoint, KEYMAPS[module.fusion], entry.file)
