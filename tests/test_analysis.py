"""eobook.analysis on inputs with known answers."""
import numpy as np
import pytest
import torch
from torch import nn

from eobook.analysis import (accumulated_variance_ratio, batchnorm_kl_divergence, batchnorm_statistics,
                             pooled_features, weight_kl_divergence)


def test_isotropic_features_give_a_near_diagonal_curve():
    x = torch.randn(20000, 8, generator=torch.Generator().manual_seed(0))
    curve = accumulated_variance_ratio(x)
    assert curve.shape == (8,)
    np.testing.assert_allclose(curve, np.arange(1, 9) / 8, atol=0.02)


def test_one_dominant_direction_gives_a_steep_curve():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g) * 0.01
    x[:, 0] += 10 * torch.randn(500, generator=g)
    curve = accumulated_variance_ratio(x)
    assert curve[0] > 0.99 and curve[-1] == pytest.approx(1.0)


def test_variance_ratio_refuses_bad_features():
    with pytest.raises(ValueError, match="features"):
        accumulated_variance_ratio(torch.randn(10))
    with pytest.raises(ValueError, match="constant"):
        accumulated_variance_ratio(torch.ones(10, 3))


def test_identical_weights_give_kl_zero():
    w = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert weight_kl_divergence(w, w.clone()) == pytest.approx(0.0, abs=1e-12)
    layer = nn.Linear(4, 4)
    assert weight_kl_divergence(layer.parameters(), [p.detach().clone() for p in layer.parameters()]) == pytest.approx(0.0, abs=1e-12)


def test_weight_kl_matches_hand_computed_histograms():
    before = torch.tensor([0.0, 0.0, 0.0, 1.0])  # bins [0, .5), [.5, 1]: P = (3/4, 1/4)
    after = torch.tensor([0.0, 1.0, 1.0, 1.0])   # Q = (1/4, 3/4)
    expected = 0.75 * np.log(3) + 0.25 * np.log(1 / 3)
    assert weight_kl_divergence(before, after, bins=2, eps=0.0) == pytest.approx(expected)
    assert weight_kl_divergence(before, after, bins=2) > 0


def test_weight_kl_refuses_empty_or_nan():
    with pytest.raises(ValueError, match="before"):
        weight_kl_divergence([], torch.ones(3))
    with pytest.raises(ValueError, match="after"):
        weight_kl_divergence(torch.ones(3), torch.tensor([float("nan")]))


def _bn_net(mean: float, var: float) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3))
    net[1].running_mean.fill_(mean)
    net[1].running_var.fill_(var)
    return net


def test_batchnorm_kl_zero_for_equal_and_closed_form_otherwise():
    assert batchnorm_kl_divergence(_bn_net(0.5, 2.0), _bn_net(0.5, 2.0)) == pytest.approx(0.0, abs=1e-12)
    # KL(N(0, 1) || N(1, 1)) = 1/2 (up to the BN eps in the variances)
    assert batchnorm_kl_divergence(_bn_net(0.0, 1.0), _bn_net(1.0, 1.0), eps=0.0) == pytest.approx(0.5)
    stats = batchnorm_statistics(_bn_net(0.0, 1.0))
    assert list(stats) == ["1"] and stats["1"][0].shape == (3,)
    with pytest.raises(ValueError, match="no batch-norm layer"):
        batchnorm_kl_divergence(stats, {})


def test_pooled_features_shapes():
    maps = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    image = pooled_features(maps, "image")
    pixel = pooled_features(maps, "pixel", pixels_per_image=5, generator=torch.Generator().manual_seed(0))
    assert [f.shape for f in image] == [(2, 4), (2, 6)]
    assert [f.shape for f in pixel] == [(10, 4), (10, 6)]
    torch.testing.assert_close(image[0], maps[0].mean((2, 3)))
