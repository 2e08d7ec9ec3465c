"""The one backbone of chapter 6, and the adapters that let each paper's objective train it.

The backbone is Fus-MAE's encoder without its cross-attention block (:class:`~eobook.methods.fus_mae.FusMAEEncoder`,
variant XAD): a ViT whose tokens are the patches of each sensor, projected by one patch embedding per sensor
(Sentinel-2: 12 bands, Sentinel-1: 2), with the 2D sine-cosine positions shared by both sensors, a global token
and transformer blocks over all of them. It is the plainest ViT that reads S1, S2 or both: a missing sensor has
no tokens. Every objective of the chapter trains this same module; only the parts around it (heads, decoders,
momentum copies) are the objective's.

Input convention (what every adapter hands the backbone): ``{"s2": [B,12,H,W], "s1": [B,2,H,W]}``, S2 L2A in
BigEarthNet's band order clipped to mean +/- 2 std and scaled to [0, 1], S1 (VH, VV) scaled the same way: the
14 channels of DINO-MM's input (:func:`~eobook.methods.dino_mm.stack_sensors`) split by sensor. A stacked
14-channel tensor whose channels of one sensor are all zero (DINO-MM's RandomSensorDrop, Sec. 2.2.2 of its
paper) gives that sample no tokens of that sensor.

Shapes: B batch, g = H / P grid side, N = g^2 tokens per sensor, D width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..dino_mm import S1_CHANNELS, S2_CHANNELS
from ..fus_mae import FusMAEEncoder, resize_to_input
from ..fus_mae.model import _init_weights as mae_init

#: Sensors in token order, and their channels.
SENSORS = {"s2": S2_CHANNELS, "s1": S1_CHANNELS}
#: The evaluation inputs: which sensors the frozen encoder sees.
INPUTS = {"S1": ("s1",), "S2": ("s2",), "S1+S2": ("s2", "s1")}


def build_backbone(img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int) -> FusMAEEncoder:
    """A randomly initialised backbone (MAE's initialisation: Xavier-uniform projections, unit LayerNorms, a
    global token from N(0, 0.02^2)); seed the global generator first for a repeatable start."""
    encoder = FusMAEEncoder(img_size, patch_size, embed_dim, depth, num_heads, cross_attention_first=False,
                            in_chans=dict(SENSORS))
    encoder.apply(mae_init)
    nn.init.normal_(encoder.cls_token, std=0.02)
    return encoder


def split_sensors(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """DINO-MM's stacked input [B,14,H,W] -> ``{"s2": [B,12,H,W], "s1": [B,2,H,W]}``."""
    if x.ndim != 4 or x.shape[1] != S2_CHANNELS + S1_CHANNELS:
        raise ValueError(f"x: expected [B,{S2_CHANNELS + S1_CHANNELS},H,W] (12 S2 then 2 S1 channels), "
                         f"got {tuple(x.shape)}")
    return dict(zip(SENSORS, x.split(list(SENSORS.values()), 1)))


def present_sensors(images: dict[str, torch.Tensor]) -> torch.Tensor:
    """bool [B, len(SENSORS)]: which sensors of each sample carry any non-zero value (a dropped one is all 0)."""
    return torch.stack([images[m].flatten(1).ne(0).any(1) for m in SENSORS], 1)


