"""The shared batched augmentations: exact geometry, the torchvision-like distributions, and the RNG contract
(per-sample draws that a DDP rank shares with one process over the global batch)."""
import math

import pytest
import torch

from eobook import augment
from eobook.rng import GeneratorRandom, ViewRandom
from eobook.runtime import DistInfo
from eobook.train import StepContext


def rng(seed=0):
    return GeneratorRandom(seed)


def test_crop_of_whole_image_is_identity_and_flips_mirror():
    x = torch.rand(2, 3, 8, 8)
    whole = (torch.zeros(2), torch.zeros(2), torch.ones(2), torch.ones(2))
    assert torch.allclose(augment.resample_boxes(x, whole, 8, mode="bilinear"), x, atol=1e-5)
    flipped = augment.resample_boxes(x, whole, 8, hflip=torch.tensor([True, False]), mode="bilinear")
    assert torch.allclose(flipped[0], x[0].flip(-1), atol=1e-5) and torch.allclose(flipped[1], x[1], atol=1e-5)
    upside = augment.resample_boxes(x, whole, 8, vflip=torch.tensor([False, True]), mode="bilinear")
    assert torch.allclose(upside[1], x[1].flip(-2), atol=1e-5) and torch.allclose(upside[0], x[0], atol=1e-5)


def test_crop_boxes_respect_scale_and_ratio_and_stay_inside():
    cx, cy, w, h = augment.crop_boxes(4000, (0.05, 0.4), rng())
    area = w * h  # fraction of the image (w, h are fractions of the side)
    assert float(area.min()) >= 0.05 - 1e-6 and float(area.max()) <= 0.4 + 1e-6
    assert float((w / h).min()) >= 3 / 4 - 1e-5 and float((w / h).max()) <= 4 / 3 + 1e-5
    assert float((cx.abs() + w).max()) <= 1 + 1e-6 and float((cy.abs() + h).max()) <= 1 + 1e-6


def test_random_resized_crop_output_and_determinism():
    x = torch.rand(6, 5, 20, 20)
    a = augment.random_resized_crop(x, 12, (0.2, 1.0), rng(3), vflip_p=0.5)
    b = augment.random_resized_crop(x, 12, (0.2, 1.0), rng(3), vflip_p=0.5)
    assert a.shape == (6, 5, 12, 12) and torch.equal(a, b)
    assert not torch.equal(a, augment.random_resized_crop(x, 12, (0.2, 1.0), rng(4), vflip_p=0.5))


def test_center_crop_resize_takes_the_middle():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2:6, 2:6] = 1.0
    out = augment.center_crop_resize(x, 4, 0.5, mode="bilinear")
    assert torch.allclose(out, torch.ones(1, 1, 4, 4), atol=1e-5)


def test_random_crop_is_an_exact_window():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    out = augment.random_crop(x, 3, rng(1))
    for b in range(2):
        windows = [x[b, :, i:i + 3, j:j + 3] for i in range(4) for j in range(4)]
        assert any(torch.equal(out[b], w) for w in windows)
    with pytest.raises(ValueError, match="larger than the images"):
        augment.random_crop(x, 7, rng())


def test_flip_rotate_frequencies_and_exactness():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).expand(4000, 1, 4, 4)
    out = augment.random_flip_rotate(x, 0.5, 0.2, rng(0))
    flipped = x[0].flip(-1)
    kinds = {"same": x[0], "flip": flipped, **{f"rot{k}": torch.rot90(x[0], k, (-2, -1)) for k in (1, 2, 3)},
             **{f"flip+rot{k}": torch.rot90(flipped, k, (-2, -1)) for k in (1, 2, 3)}}
    counts = {name: sum(torch.equal(o, ref) for o in out) for name, ref in kinds.items()}
    assert sum(counts.values()) == 4000                       # every output is one of the 8 exact symmetries
    assert abs(counts["same"] / 4000 - 0.5 * 0.8) < 0.03      # no flip, no rotation
    rotated = sum(v for k, v in counts.items() if "rot" in k) / 4000
    assert abs(rotated - 0.2) < 0.03


