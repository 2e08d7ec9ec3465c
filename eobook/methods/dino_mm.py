"""DINO-MM: self-supervised ViTs for joint SAR-optical representation learning.

Wang, Y., Albrecht, C. M., & Zhu, X. X. (2022). Self-supervised vision transformers for joint SAR-optical
representation learning. IGARSS 2022. https://github.com/zhu-xlab/DINO-MM

DINO (Caron et al., 2021) on a 14-channel input: the 12 Sentinel-2 L2A bands (B01-B08, B8A, B09, B11, B12)
**then** Sentinel-1 VH, VV, all scaled to [0, 1] (per band mean +/- 2 std). A student ViT learns to match
a momentum teacher's centred, sharpened softmax over K prototypes across multi-crop views; the paper's
addition, ``RandomSensorDrop``, zeroes the SAR or the optical channels of a view so that the model sees
SAR-only, optical-only and SAR-optical views (the paper's Table 1).

Everything random inside a training step (crops, jitter, sensor drop) is drawn per sample through
``ctx.rand`` (the run's checkpointed generator; the same draws with or without DDP) and runs batched with
torch ops on the device of the batch.
"""
from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from ..evaluate import (FineTuneConfig, ProbeConfig, average_scores, extract_features, fine_tune,
                        label_fraction_subset, linear_probe)
from ..nn.vit import create_vit, last_blocks_cls
from ..train import cosine_schedule, ema_update

S2_CHANNELS = 12  #: B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B11, B12 (channels 0-11)
S1_CHANNELS = 2   #: VH, VV (channels 12, 13), the order of the authors' 14-band input
IN_CHANS = S2_CHANNELS + S1_CHANNELS
#: What RandomSensorDrop leaves of a view, by mode index (the paper's S / O / M of Table 1).
SENSOR_MODES = ("S1+S2", "S2", "S1")
N_CLASSES = 19
#: A source of per-sample uniforms: ``rand(B, *shape) -> [B, *shape]`` (see :func:`uniform_source`).
Rand = Callable[..., torch.Tensor]

#: Table 2 of the paper: linear-probe mAP (%) on BigEarthNet-MM, {(label fraction, input): value}.
PAPER_TABLE2 = {
    "Random": {("100%", "S1"): 54.6, ("100%", "S2"): 62.0, ("100%", "S1+S2"): 64.5,
               ("1%", "S1"): 52.7, ("1%", "S2"): 59.0, ("1%", "S1+S2"): 62.4},
    "DINO-S1/2": {("100%", "S1"): 76.2, ("100%", "S2"): 86.0, ("100%", "S1+S2"): None,
                  ("1%", "S1"): 68.7, ("1%", "S2"): 82.0, ("1%", "S1+S2"): None},
    "DINO-MM": {("100%", "S1"): 79.5, ("100%", "S2"): 87.1, ("100%", "S1+S2"): 87.1,
                ("1%", "S1"): 75.3, ("1%", "S2"): 82.9, ("1%", "S1+S2"): 82.8},
    "Supervised": {("100%", "S1"): 77.1, ("100%", "S2"): 86.7, ("100%", "S1+S2"): 88.6,
                   ("1%", "S1"): 63.7, ("1%", "S2"): 73.6, ("1%", "S1+S2"): 75.0},
}


# --------------------------------------------------------------------------------------------------
# Input: 12 S2 + 2 S1 channels in [0, 1]
# --------------------------------------------------------------------------------------------------
def stack_sensors(s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """Concatenate S2 and S1 into DINO-MM's 14-channel input: [B,12,H,W] + [B,2,H,W] -> [B,14,H,W].

    Args:
        s2: the 12 L2A bands, already clipped to mean +/- 2 std and scaled to [0, 1].
        s1: (VV, VH) in standardised dB (the readers' order). Clipping to +/- 2 std and scaling to [0, 1]
            is the authors' mean +/- 2 std normalisation of S1; the channels are reordered to (VH, VV).
    """
    if s2.ndim != 4 or s2.shape[1] != S2_CHANNELS:
        raise ValueError(f"s2: expected [B,{S2_CHANNELS},H,W], got {tuple(s2.shape)}")
    if s1.ndim != 4 or s1.shape[1] != S1_CHANNELS or s1.shape[2:] != s2.shape[2:]:
        raise ValueError(f"s1: expected [B,{S1_CHANNELS},{s2.shape[2]},{s2.shape[3]}], got {tuple(s1.shape)}")
    s1_unit = ((s1.flip(1) + 2.0) / 4.0).clamp(0.0, 1.0)  # (VV, VH) -> (VH, VV), z in [-2, 2] -> [0, 1]
    return torch.cat([s2, s1_unit], dim=1)


def sensor_mask(modes: torch.Tensor, s2_channels: int = S2_CHANNELS, s1_channels: int = S1_CHANNELS) -> torch.Tensor:
    """Per-sample channel mask [B,C] for ``SENSOR_MODES`` indices [B]: 0 keeps both, 1 zeroes S1, 2 zeroes S2."""
    keep = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], device=modes.device)[modes]  # [B,2] (S2, S1)
    return torch.cat([keep[:, :1].expand(-1, s2_channels), keep[:, 1:].expand(-1, s1_channels)], dim=1)


