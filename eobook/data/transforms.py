"""Normalisation of Sentinel-1/2 values, and the statistics each dataset uses.

Conventions:

* **mean +/- 2 std to [0, 1]** (SSL4EO-S12, Wang et al., 2023; DINO-MM, Wang et al., 2022): per band,
  clip to ``[mean - 2 std, mean + 2 std]`` and scale that interval to ``[0, 1]``. The authors then cast
  to uint8; the book keeps float32 (no quantisation).
* **S1 dB standardisation**: ``(x_dB - mean) / std`` per polarisation.
* **z-score with the tile's statistics** (MMEarth): L1C and L2A tiles have different statistics and
  each tile is normalised with the statistics of its own processing level.

Which reader uses which statistics is stated in each reader's docstring.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .bands import S2_L1C_BANDS, S2_L2A_BANDS

# SSL4EO-S12 L1C (``s2c``, 13 bands, order S2_L1C_BANDS), from the authors' pretraining code.
SSL4EO_S2C_MEAN = (1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 22.0,
                   2195.2, 1537.4)
SSL4EO_S2C_STD = (791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 47.5,
                  1340.0, 1142.9)
# SSL4EO-S12 L2A (``s2a``, 12 bands, order S2_L2A_BANDS).
SSL4EO_S2A_MEAN = (752.4, 884.3, 1144.2, 1297.5, 1624.9, 2194.6, 2422.2, 2517.8, 2581.6, 2645.5, 2368.5,
                   1805.1)
SSL4EO_S2A_STD = (1108.0, 1155.2, 1183.6, 1368.1, 1370.3, 1355.6, 1416.5, 1474.8, 1439.3, 1582.3, 1455.5,
                  1343.5)
# BigEarthNet L2A (12 bands, order S2_L2A_BANDS), the statistics of the DINO-MM / SSL4EO BEN loaders.
BEN_S2_MEAN = (340.76769064, 429.9430203, 614.21682446, 590.23569706, 950.68368468, 1792.46290469,
               2075.46795189, 2218.94553375, 2266.46036911, 2246.0605464, 1594.42694882, 1009.32729131)
BEN_S2_STD = (554.81258967, 572.41639287, 582.87945694, 675.88746967, 729.89827633, 1096.01480586,
              1273.45393088, 1365.45589904, 1356.13789355, 1302.3292881, 1079.19066363, 818.86747235)
# Sentinel-1 dB statistics, order (VV, VH).
DINO_MM_S1_MEAN = (-12.59, -19.22)  # BigEarthNet-MM (DINO-MM paper)
DINO_MM_S1_STD = (5.04, 5.42)
SSL4EO_S1_MEAN = (-12.55, -20.19)   # SSL4EO-S12
SSL4EO_S1_STD = (5.26, 5.91)

# fMoW-Sentinel (13 bands, order S2_L1C_BANDS), SatMAE's ``SentinelIndividualImageDataset`` statistics.
FMOW_S2_MEAN = (1370.19151926, 1184.3824625, 1120.77120066, 1136.26026392, 1263.73947144, 1645.40315151,
                1846.87040806, 1762.59530783, 1972.62420416, 582.72633433, 14.77112979, 1732.16362238,
                1247.91870117)
FMOW_S2_STD = (633.15169573, 650.2842772, 712.12507725, 965.23119807, 948.9819932, 1108.06650639,
               1258.36394548, 1233.1492281, 1364.38688993, 472.37967789, 14.3114637, 1310.36996126,
               1087.6020813)

assert len(SSL4EO_S2C_MEAN) == len(S2_L1C_BANDS) and len(BEN_S2_MEAN) == len(S2_L2A_BANDS)


def _per_band(values: Sequence[float], ndim: int, band_axis: int) -> np.ndarray:
    """Reshape a per-band vector so that it broadcasts along ``band_axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[band_axis] = len(values)
    return np.asarray(values, dtype=np.float32).reshape(shape)


def _meanstd2_bounds(mean: Sequence[float], std: Sequence[float], ndim: int, band_axis: int):
    """(lo, hi) = mean -/+ 2 std per band, float32, shaped to broadcast along ``band_axis``."""
    lo = _per_band(mean, ndim, band_axis) - 2 * _per_band(std, ndim, band_axis)
    hi = _per_band(mean, ndim, band_axis) + 2 * _per_band(std, ndim, band_axis)
    return lo, hi


def normalize_s2_meanstd2(x: np.ndarray, mean: Sequence[float], std: Sequence[float],
                          band_axis: int = -3) -> np.ndarray:
    """Clip each band to mean +/- 2 std and scale that interval to [0, 1] (SSL4EO-S12, DINO-MM).

    Args:
        x: reflectances (DN), bands along ``band_axis`` (default: [..., C, H, W]).
        mean, std: per-band statistics, one value per band.
    Returns:
        float32 array of ``x``'s shape with values in [0, 1].
    """
    band_axis = band_axis % x.ndim
    lo, hi = _meanstd2_bounds(mean, std, x.ndim, band_axis)
    return np.clip((x.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def standardize(x: np.ndarray, mean: Sequence[float], std: Sequence[float], band_axis: int = -3) -> np.ndarray:
    """Per-band z-score ``(x - mean) / std`` (S1 dB standardisation; MMEarth tile statistics)."""
    band_axis = band_axis % x.ndim
    return (x.astype(np.float32) - _per_band(mean, x.ndim, band_axis)) / _per_band(std, x.ndim, band_axis)


def standardize_s1_db(x: np.ndarray, mean: Sequence[float] = DINO_MM_S1_MEAN,
                      std: Sequence[float] = DINO_MM_S1_STD, band_axis: int = -3) -> np.ndarray:
    """Standardise S1 backscatter in dB, bands (VV, VH) along ``band_axis``."""
    return standardize(x, mean, std, band_axis)


@dataclass(frozen=True)
class DeviceNormalization:
    """The normalisation of a reader's native batch (its arrays as stored: uint16 reflectances, int8 classes,
    unnormalised), run on the batch's device at the start of a training step (:func:`eobook.train.fit`).

    Per key of the collated batch: ``meanstd2`` or ``zscore`` with per-band statistics (bands on axis -3), and
    the dtype the samples have (e.g. int8 Dynamic World classes -> int64). The float32 operations are those of
    :func:`normalize_s2_meanstd2` and :func:`standardize`, with the same float32 constants, so that the result
    equals the samples normalised on the CPU.
    """

    meanstd2: dict[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)
    zscore: dict[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        for key, (mean, std) in self.meanstd2.items():
            x = batch[key]
            lo, hi = (torch.from_numpy(b).to(x.device) for b in _meanstd2_bounds(mean, std, x.ndim, x.ndim - 3))
            out[key] = ((x.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)
        for key, (mean, std) in self.zscore.items():
            x = batch[key]
            m, s = (torch.from_numpy(_per_band(v, x.ndim, x.ndim - 3)).to(x.device) for v in (mean, std))
            out[key] = (x.float() - m) / s
        for key, dtype in self.dtypes.items():
            out[key] = out[key].to(dtype)
        return out
