"""Augmentations on batches, on the batch's device, with per-sample draws from a :class:`eobook.rng.Random`.

Every function takes a batch ``[B, C, H, W]`` (or a dict of modalities that must move together) and draws
what it randomises per sample from ``rng`` (the step context during training, see :mod:`eobook.rng`), so
that a resumed or DDP run draws exactly what one uninterrupted process draws. Geometry is one
``grid_sample`` (crops, resizes, flips) or exact index gathers (integer crops, quarter turns);
photometric transforms follow torchvision's definitions for any number of bands.

Used by DINO-MM (multi-crop, jitter, grayscale, blur, solarize), SoftCon (resized crops, jitter), CromSS
(crop, flip, rotation), MultiMAE-EO (flip) and CromSS's label smoothing (Gaussian filter).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .rng import Random

#: A crop box in normalised coordinates: centre x, centre y, half-width, half-height, each [n] in [-1, 1].
Boxes = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def coin(p: float | torch.Tensor, n: int, rng: Random) -> torch.Tensor:
    """Bernoulli(p) per sample: [n] bool; ``p`` may be a per-sample tensor [n]."""
    return rng.rand(n) < p


def uniform(low: float, high: float, rng: Random, *shape: int) -> torch.Tensor:
    """U(low, high) of ``shape`` (first dimension: samples)."""
    return low + (high - low) * rng.rand(*shape)


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------
def crop_boxes(n: int, scale: tuple[float, float], rng: Random, ratio: tuple[float, float] = (3 / 4, 4 / 3),
               attempts: int = 10) -> Boxes:
    """RandomResizedCrop boxes: (centre x, centre y, half-width, half-height) [n] each, normalised.

    As torchvision: area fraction ~ U(scale), log aspect ~ U(log ratio), the first of ``attempts`` draws
    that fits inside the image, else the whole image (torchvision's fallback for a square input).
    """
    area = uniform(*scale, rng, n, attempts)
    aspect = uniform(math.log(ratio[0]), math.log(ratio[1]), rng, n, attempts).exp()
    w, h = (area * aspect).sqrt(), (area / aspect).sqrt()  # fractions of the image side
    fits = (w <= 1) & (h <= 1)
    first = fits.float().argmax(dim=1, keepdim=True)
    w = torch.where(fits.any(1), w.gather(1, first)[:, 0], torch.ones(n))
    h = torch.where(fits.any(1), h.gather(1, first)[:, 0], torch.ones(n))
    cx = uniform(-1.0, 1.0, rng, n) * (1 - w)  # the crop stays inside [-1, 1]
    cy = uniform(-1.0, 1.0, rng, n) * (1 - h)
    return cx, cy, w, h


def resample_boxes(x: torch.Tensor, boxes: Boxes, size: int, hflip: torch.Tensor | None = None,
                   vflip: torch.Tensor | None = None, mode: str = "bicubic", padding: str = "border") -> torch.Tensor:
    """Crop per-sample boxes of [B,C,H,W] and resize them to [B,C,size,size] in one ``grid_sample``;
    ``hflip`` / ``vflip`` [B] bool mirror a crop (folded into the affine map)."""
    cx, cy, w, h = (t.to(x.device, x.dtype) for t in boxes)
    sign_x = 1 - 2 * hflip.to(x.device, x.dtype) if hflip is not None else torch.ones_like(w)
    sign_y = 1 - 2 * vflip.to(x.device, x.dtype) if vflip is not None else torch.ones_like(h)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w * sign_x, zero, cx], -1), torch.stack([zero, h * sign_y, cy], -1)], 1)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)  # theta [B,2,3]
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], rng: Random, *,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip_p: float = 0.5, vflip_p: float = 0.0,
                        mode: str = "bilinear") -> torch.Tensor:
    """RandomResizedCrop + random flips per sample: [B,C,H,W] -> [B,C,size,size]."""
    n = x.shape[0]
    boxes = crop_boxes(n, scale, rng, ratio)
    return resample_boxes(x, boxes, size, coin(hflip_p, n, rng), coin(vflip_p, n, rng), mode=mode)


def center_crop_resize(x: torch.Tensor, size: int, crop_fraction: float, mode: str = "bicubic") -> torch.Tensor:
    """The central ``crop_fraction`` of the side resized to ``size`` (Resize(128) + CenterCrop(112) is
    ``crop_fraction = 112/128``): the evaluation view of crop-trained models."""
    n = x.shape[0]
    half = torch.full((n,), float(crop_fraction))
    return resample_boxes(x, (torch.zeros(n), torch.zeros(n), half, half), size, mode=mode)


def random_crop(x: torch.Tensor, size: int, rng: Random) -> torch.Tensor:
    """An integer-aligned ``size`` x ``size`` window per sample (no resampling: labels stay labels)."""
    b, _, h, w = x.shape
    if size > min(h, w):
        raise ValueError(f"crop size {size} is larger than the images ({h}x{w})")
    top = rng.randint(0, h - size + 1, b).to(x.device)
    left = rng.randint(0, w - size + 1, b).to(x.device)
    offsets = torch.arange(size, device=x.device)
    rows, cols = (top[:, None] + offsets)[:, :, None], (left[:, None] + offsets)[:, None, :]
    return x[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # [B,C,s,s]


def random_flip_rotate(x: torch.Tensor, flip_p: float, rotate_p: float, rng: Random) -> torch.Tensor:
    """Per sample: a horizontal flip with probability ``flip_p``, then with probability ``rotate_p`` a
    rotation by 90, 180 or 270 degrees (equally likely); exact, so class maps stay class maps."""
    b = x.shape[0]
    flip = coin(flip_p, b, rng).to(x.device).view(b, 1, 1, 1)
    turns = rng.randint(1, 4, b)
    turns = torch.where(coin(rotate_p, b, rng), turns, 0).to(x.device)
    x = torch.where(flip, x.flip(-1), x)
    for k in (1, 2, 3):  # over the three angles, not over samples
        x = torch.where((turns == k).view(b, 1, 1, 1), torch.rot90(x, k, (-2, -1)), x)
    return x.contiguous()


def random_hflip(inputs: dict[str, torch.Tensor], p: float, rng: Random) -> dict[str, torch.Tensor]:
    """Flip each sample left-right with probability ``p``, the same way in every modality of ``inputs``
    ({name: [B,...,W]}, images or class maps)."""
    first = next(iter(inputs.values()))
    flip = coin(p, first.shape[0], rng).to(first.device)
    return {m: torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x) for m, x in inputs.items()}


# --------------------------------------------------------------------------------------------------
# Photometric
# --------------------------------------------------------------------------------------------------
def brightness_contrast(x: torch.Tensor, strength: float, p: float | torch.Tensor, rng: Random, *,
                        per_channel: bool = True, clamp: bool = True) -> torch.Tensor:
    """With probability ``p``: ``((x - m) c + m) b`` with b, c ~ U(1 -/+ strength) per sample.

    ``m`` is each channel's mean (``per_channel``, torchvision's contrast on each band) or the mean over
    all bands (one contrast for the spectrum); ``clamp`` keeps values in [0, 1] (inputs scaled to [0, 1]).
    """
    n = x.shape[0]
    apply = coin(p, n, rng)
    low = max(0.0, 1 - strength)
    b = torch.where(apply, uniform(low, 1 + strength, rng, n), torch.ones(n)).to(x)[:, None, None, None]
    c = torch.where(apply, uniform(low, 1 + strength, rng, n), torch.ones(n)).to(x)[:, None, None, None]
    mean = x.mean(dim=(2, 3) if per_channel else (1, 2, 3), keepdim=True)
    out = ((x - mean) * c + mean) * b
    return out.clamp(0.0, 1.0) if clamp else out


def random_grayscale(x: torch.Tensor, p: float | torch.Tensor, rng: Random) -> torch.Tensor:
    """With probability ``p`` every channel becomes the mean over channels (ToGray for any band count)."""
    gray = coin(p, x.shape[0], rng).to(x.device)[:, None, None, None]
    return torch.where(gray, x.mean(dim=1, keepdim=True).expand_as(x), x)


def gaussian_kernel1d(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised Gaussian taps ``[n, 2 radius + 1]`` for standard deviations ``sigma`` [n]."""
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64, device=sigma.device)
    kernel = torch.exp(-0.5 * (taps[None] / sigma.double()[:, None].clamp_min(1e-12)) ** 2)
    return kernel / kernel.sum(1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: float | torch.Tensor, radius: int | None = None,
                  padding: str = "reflect") -> torch.Tensor:
    """Separable Gaussian filter of every channel of [B,C,H,W] with one ``sigma`` or one per sample [B].

    Args:
        radius: taps on each side (default ``ceil(3 sigma_max)``, bounded by the image for reflection).
        padding: "reflect" (images) or "zeros" (maps whose outside is empty, e.g. one-hot labels).
    """
    b, c, height, width = x.shape
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(b)
    if radius is None:
        radius = int(math.ceil(3 * float(sigma.max())))
    if padding == "reflect":
        radius = min(radius, height - 1, width - 1)
    elif padding != "zeros":
        raise ValueError(f"padding: expected 'reflect' or 'zeros', got {padding!r}")
    if radius == 0:
        return x
    kernel = gaussian_kernel1d(sigma, radius).to(x).repeat_interleave(c, dim=0)     # [B*C, K]
    y = x.reshape(1, b * c, height, width)
    if padding == "reflect":
        y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c)
        y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b * c)
    else:
        y = F.conv2d(y, kernel[:, None, None, :], padding=(0, radius), groups=b * c)
        y = F.conv2d(y, kernel[:, None, :, None], padding=(radius, 0), groups=b * c)
    return y.reshape(b, c, height, width)


def random_gaussian_blur(x: torch.Tensor, p: float | torch.Tensor, sigma_range: tuple[float, float],
                         rng: Random) -> torch.Tensor:
    """Blur the samples picked with probability ``p`` with sigma ~ U(sigma_range)."""
    pick = coin(p, x.shape[0], rng)
    sigma = uniform(*sigma_range, rng, x.shape[0])
    if not pick.any():
        return x
    idx = pick.nonzero()[:, 0].to(x.device)
    return x.index_copy(0, idx, gaussian_blur(x[idx], sigma[pick]))


def random_solarize(x: torch.Tensor, p: float | torch.Tensor, rng: Random, threshold: float = 0.5) -> torch.Tensor:
    """With probability ``p`` invert values at or above ``threshold`` (PIL's solarize at 128 of 255)."""
    pick = coin(p, x.shape[0], rng).to(x.device)[:, None, None, None]
    return torch.where(pick & (x >= threshold), 1.0 - x, x)