def select_sensors(x: torch.Tensor, sensors: str) -> torch.Tensor:
    """Keep only ``sensors`` ("S1", "S2" or "S1+S2") of [B,14,H,W]; the missing sensor is zeroed (Sec. 3.1)."""
    if sensors not in SENSOR_MODES:
        raise ValueError(f"sensors: expected one of {SENSOR_MODES}, got {sensors!r}")
    modes = torch.full((x.shape[0],), SENSOR_MODES.index(sensors), dtype=torch.long, device=x.device)
    return x * sensor_mask(modes)[:, :, None, None].to(x.dtype)


class RandomSensorDrop:
    """Zero all S1 or all S2 channels of a view with probability ``p``, each half of the time (Sec. 2.2.2).

    Net per view: ``1 - p`` both sensors, ``p/2`` optical only, ``p/2`` SAR only; never both dropped.
    Channels are S2 first, then S1 (``s2_channels + s1_channels``).

    Args:
        s2_channels, s1_channels: channel counts of the two sensors.
        p: probability that one sensor is dropped.
    """

    def __init__(self, s2_channels: int = S2_CHANNELS, s1_channels: int = S1_CHANNELS, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p}")
        self.s2_channels, self.s1_channels, self.p = s2_channels, s1_channels, p

    def sample_modes(self, n: int, rand: Rand, p: float | None = None) -> torch.Tensor:
        """Indices into ``SENSOR_MODES`` for ``n`` views: [n] int64 (0 both, 1 S2 only, 2 S1 only);
        ``p`` overrides the drop probability."""
        u = rand(n, 2)
        return (u[:, 0] < (self.p if p is None else p)).long() * (1 + (u[:, 1] < 0.5).long())

    def apply(self, x: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
        """Zero the channels that ``modes`` [B] drops in ``x`` [B,C,H,W]."""
        mask = sensor_mask(modes.to(x.device), self.s2_channels, self.s1_channels)
        return x * mask[:, :, None, None].to(x.dtype)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | Any = None) -> torch.Tensor:
        """[C,H,W] or [B,C,H,W] -> same shape, one independent draw per sample (``generator``: see
        :func:`uniform_source`)."""
        if x.ndim not in (3, 4) or x.shape[-3] != self.s2_channels + self.s1_channels:
            raise ValueError(f"x: expected [C,H,W] or [B,C,H,W] with C={self.s2_channels + self.s1_channels}, "
                             f"got {tuple(x.shape)}")
        batch = x if x.ndim == 4 else x[None]
        out = self.apply(batch, self.sample_modes(batch.shape[0], uniform_source(generator)))
        return out if x.ndim == 4 else out[0]


# --------------------------------------------------------------------------------------------------
# Multi-crop augmentation, batched (Caron et al. 2021, Sec. 3.1; the authors' settings in NOTES.md)
# --------------------------------------------------------------------------------------------------
def uniform_source(source: torch.Generator | Any = None) -> Rand:
    """``rand(B, *shape)`` -> U(0, 1) [B, *shape] on the CPU: ``ctx.rand`` of a StepContext (per-sample draws
    that are the same with or without DDP), else draws from a torch.Generator (None: the global one)."""
    if hasattr(source, "rand"):
        return source.rand
    return lambda *shape: torch.rand(shape, generator=source)


def _coin(p: float | torch.Tensor, n: int, rand: Rand) -> torch.Tensor:
    """Bernoulli(p) per sample: [n] bool; ``p`` may be a per-sample tensor [n]."""
    return rand(n) < p


def _uniform(low: float, high: float, rand: Rand, *shape: int) -> torch.Tensor:
    return low + (high - low) * rand(*shape)


