"""Synthetic checkpoints in the authors' exact layouts, written as the authors' scripts save them.

Key names and shapes come from the authors' published model definitions (read, not imported or copied):
DINO's ``vision_transformer.py`` and ``DINOHead`` (zhu-xlab/DINO-MM), DINOv2's ``vision_transformer.py`` as the
SoftCon README builds it, torchvision's ``resnet50`` (SoftCon, and segmentation-models-pytorch's ResNet encoders
in CromSS), smp's U-Net decoder and segmentation head, and the save calls: DINO's ``save_dict``, SoftCon's plain
state dicts, PyTorch Lightning's checkpoint of ``Unet_mm`` (``self.net``). The tensors are random (seeded); the
tests load them through the book's loaders and compare with the same tensors put in by hand.
"""
from __future__ import annotations

import argparse
import collections
import sys
import types
from pathlib import Path

import torch

Shapes = dict[str, tuple[int, ...]]


# --------------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------------
def vit_layout(dim: int, depth: int, patch: int, in_chans: int, img: int, layer_scale: bool = False,
               mask_token: bool = False) -> Shapes:
    """DINO's ViT (``layer_scale=False``) or DINOv2's (LayerScale ``ls1``/``ls2`` and ``mask_token``)."""
    grid = img // patch
    shapes: Shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, grid * grid + 1, dim)}
    if mask_token:
        shapes["mask_token"] = (1, dim)
    shapes.update({"patch_embed.proj.weight": (dim, in_chans, patch, patch), "patch_embed.proj.bias": (dim,)})
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                       b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
                       b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,)})
        if layer_scale:
            shapes[b + "ls1.gamma"] = (dim,)
        shapes.update({b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                       b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
                       b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,)})
        if layer_scale:
            shapes[b + "ls2.gamma"] = (dim,)
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return shapes


def dino_head_layout(in_dim: int = 384, hidden: int = 2048, bottleneck: int = 256, out_dim: int = 65536) -> Shapes:
    """DINOHead(nlayers=3, use_bn=False): Linear, GELU, Linear, GELU, Linear; weight-normed last layer."""
    return {"mlp.0.weight": (hidden, in_dim), "mlp.0.bias": (hidden,), "mlp.2.weight": (hidden, hidden),
            "mlp.2.bias": (hidden,), "mlp.4.weight": (bottleneck, hidden), "mlp.4.bias": (bottleneck,),
            "last_layer.weight_g": (out_dim, 1), "last_layer.weight_v": (out_dim, bottleneck)}


def batchnorm(prefix: str, channels: int) -> Shapes:
    return {prefix + "weight": (channels,), prefix + "bias": (channels,), prefix + "running_mean": (channels,),
            prefix + "running_var": (channels,), prefix + "num_batches_tracked": ()}


def resnet50_layout(in_chans: int) -> Shapes:
    """torchvision's resnet50 without ``fc`` (Bottleneck blocks 3, 4, 6, 3; expansion 4)."""
    shapes: Shapes = {"conv1.weight": (64, in_chans, 7, 7), **batchnorm("bn1.", 64)}
    inplanes = 64
    for stage, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for j in range(blocks):
            b = f"layer{stage}.{j}."
            shapes.update({b + "conv1.weight": (planes, inplanes, 1, 1), **batchnorm(b + "bn1.", planes),
                           b + "conv2.weight": (planes, planes, 3, 3), **batchnorm(b + "bn2.", planes),
                           b + "conv3.weight": (4 * planes, planes, 1, 1), **batchnorm(b + "bn3.", 4 * planes)})
            if j == 0:
                shapes.update({b + "downsample.0.weight": (4 * planes, inplanes, 1, 1),
                               **batchnorm(b + "downsample.1.", 4 * planes)})
            inplanes = 4 * planes
    return shapes


def unet_decoder_layout(decoder_channels=(256, 128, 64, 32, 16), classes: int = 9) -> Shapes:
    """smp's UnetDecoder on a ResNet-50 encoder (skips 1024, 512, 256, 64, none) and its 3x3 segmentation head."""
    in_channels = [2048, *decoder_channels[:-1]]
    skips = [1024, 512, 256, 64, 0]
    shapes: Shapes = {}
    for i, (cin, skip, cout) in enumerate(zip(in_channels, skips, decoder_channels)):
        b = f"decoder.blocks.{i}."
        shapes.update({b + "conv1.0.weight": (cout, cin + skip, 3, 3), **batchnorm(b + "conv1.1.", cout),
                       b + "conv2.0.weight": (cout, cout, 3, 3), **batchnorm(b + "conv2.1.", cout)})
    shapes.update({"segmentation_head.0.weight": (classes, decoder_channels[-1], 3, 3),
                   "segmentation_head.0.bias": (classes,)})
    return shapes