def encode(encoder: FusMAEEncoder, images: dict[str, torch.Tensor], keep: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch tokens and global token of the sensors in ``images`` (all samples see the same sensors).

    Args:
        images: ``{sensor: [B,C,H,W]}`` of one or both sensors (H, W multiples of the patch).
        keep: [B,K] visible grid positions, the same for every sensor (Siamese masking), or None.
    Returns:
        (patch tokens [B, M*K, D] in ``SENSORS`` order, global token [B, D]).
    """
    latents, cls = encoder(images, None if keep is None else {m: keep for m in images})
    return torch.cat([latents[m] for m in SENSORS if m in latents], 1), cls


class StackedInput(nn.Module):
    """The backbone behind DINO-MM's and SoftCon's interface: ``forward(x, keep) -> global token [B, D]`` of
    stacked 14-channel views of any size (multiples of the patch). Samples are grouped by the sensors they
    carry, so that a view without S1 (or S2) is encoded from the other sensor's tokens alone.

    ``is_vit``, ``num_patches`` (grid positions of ``img_size``), ``embed_dim`` and ``patch_size`` are what
    SoftCon's :class:`~eobook.methods.softcon.SoftCon` asks of its encoder.
    """

    is_vit = True

    def __init__(self, encoder: FusMAEEncoder):
        super().__init__()
        self.encoder = encoder
        self.embed_dim, self.patch_size, self.num_patches = encoder.embed_dim, encoder.patch_size, encoder.num_patches

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        images = split_sensors(x)
        present = present_sensors(images)                                    # [B, 2]
        out = x.new_empty(x.shape[0], self.embed_dim)
        for pattern in present.unique(dim=0):
            if not pattern.any():
                raise ValueError("x: a sample with every channel zero has no sensor to encode")
            rows = (present == pattern).all(1).nonzero().squeeze(1)
            group = {m: images[m][rows] for m, on in zip(SENSORS, pattern.tolist()) if on}
            out[rows] = encode(self.encoder, group, None if keep is None else keep[rows])[1]
        return out


class TokenEncoder(nn.Module):
    """The backbone behind MultiMAE's encoder interface: ``forward(inputs, keep) -> [B, 1+V, D]`` (global token
    first) for flat token indices ``keep`` over both sensors (sensor * N + position), whose share per sensor
    varies from sample to sample (MultiMAE's Dirichlet allocation)."""

    def __init__(self, encoder: FusMAEEncoder):
        super().__init__()
        self.encoder = encoder
        self.img_size, self.patch_size, self.dim = encoder.img_size, encoder.patch_size, encoder.embed_dim
        self.tokens_per_modality = encoder.num_patches

    def forward(self, inputs: dict[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.encoder.tokens({m: inputs[m] for m in SENSORS if m in inputs})
        x = torch.cat([tokens[m] for m in SENSORS if m in tokens], 1)        # [B, M*N, D]
        if keep is not None:
            x = x.gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # [B, V, D]
        x = self.encoder.encode_tokens(x)                                    # [B, V+1, D], global token last
        return torch.cat([x[:, -1:], x[:, :-1]], 1)


def patch_grid(encoder: FusMAEEncoder, images: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dense features for segmentation: the patch tokens of each grid position averaged over the sensors
    present, [B, D, g, g]."""
    tokens, _ = encode(encoder, images)                                      # [B, M*N, D]
    b, _, d = tokens.shape
    h, w = (s // encoder.patch_size for s in next(iter(images.values())).shape[-2:])
    per_sensor = tokens.view(b, len(images), h * w, d).mean(1)               # [B, N, D]
    return per_sensor.transpose(1, 2).reshape(b, d, h, w)


def image_features(encoder: FusMAEEncoder, images: dict[str, torch.Tensor]) -> torch.Tensor:
    """Frozen-encoder image features [B, 2D]: the global token and the mean patch token, concatenated (DINO's
    linear evaluation of ViT-S): the first is what DINO-MM and SoftCon train, the second what the MAEs train."""
    tokens, cls = encode(encoder, images)
    return torch.cat([cls, tokens.mean(1)], 1)


class SegmentationDecoder(nn.Module):
    """The chapter's one segmentation decoder: patch features [B,D,g,g] -> logits [B,K,g*P,g*P].

    A 3x3 convolution to ``hidden`` channels, then one (2x bilinear upsampling, 3x3 convolution, BatchNorm,
    ReLU) stage per factor 2 of the patch side, each halving the channels (at least 16, as U-Net decoders
    narrow towards full resolution), and a 1x1 classifier: a light progressive-upsampling head (SETR-PUP's
    shape). CromSS's objective trains it with the backbone; every frozen encoder's DFC2020 segmentation trains
    a fresh one.
    """

    def __init__(self, in_dim: int, num_classes: int, patch_size: int, hidden: int = 64):
        super().__init__()
        stages = patch_size.bit_length() - 1
        if 2 ** stages != patch_size:
            raise ValueError(f"patch_size: expected a power of 2, got {patch_size}")
        layers: list[nn.Module] = [nn.Conv2d(in_dim, hidden, 3, padding=1), nn.BatchNorm2d(hidden),
                                   nn.ReLU(inplace=True)]
        width = hidden
        for _ in range(stages):
            narrower = max(16, width // 2)
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(width, narrower, 3, padding=1, bias=False), nn.BatchNorm2d(narrower),
                       nn.ReLU(inplace=True)]
            width = narrower
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(features))


class SensorSegmenter(nn.Module):
    """Backbone + decoder on one sensor: CromSS's network for that modality (``.encoder`` is what transfers).

    CromSS hands S1 as (VV, VH) in [0, 1] (:func:`~eobook.methods.cromss.s1_unit_range`); the backbone's
    convention is (VH, VV), so S1 channels are swapped here. Inputs of another size than ``img_size`` are
    resized to it and the logits back."""

    def __init__(self, encoder: FusMAEEncoder, decoder: SegmentationDecoder, sensor: str):
        super().__init__()
        if sensor not in SENSORS:
            raise ValueError(f"sensor: expected one of {list(SENSORS)}, got {sensor!r}")
        self.encoder, self.decoder, self.sensor = encoder, decoder, sensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = x.flip(1) if self.sensor == "s1" else x
        x = resize_to_input({self.sensor: x}, self.encoder.img_size)[self.sensor]
        logits = self.decoder(patch_grid(self.encoder, {self.sensor: x}))
        return logits if logits.shape[-2:] == size else F.interpolate(logits, size=size, mode="bilinear",
                                                                        align_corners=False)