def crop_boxes(n: int, scale: tuple[float, float], rand: Rand,
               ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> tuple[torch.Tensor, ...]:
    """RandomResizedCrop boxes in normalised coordinates: (centre x, centre y, half-width, half-height) [n] each.

    Like torchvision: area fraction ~ U(scale), log aspect ~ U(log ratio), the first of ``attempts`` draws
    that fits inside the image, else the whole image (torchvision's fallback for a square input).
    """
    area = _uniform(*scale, rand, n, attempts)
    aspect = _uniform(math.log(ratio[0]), math.log(ratio[1]), rand, n, attempts).exp()
    w, h = (area * aspect).sqrt(), (area / aspect).sqrt()  # fractions of the image side
    fits = (w <= 1) & (h <= 1)
    first = fits.float().argmax(dim=1, keepdim=True)
    w = torch.where(fits.any(1), w.gather(1, first)[:, 0], torch.ones(n))
    h = torch.where(fits.any(1), h.gather(1, first)[:, 0], torch.ones(n))
    cx = _uniform(-1.0, 1.0, rand, n) * (1 - w)  # the crop stays inside [-1, 1]
    cy = _uniform(-1.0, 1.0, rand, n) * (1 - h)
    return cx, cy, w, h


def resample_boxes(x: torch.Tensor, boxes: tuple[torch.Tensor, ...], size: int, flip: torch.Tensor | None = None,
                   mode: str = "bicubic") -> torch.Tensor:
    """Crop per-sample boxes of [B,C,H,W] and resize them to [B,C,size,size] in one ``grid_sample``.

    ``flip`` [B] bool mirrors a crop horizontally (folded into the affine map).
    """
    cx, cy, w, h = (t.to(x.device, x.dtype) for t in boxes)
    sign = 1 - 2 * flip.to(x.device, x.dtype) if flip is not None else torch.ones_like(w)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w * sign, zero, cx], -1), torch.stack([zero, h, cy], -1)], 1)  # [B,2,3]
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def brightness_contrast(x: torch.Tensor, strength: float, p: float | torch.Tensor, rand: Rand) -> torch.Tensor:
    """With probability ``p``: x * b, then (x - mean_c) * c + mean_c per channel, b, c ~ U(1 -/+ strength)."""
    n = x.shape[0]
    apply = _coin(p, n, rand)
    b = torch.where(apply, _uniform(max(0.0, 1 - strength), 1 + strength, rand, n), torch.ones(n))
    c = torch.where(apply, _uniform(max(0.0, 1 - strength), 1 + strength, rand, n), torch.ones(n))
    x = x * b.to(x)[:, None, None, None]
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * c.to(x)[:, None, None, None] + mean).clamp(0.0, 1.0)