def tensors(shapes: Shapes, seed: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Random tensors of ``shapes``, names prefixed, scaled like trained weights so that activations keep their
    size through 50 layers: He-scaled kernels, norm gains near 1, positive batch-norm variances, integer counters."""
    g = torch.Generator().manual_seed(seed)
    out = collections.OrderedDict()
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            value = torch.tensor(100)
        elif name.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif name.endswith((".weight", ".gamma")) and len(shape) == 1:  # LayerNorm / BatchNorm gain, LayerScale
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("weight") and len(shape) >= 2:
            fan_in = torch.Size(shape[1:]).numel()
            value = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5
        else:
            value = torch.randn(shape, generator=g) * 0.02
        out[prefix + name] = value
    return out


# --------------------------------------------------------------------------------------------------
# Files, saved as the authors' scripts save them
# --------------------------------------------------------------------------------------------------
def dino_mm_checkpoint(path: Path, seed: int = 0) -> dict:
    """``main_dino_B14.py``'s ``save_dict`` at epoch 100: DDP student, plain teacher, args, DINO centre."""
    backbone, head = vit_layout(384, 12, 8, 14, 224), dino_head_layout()
    teacher = {**tensors(backbone, seed, "backbone."), **tensors(head, seed + 1, "head.")}
    student = {**tensors(backbone, seed + 2, "module.backbone."), **tensors(head, seed + 3, "module.head.")}
    state = {"student": student, "teacher": teacher,
             "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 5e-4, "params": [0]}]},
             "epoch": 100, "args": argparse.Namespace(arch="vit_small", patch_size=8, n_channels=14, out_dim=65536),
             "dino_loss": {"center": torch.randn(1, 65536, generator=torch.Generator().manual_seed(seed + 4))}}
    torch.save(state, path)
    return state


def softcon_checkpoint(path: Path, arch: str, in_chans: int, seed: int = 0) -> dict:
    """The README's backbones: ``model.load_state_dict(ckpt)`` on a plain state dict."""
    if arch == "resnet50":
        shapes = resnet50_layout(in_chans)
    else:
        dim, heads_depth = (384, 12) if arch == "vit_small_patch14_dinov2" else (768, 12)
        shapes = vit_layout(dim, heads_depth, 14, in_chans, 224, layer_scale=True, mask_token=True)
    state = tensors(shapes, seed)
    torch.save(state, path)
    return state


def _lightning_attribute_dict() -> type:
    """Lightning's ``AttributeDict`` under its real module name, only while saving (the book never imports it)."""
    names = ("lightning_fabric", "lightning_fabric.utilities", "lightning_fabric.utilities.data")
    for name in names:
        sys.modules.setdefault(name, types.ModuleType(name))

    class AttributeDict(dict):
        def __getattr__(self, key):
            return self[key]

    AttributeDict.__module__ = "lightning_fabric.utilities.data"
    AttributeDict.__qualname__ = "AttributeDict"
    sys.modules["lightning_fabric.utilities.data"].AttributeDict = AttributeDict
    return AttributeDict


def cromss_checkpoint(path: Path, fusion: str, s2_bands: int, seed: int = 0) -> dict:
    """A PyTorch Lightning checkpoint of ``Unet_mm``: ``self.net`` is ``Unet_midF_2branch`` or ``Unet_lateF_2branch``."""
    decoder = unet_decoder_layout()
    if fusion == "middle":
        net = {**tensors(resnet50_layout(2), seed, "net.encoder1."),
               **tensors(resnet50_layout(s2_bands), seed + 1, "net.encoder."),
               **tensors(decoder, seed + 2, "net.")}
    else:
        net = {**tensors(resnet50_layout(2), seed, "net.model1.encoder."), **tensors(decoder, seed + 1, "net.model1."),
               **tensors(resnet50_layout(s2_bands), seed + 2, "net.model2.encoder."),
               **tensors(decoder, seed + 3, "net.model2.")}
    attribute_dict = _lightning_attribute_dict()
    try:
        state = {"epoch": 199, "global_step": 40600, "pytorch-lightning_version": "2.1.3",
                 "state_dict": collections.OrderedDict(net),
                 "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 200}}}},
                 "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                     "best_model_score": torch.tensor(0.41), "best_model_path": "weights.ckpt"}},
                 "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 5e-3}]}],
                 "lr_schedulers": [{"best": 0.41, "num_bad_epochs": 3}],
                 "hyper_parameters": attribute_dict(args=argparse.Namespace(fuse_type=fusion[:3], n_channels=s2_bands,
                                                                            mt="resnet50", n_classes=9))}
        torch.save(state, path)
    finally:
        for name in ("lightning_fabric.utilities.data", "lightning_fabric.utilities", "lightning_fabric"):
            sys.modules.pop(name, None)
    return state


def write_checkpoint(entry, folder: Path, seed: int = 0) -> Path:
    """The file of a registry entry, synthetic, where the book looks for it (``folder/<chapter>/<file>``)."""
    path = folder / entry.chapter / entry.file
    path.parent.mkdir(parents=True, exist_ok=True)
    f = entry.fields
    if entry.chapter == "dino_mm":
        dino_mm_checkpoint(path, seed)
    elif entry.chapter == "softcon":
        softcon_checkpoint(path, f["arch"], 13 if f["modality"] == "s2c" else 2, seed)
    else:
        cromss_checkpoint(path, f["fusion"], f["s2_bands"], seed)
    return path