def test_hflip_moves_every_modality_together():
    inputs = {"a": torch.rand(64, 2, 3, 5), "b": torch.randint(0, 9, (64, 3, 5))}
    out = augment.random_hflip(inputs, 0.5, rng(2))
    flipped = [torch.equal(out["a"][i], inputs["a"][i].flip(-1)) for i in range(64)]
    assert flipped == [torch.equal(out["b"][i], inputs["b"][i].flip(-1)) for i in range(64)]
    assert 10 < sum(flipped) < 54


def test_brightness_contrast_matches_its_formula():
    x = torch.rand(3, 4, 5, 5)
    out = augment.brightness_contrast(x, 0.4, 1.0, rng(5), per_channel=False, clamp=False)
    draw = GeneratorRandom(5)
    draw.rand(3)                                              # the coin
    b = 0.6 + 0.8 * draw.rand(3)
    c = 0.6 + 0.8 * draw.rand(3)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    expected = ((x - mean) * c[:, None, None, None] + mean) * b[:, None, None, None]
    assert torch.allclose(out, expected, atol=1e-6)
    unit = augment.brightness_contrast(x, 0.9, 1.0, rng(6))
    assert float(unit.min()) >= 0 and float(unit.max()) <= 1
    assert torch.allclose(augment.brightness_contrast(x, 0.4, 0.0, rng(7)), x, atol=1e-6)  # p = 0: untouched


def test_gaussian_blur_preserves_constants_smooths_and_matches_taps():
    const = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(augment.gaussian_blur(const, torch.tensor([0.5, 2.0])), const, atol=1e-6)
    noise = torch.rand(1, 1, 32, 32)
    assert float(augment.gaussian_blur(noise, 2.0).std()) < 0.5 * float(noise.std())
    # one impulse, zero padding: the output is the outer product of the normalised taps
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[..., 4, 4] = 1.0
    taps = torch.tensor([math.exp(-0.5 * (t / 1.0) ** 2) for t in range(-3, 4)])
    taps = taps / taps.sum()
    out = augment.gaussian_blur(impulse, 1.0, radius=3, padding="zeros")
    assert torch.allclose(out[0, 0, 1:8, 1:8], taps[:, None] * taps[None, :], atol=1e-6)


def test_solarize_and_grayscale():
    x = torch.tensor([0.2, 0.7]).reshape(1, 2, 1, 1).expand(2, 2, 1, 1).contiguous()
    assert torch.allclose(augment.random_solarize(x, 1.0, rng())[0].flatten(), torch.tensor([0.2, 0.3]))
    gray = augment.random_grayscale(x, 1.0, rng())
    assert torch.allclose(gray, torch.full_like(x, 0.45))


def test_step_context_draws_split_over_two_ranks_equal_one_process():
    """The RNG contract: rank r's draws are rows of the one draw for the global batch."""
    def ctx(rank, world):
        return StepContext(0, 0, 0, 1, 1, torch.device("cpu"), torch.Generator().manual_seed(7), None,
                           DistInfo(rank, world))
    x = torch.rand(4, 3, 10, 10)
    one = augment.random_resized_crop(x, 6, (0.3, 1.0), ctx(0, 1))
    halves = [augment.random_resized_crop(x[2 * r:2 * r + 2], 6, (0.3, 1.0), ctx(r, 2)) for r in (0, 1)]
    assert torch.allclose(one, torch.cat(halves), atol=1e-6)


def test_view_random_is_view_major_over_the_samples_draws():
    source = GeneratorRandom(0)
    views = ViewRandom(GeneratorRandom(0), batch_size=3, n_views=2).rand(6, 4)
    per_sample = source.rand(3, 2, 4)                          # [sample, view, ...]
    assert torch.equal(views[:3], per_sample[:, 0]) and torch.equal(views[3:], per_sample[:, 1])