def random_grayscale(x: torch.Tensor, p: float | torch.Tensor, rand: Rand) -> torch.Tensor:
    """With probability ``p`` every channel becomes the mean over channels (the authors' ToGray)."""
    gray = _coin(p, x.shape[0], rand).to(x.device)[:, None, None, None]
    return torch.where(gray, x.mean(dim=1, keepdim=True).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` [B] (reflect padding, kernel radius 3 sigma_max)."""
    b, c, height, width = x.shape
    radius = min(int(math.ceil(3 * float(sigma.max()))), height - 1, width - 1)
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps[None] / sigma.to(x)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, K]
    y = x.reshape(1, b * c, height, width)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, height, width)


def random_gaussian_blur(x: torch.Tensor, p: float | torch.Tensor, sigma_range: tuple[float, float],
                         rand: Rand) -> torch.Tensor:
    """Blur the samples picked with probability ``p`` with sigma ~ U(sigma_range)."""
    pick = _coin(p, x.shape[0], rand)
    sigma = _uniform(*sigma_range, rand, x.shape[0])
    if not pick.any():
        return x
    idx = pick.nonzero()[:, 0].to(x.device)
    return x.index_copy(0, idx, gaussian_blur(x[idx], sigma[pick]))


def random_solarize(x: torch.Tensor, p: float | torch.Tensor, rand: Rand, threshold: float = 0.5) -> torch.Tensor:
    """With probability ``p`` invert values at or above ``threshold`` (PIL's solarize at 128 of 255)."""
    pick = _coin(p, x.shape[0], rand).to(x.device)[:, None, None, None]
    return torch.where(pick & (x >= threshold), 1.0 - x, x)


class MultiCropAugmentation:
    """DINO's multi-crop views of 14-channel tensors, then RandomSensorDrop per view, all batched.

    2 global crops (``global_size`` px, area scale ``global_scale``) and ``n_local`` local crops
    (``local_size`` px, ``local_scale``), bicubic; per view: horizontal flip (p 0.5), brightness/contrast
    jitter 0.4 (p 0.8), grayscale (p 0.2), Gaussian blur sigma 0.1-2 (p 1.0 / 0.1 / 0.5 for global 1 /
    global 2 / local), solarize (p 0.2, global 2 only), RandomSensorDrop (p ``sensor_drop_p``).

    Call with [B,14,H,W] in [0, 1]; returns global views [2B,14,g,g] and local views [n_local*B,14,l,l],
    view-major (rows ``v*B:(v+1)*B`` are view ``v``), and the sensor modes of all views [(2+n_local)*B].
    """

    def __init__(self, global_size: int = 112, local_size: int = 48, n_local: int = 8,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
                 sensor_drop_p: float = 0.5, jitter: float = 0.4, p_jitter: float = 0.8, p_gray: float = 0.2,
                 blur_sigma: tuple[float, float] = (0.1, 2.0), p_blur: tuple[float, float, float] = (1.0, 0.1, 0.5),
                 p_solarize: float = 0.2):
        self.global_size, self.local_size, self.n_local = global_size, local_size, n_local
        self.global_scale, self.local_scale = global_scale, local_scale
        self.sensor_drop = RandomSensorDrop(p=sensor_drop_p)
        self.jitter, self.p_jitter, self.p_gray = jitter, p_jitter, p_gray
        self.blur_sigma, self.p_blur, self.p_solarize = blur_sigma, p_blur, p_solarize

    @property
    def n_crops(self) -> int:
        return 2 + self.n_local

    def views(self, x: torch.Tensor, n_views: int, size: int, scale: tuple[float, float], p_blur: torch.Tensor,
              p_solarize: torch.Tensor, rand: Rand, strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_views`` augmented views of every sample, view-major: [n_views*B,C,size,size] and modes.

        ``rand(B, *shape)`` draws per sample (rows of the batch); the views of a sample are its columns.
        ``strength`` scales the probability of every photometric transform and of the sensor drop.
        """
        b = x.shape[0]
        n = n_views * b
        rows = lambda n_rows, *shape: rand(b, n_views, *shape).transpose(0, 1).reshape(n_rows, *shape)  # noqa: E731
        flip = _coin(0.5, n, rows)
        v = resample_boxes(x.repeat(n_views, 1, 1, 1), crop_boxes(n, scale, rows), size, flip).clamp(0.0, 1.0)
        v = brightness_contrast(v, self.jitter, strength * self.p_jitter, rows)
        v = random_grayscale(v, strength * self.p_gray, rows)
        v = random_gaussian_blur(v, strength * p_blur, self.blur_sigma, rows)
        v = random_solarize(v, strength * p_solarize, rows)
        modes = self.sensor_drop.sample_modes(n, rows, strength * self.sensor_drop.p)
        return self.sensor_drop.apply(v, modes), modes

    def __call__(self, x: torch.Tensor, source: torch.Generator | Any = None, strength: float = 1.0):
        """``source``: a StepContext (``ctx.rand``, identical draws with or without DDP), a torch.Generator
        or None (the global generator). ``strength`` in [0, 1] scales the probabilities of the photometric
        transforms and of RandomSensorDrop (1: the paper's; 0: crops and flips only)."""
        if x.ndim != 4 or x.shape[1] != IN_CHANS:
            raise ValueError(f"x: expected [B,{IN_CHANS},H,W], got {tuple(x.shape)}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength: expected a value in [0, 1], got {strength}")
        b, rand = x.shape[0], uniform_source(source)
        per_global = lambda first, second: torch.tensor([first] * b + [second] * b)  # noqa: E731
        globals_, g_modes = self.views(x, 2, self.global_size, self.global_scale,
                                       per_global(self.p_blur[0], self.p_blur[1]),
                                       per_global(0.0, self.p_solarize), rand, strength)
        if self.n_local == 0:
            return globals_, x.new_zeros(0, IN_CHANS, self.local_size, self.local_size), g_modes
        locals_, l_modes = self.views(x, self.n_local, self.local_size, self.local_scale,
                                      torch.full((self.n_local * b,), self.p_blur[2]),
                                      torch.zeros(self.n_local * b), rand, strength)
        return globals_, locals_, torch.cat([g_modes, l_modes])


def center_view(x: torch.Tensor, size: int, crop_fraction: float) -> torch.Tensor:
    """Evaluation view: the central ``crop_fraction`` of the side resized to ``size`` (Resize(128) +
    CenterCrop(112) is ``crop_fraction = 112/128``)."""
    n = x.shape[0]
    half = torch.full((n,), float(crop_fraction))
    return resample_boxes(x, (torch.zeros(n), torch.zeros(n), half, half), size).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Networks: g = h o f (backbone f, projection head h)
# --------------------------------------------------------------------------------------------------
class DINOHead(nn.Module):
    """DINO projection head h: 3-layer MLP (GELU) -> bottleneck -> l2-norm -> weight-normalised linear to K.

    Args:
        in_dim: backbone width D.
        out_dim: number of prototypes K (65,536 in the paper).
        hidden_dim, bottleneck_dim: MLP width (2048) and bottleneck (256).
        n_layers: MLP layers (3).
        norm_last_layer: fix the weight-norm gain g to 1 (not trained), as DINO's ``norm_last_layer``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-1], bottleneck_dim))
        self.apply(self._init_weights)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0  # g [K,1]
        gain.data.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N,D] -> logits [N,K]."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class DINONetwork(nn.Module):
    """Backbone + head; runs each crop resolution through the backbone once (DINO's MultiCropWrapper)."""

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        """Batches of views (one per resolution) -> logits [sum of batch sizes, K] in the same order."""
        return self.head(torch.cat([self.backbone(v) for v in views if v.shape[0]]))


def build_backbone(cfg: Any, drop_path_rate: float = 0.0) -> nn.Module:
    """The ViT f with ``in_chans=14`` (ViT-S/8 in ``full``), random weights."""
    return create_vit("small", in_chans=IN_CHANS, img_size=cfg.img_size, patch_size=cfg.patch_size,
                      depth=cfg.depth, embed_dim=cfg.embed_dim, num_heads=cfg.num_heads,
                      drop_path_rate=drop_path_rate)


# --------------------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------------------
class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened softmax and the student's softmax (DINO).

    For teacher views t (the 2 global crops) and student views s (all crops), s != t::

        P_t = softmax((g_t(x_t) - c) / tau_t),   P_s = softmax(g_s(x_s) / tau_s)
        L = mean over pairs and samples of  -sum_k P_t[k] log P_s[k]

    and the centre follows Eq. (1): c <- m c + (1 - m) mean_i g_t(x_i) (batch mean over all ranks under
    DDP). tau_t warms up linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_epochs`` epochs (per epoch, as in DINO).

    Also returned, as a collapse monitor: the entropy H(P_t) of the teacher's targets (log K = uniform
    collapse, 0 = one-hot) and the KL divergence KL(softmax(g_t / tau_t) || softmax(c / tau_t)) between the
    teacher's output and the centre (0 when every output equals the centre: collapse).
    """

    def __init__(self, out_dim: int, n_crops: int, warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.07,
                 warmup_teacher_temp_epochs: int = 30, n_epochs: int = 100, student_temp: float = 0.1,
                 center_momentum: float = 0.9):
        super().__init__()
        if n_crops < 2:
            raise ValueError(f"n_crops: expected at least the 2 global crops, got {n_crops}")
        self.n_crops, self.student_temp, self.center_momentum = n_crops, student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        warmup_epochs = min(warmup_teacher_temp_epochs, n_epochs)
        self.teacher_temps = np.concatenate([np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs),
                                             np.full(n_epochs - warmup_epochs, teacher_temp)])

    def teacher_temp(self, epoch: int) -> float:
        return float(self.teacher_temps[min(epoch, len(self.teacher_temps) - 1)])

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """``student_out`` [n_crops*B,K] and ``teacher_out`` [2*B,K], view-major; returns loss and monitors."""
        if student_out.shape[0] % self.n_crops or teacher_out.shape[0] * self.n_crops != 2 * student_out.shape[0]:
            raise ValueError(f"student_out {tuple(student_out.shape)} and teacher_out {tuple(teacher_out.shape)}: "
                             f"expected [{self.n_crops}*B,K] and [2*B,K]")
        tau_t = self.teacher_temp(epoch)
        log_p_s = F.log_softmax(student_out.float() / self.student_temp, dim=-1).chunk(self.n_crops)
        teacher_out = teacher_out.detach().float()
        p_t = F.softmax((teacher_out - self.center) / tau_t, dim=-1)  # [2B,K]
        total, n_terms = 0.0, 0
        for t, q in enumerate(p_t.chunk(2)):
            for v, log_p in enumerate(log_p_s):
                if v != t:  # skip the same view
                    total = total + torch.sum(-q * log_p, dim=-1).mean()
                    n_terms += 1
        with torch.no_grad():
            entropy = -(p_t * torch.log(p_t.clamp_min(1e-30))).sum(-1).mean()
            log_p_raw = F.log_softmax(teacher_out / tau_t, dim=-1)
            kl_center = (log_p_raw.exp() * (log_p_raw - F.log_softmax(self.center / tau_t, dim=-1))).sum(-1).mean()
            self.update_center(teacher_out)
        return {"loss": total / n_terms, "teacher_temp": torch.tensor(tau_t), "teacher_entropy": entropy,
                "kl_to_center": kl_center}

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """Eq. (1), with the batch mean taken over every rank under DDP."""
        batch_sum = teacher_out.sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_out.shape[0]), device=teacher_out.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_sum)
            torch.distributed.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)


@lru_cache(maxsize=4)
def teacher_momentum_schedule(base: float, total_steps: int) -> np.ndarray:
    """Teacher EMA momentum per step: cosine from ``base`` (0.996) to 1."""
    return cosine_schedule(base, 1.0, total_steps)


# --------------------------------------------------------------------------------------------------
# The pretraining module (student, teacher, centre, augmentation) for eobook.train.fit
# --------------------------------------------------------------------------------------------------
class DINOMM(nn.Module):
    """DINO-MM pretraining: ``forward(batch, ctx)`` augments, runs student and teacher, returns the loss.

    The teacher (backbone + head) is an EMA of the student with stop-gradient and sees only the 2 global
    views; the centre lives in :class:`DINOLoss`. All of it is in one ``state_dict``.
    """

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        head = lambda: DINOHead(cfg.embed_dim, cfg.out_dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim,  # noqa: E731
                                norm_last_layer=cfg.norm_last_layer)
        self.student = DINONetwork(build_backbone(cfg, cfg.drop_path_rate), head())
        self.teacher = DINONetwork(build_backbone(cfg), head())
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.augment = MultiCropAugmentation(cfg.global_crop_size, cfg.local_crop_size, cfg.n_local_crops,
                                             cfg.global_crop_scale, cfg.local_crop_scale, cfg.sensor_drop_p)
        self.loss = DINOLoss(cfg.out_dim, self.augment.n_crops, cfg.warmup_teacher_temp, cfg.teacher_temp,
                             cfg.warmup_teacher_temp_epochs, cfg.epochs, cfg.student_temp, cfg.center_momentum)

    def forward(self, batch: dict[str, torch.Tensor], ctx: Any) -> dict[str, torch.Tensor]:
        x = stack_sensors(batch["s2"], batch["s1"])                # [B,14,H,W]
        global_views, local_views, _ = self.augment(x, ctx, self.augmentation_strength(ctx))  # [2B,14,g,g], [nB,14,l,l]
        with torch.no_grad():
            teacher_out = self.teacher(global_views)              # [2B,K]
        student_out = self.student(global_views, local_views)     # [(2+n)B,K]
        out = self.loss(student_out, teacher_out, ctx.epoch)
        out["teacher_momentum"] = self.teacher_momentum(ctx)
        return out

    def augmentation_strength(self, ctx: Any) -> float:
        """1 (the paper) unless ``cfg.augmentation_warmup_epochs`` > 0: then a linear ramp from 0 over those
        epochs, so that a small model first learns from crops alone before the views lose a sensor or
        their colours (see the ``small`` profile: with the paper's augmentations from step 0 it collapses)."""
        warmup_steps = self.cfg.augmentation_warmup_epochs * ctx.steps_per_epoch
        return 1.0 if warmup_steps <= 0 else min(1.0, ctx.step / warmup_steps)

    def teacher_momentum(self, ctx: Any) -> float:
        return float(teacher_momentum_schedule(self.cfg.teacher_momentum, ctx.total_steps)[ctx.step])

    def on_after_backward(self, ctx: Any) -> None:
        """Freeze the head's last layer in the first epoch(s) (DINO's ``cancel_gradients_last_layer``)."""
        if ctx.epoch < self.cfg.freeze_last_layer_epochs:
            for p in self.student.head.last_layer.parameters():
                p.grad = None

    def on_step_end(self, ctx: Any) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s, m from 0.996 to 1 (cosine)."""
        ema_update(self.teacher, self.student, self.teacher_momentum(ctx))


def model_meta(cfg: Any) -> dict[str, Any]:
    """Model-shape fields that a checkpoint must share with this run."""
    return {"in_chans": IN_CHANS, "patch_size": cfg.patch_size, "embed_dim": cfg.embed_dim, "depth": cfg.depth,
            "num_heads": cfg.num_heads, "out_dim": cfg.out_dim, "head_hidden_dim": cfg.head_hidden_dim,
            "head_bottleneck_dim": cfg.head_bottleneck_dim, "n_local_crops": cfg.n_local_crops}


def bigearthnet(cfg: Any, split: str) -> Dataset:
    """BigEarthNet-MM ``split`` without the patches of the official snow and cloud lists (Sec. 3.1: "Patches
    got dropped where the scene is fully covered in seasonal snow, or those including artifacts of clouds");
    with ``cfg.cache_data`` read once per process and kept in memory."""
    from ..data import chapter_dataset

    return chapter_dataset(cfg, "BigEarthNetMM", "BigEarthNet-MM", split=split, remove_snow_cloud=True)


def build_pretraining(cfg: Any) -> tuple[DINOMM, Dataset, None, dict[str, Any]]:
    """What :func:`eobook.train.pretrain` needs: module, BigEarthNet-MM train split (labels unused), meta."""
    return DINOMM(cfg), bigearthnet(cfg, "train"), None, model_meta(cfg)


# --------------------------------------------------------------------------------------------------
# Evaluation (Sec. 3.1): linear probe on the frozen teacher, random-init and supervised baselines
# --------------------------------------------------------------------------------------------------
def eval_input(batch: dict[str, torch.Tensor], sensors: str, cfg: Any) -> torch.Tensor:
    """The evaluation view of a batch: 14 channels, ``sensors`` kept, Resize + CenterCrop."""
    x = select_sensors(stack_sensors(batch["s2"], batch["s1"]), sensors)
    return center_view(x, cfg.eval_crop_size, cfg.eval_crop_size / cfg.img_size)


def eval_datasets(cfg: Any) -> tuple[Dataset, Dataset]:
    """Train and test splits of BigEarthNet-MM, capped at ``eval_train_samples`` / ``eval_test_samples``."""
    train, test = bigearthnet(cfg, "train"), bigearthnet(cfg, "test")
    cap = lambda ds, n: Subset(ds, range(min(n, len(ds)))) if n else ds  # noqa: E731
    return cap(train, cfg.eval_train_samples), cap(test, cfg.eval_test_samples)


def label_fraction_name(fraction: float) -> str:
    return f"{100 * fraction:g}%"


@torch.no_grad()
def linear_evaluation(backbone: nn.Module, train_set: Dataset, test_set: Dataset, cfg: Any,
                      device: torch.device | str = "cpu") -> dict[tuple[str, str], float]:
    """Linear-probe mAP (%) of a frozen backbone for every label fraction and input (Table 2's columns).

    Features: CLS tokens of the last ``probe_blocks`` blocks (1536-d for ViT-S). Probe: SGD momentum 0.9,
    lr ``probe_lr`` cosine, MultiLabelSoftMarginLoss; mAP over the whole test set. The label subsets are
    drawn without replacement (seeded).
    """
    backbone = backbone.to(device).eval()
    probe = ProbeConfig(task="multilabel", epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size, lr=cfg.probe_lr,
                        momentum=0.9, weight_decay=0.0, standardize=cfg.probe_standardize, seed=cfg.seed)
    results = {}
    for sensors in SENSOR_MODES[::-1]:  # S1, S2, S1+S2
        encode = lambda batch: last_blocks_cls(backbone, eval_input(batch, sensors, cfg), cfg.probe_blocks)  # noqa: E731
        train_x, train_y = extract_features(encode, train_set, batch_size=cfg.probe_batch_size, device=device)
        test_x, test_y = extract_features(encode, test_set, batch_size=cfg.probe_batch_size, device=device)
        for fraction in cfg.label_fractions:
            idx = torch.as_tensor(label_fraction_subset(len(train_x), fraction, cfg.seed, cfg.min_label_samples))
            with torch.enable_grad():
                scores = linear_probe(train_x[idx], train_y[idx], test_x, test_y, probe, num_classes=N_CLASSES)
            results[(label_fraction_name(fraction), sensors)] = scores["mAP_macro"]
    return results


class SupervisedViT(nn.Module):
    """The supervised baseline: the same ViT with a linear classifier on its CLS token, trained end to end."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.backbone = build_backbone(cfg, cfg.drop_path_rate)
        self.classifier = nn.Linear(cfg.embed_dim, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


def supervised_evaluation(train_set: Dataset, test_set: Dataset, cfg: Any,
                          device: torch.device | str = "cpu") -> dict[tuple[str, str], float]:
    """Supervised baseline mAP (%): a randomly initialised ViT trained end to end for every label fraction
    and input with AdamW, lr ``supervised_lr`` cosine, MultiLabelSoftMarginLoss."""
    ft = FineTuneConfig(task="multilabel", epochs=cfg.supervised_epochs, batch_size=cfg.supervised_batch_size,
                        optimizer="adamw", lr=cfg.supervised_lr, weight_decay=cfg.supervised_weight_decay,
                        seed=cfg.seed)
    results = {}
    for sensors in SENSOR_MODES[::-1]:
        forward = lambda model, batch: model(eval_input(batch, sensors, cfg))  # noqa: E731
        for fraction in cfg.label_fractions:
            torch.manual_seed(cfg.seed)
            idx = label_fraction_subset(len(train_set), fraction, cfg.seed, cfg.min_label_samples)
            scores, _ = fine_tune(SupervisedViT(cfg), Subset(train_set, idx.tolist()), test_set, forward, ft,
                                  N_CLASSES, device=device)
            results[(label_fraction_name(fraction), sensors)] = scores["mAP_macro"]
    return results


def random_backbone(cfg: Any, seed: int | None = None) -> nn.Module:
    """A randomly initialised backbone of the same shape (the "Random" row), seeded by ``seed`` (default
    ``cfg.seed``)."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return build_backbone(cfg)


def random_init_evaluation(train_set: Dataset, test_set: Dataset, cfg: Any, device: torch.device | str = "cpu"
                           ) -> tuple[dict[tuple[str, str], float], list[dict[tuple[str, str], float]]]:
    """The "Random" row: :func:`linear_evaluation` of ``cfg.random_init_seeds`` random backbones (seeds
    ``cfg.seed``, ``cfg.seed + 1``, ...). Returns the per-column mean and each seed's scores, because on
    little data one random ViT's probe varies by a point or two from seed to seed."""
    per_seed = [linear_evaluation(random_backbone(cfg, cfg.seed + i), train_set, test_set, cfg, device)
                for i in range(cfg.random_init_seeds)]
    return average_scores(per_seed), per_seed


def results_table(run_rows: dict[str, dict[tuple[str, str], float]], paper: dict = PAPER_TABLE2):
    """Table 2 layout: rows = methods, columns = (label fraction, input, paper | this run)."""
    import pandas as pd

    columns = [(f, s) for f in ("100%", "1%") for s in ("S1", "S2", "S1+S2")]
    rows = {}
    for method in paper:
        ours = run_rows.get(method, {})
        rows[method] = {(f, s, src): (paper[method][(f, s)] if src == "paper" else ours.get((f, s)))
                        for f, s in columns for src in ("paper", "this run")}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["labels", "input", "source"])
    return table


# --------------------------------------------------------------------------------------------------
# Figures: CLS self-attention of the last block (Caron et al. 2021, Fig. 1)
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def cls_attention_maps(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention of the CLS token to every patch in the last block, per head: [B,14,H,W] -> [B,heads,H/p,W/p].

    Computed explicitly from the last block's ``qkv`` (softmax(q k^T / sqrt(d_h)) of the CLS row), for
    figures only; training uses fused attention.
    """
    grid = (x.shape[2] // vit.patch_embed.patch_size[0], x.shape[3] // vit.patch_embed.patch_size[1])
    tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
    for block in vit.blocks[:-1]:
        tokens = block(tokens)
    attn = vit.blocks[-1].attn
    b, n, _ = tokens.shape
    qkv = attn.qkv(vit.blocks[-1].norm1(tokens)).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])                    # [B,h,N,dh]
    weights = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(-1)  # [B,h,1,N]
    return weights[:, :, 0, vit.num_prefix_tokens:].reshape(b, attn.num_heads, *grid)
