"""CromSS (chapter 5): the paper's equations on hand-computed values, the model and one training step."""
import math

import pytest
import torch

from eobook import train
from eobook.config import ConfigError, get_profile
from eobook.methods import cromss
from eobook.methods.cromss import (CromSS, build_segmentation_model, cross_modal_enhance, entity_confidence,
                                   entity_selection_mask, gaussian_kernel1d, label_confidence, label_selection_mask,
                                   random_crop_flip_rotate, selection_schedule, spatial_temporal_smoothing,
                                   weighted_consistency_loss, weighted_segmentation_loss)
from eobook.runtime import DistInfo

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions are dominated by thread start-up; on a shared 2-core box one thread is 10x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(encoder="resnet18", encoder_depth=3, decoder_channels=(8, 8, 8), crop_size=16)


def probs_of(*pixels):
    """[1, C, 1, N] probabilities from N per-pixel class distributions."""
    return torch.tensor(pixels, dtype=torch.float32).T[None, :, None, :]


# ---------------------------------------------------------------------------------------- confidences
def test_entity_confidence_eq9():
    p = probs_of([1.0, 0, 0, 0], [0.25] * 4, [0.5, 0.5, 0, 0])
    torch.testing.assert_close(entity_confidence(p)[0, 0], torch.tensor([1.0, 0.0, 1 - math.log(2) / math.log(4)]))


def test_label_confidence_eq8_and_unlabelled_pixels():
    p = probs_of([0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6])
    labels = torch.tensor([[[0, 1, -1]]])
    torch.testing.assert_close(label_confidence(p, labels)[0, 0], torch.tensor([0.7, 0.3, 0.0]))
    with pytest.raises(ValueError, match="labels"):
        label_confidence(p, torch.tensor([[[0, 3, 1]]]))
    with pytest.raises(ValueError, match="probs"):
        label_confidence(torch.rand(3, 4), labels)


def test_cross_modal_enhance_eq10_and_footnote4():
    half = torch.full((2,), 0.5)
    torch.testing.assert_close(cross_modal_enhance(half, half), torch.full((2,), 3 / 8))  # the 3/8 fixed point
    f1, f2 = torch.tensor([1.0, 0.0, 0.8]), torch.tensor([0.0, 1.0, 0.6])
    torch.testing.assert_close(cross_modal_enhance(f1, f2), (f1 + f1 * f2) / 2)
    torch.testing.assert_close(cross_modal_enhance(f1, f2), torch.tensor([0.5, 0.0, 0.64]))
    with pytest.raises(ValueError, match="shape"):
        cross_modal_enhance(f1, half)


# ---------------------------------------------------------------------------------------- selection masks
def test_label_selection_mask_per_class_threshold_with_ties_and_empty_classes():
    conf = torch.tensor([[[0.9, 0.8, 0.8, 0.2, 0.6, 0.4, 0.7]]])
    labels = torch.tensor([[[0, 0, 0, 0, 1, 1, -1]]])  # class 2 is empty, the last pixel unlabelled
    # class 0: floor(0.5 * 4) = 2nd largest = 0.8 (a tie); class 1: floor(0.5 * 2) = 1st largest = 0.6
    w = label_selection_mask(conf, labels, alpha=0.5, num_classes=3)
    torch.testing.assert_close(w[0, 0], torch.tensor([1.0, 1.0, 1.0, 0.25, 1.0, 0.4 / 0.6, 0.0]))
    # alpha = 1: the class minimum is the threshold, every labelled pixel has weight 1
    torch.testing.assert_close(label_selection_mask(conf, labels, 1.0, 3)[0, 0], torch.tensor([1.0] * 6 + [0.0]))
    # floor(alpha N_c) = 0 still keeps the most confident pixel of the class
    torch.testing.assert_close(label_selection_mask(conf, labels, 0.1, 3)[0, 0],
                               torch.tensor([1.0, 0.8 / 0.9, 0.8 / 0.9, 0.2 / 0.9, 1.0, 0.4 / 0.6, 0.0]))
    with pytest.raises(ValueError, match="alpha"):
        label_selection_mask(conf, labels, 1.5, 3)


def test_entity_selection_mask_eq12_and_schedule():
    conf = torch.tensor([0.0, 0.4, 1.0])
    torch.testing.assert_close(entity_selection_mask(conf, 0.0), torch.ones(3))
    torch.testing.assert_close(entity_selection_mask(conf, 1.0), conf)
    torch.testing.assert_close(entity_selection_mask(conf, 0.5), torch.tensor([0.5, 0.7, 1.0]))
    assert selection_schedule(0, 80, 0.5) == pytest.approx((1 - 0.5 * math.exp(-5), math.exp(-5)))
    assert selection_schedule(40, 80, 0.5) == pytest.approx((1 - 0.5 * math.exp(-1.25), math.exp(-1.25)))
    assert selection_schedule(80, 80, 0.5) == (0.5, 1.0)
    assert cromss.rampup is train.rampup


# ---------------------------------------------------------------------------------------- label smoothing
def test_gaussian_kernel_is_truncated_at_four_sigma():
    k = gaussian_kernel1d(3.0)
    assert len(k) == 25 and k.sum().item() == pytest.approx(1.0) and k.argmax() == 12


def test_smoothing_sums_to_one_and_reduces_to_one_hot():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (4, 12, 12), generator=g)
    labels[1, :3, :3] = -1
    labels[2, 5, 5] = -1
    soft = spatial_temporal_smoothing(labels, 2, num_classes=5, beta=0.05, mu=0.15, sigma=3.0)
    assert soft.shape == (5, 12, 12)
    sums = soft.sum(0)
    labelled = labels[2] >= 0
    torch.testing.assert_close(sums[labelled], torch.ones(int(labelled.sum())))
    assert sums[5, 5] == 0  # unlabelled in the chosen season: no target
    plain = spatial_temporal_smoothing(labels, 2, 5, beta=0.0, mu=0.0)
    expected = torch.nn.functional.one_hot(labels[2].clamp(min=0), 5).permute(2, 0, 1).float() * labelled
    torch.testing.assert_close(plain, expected)


def test_smoothing_of_a_constant_scene_keeps_the_class_and_adds_the_uniform_part():
    labels = torch.full((4, 6, 6), 3)
    soft = spatial_temporal_smoothing(labels, 0, num_classes=9, beta=0.05, mu=0.15)
    torch.testing.assert_close(soft[3], torch.full((6, 6), 0.8 + 0.15 + 0.05 / 9))
    torch.testing.assert_close(soft[0], torch.full((6, 6), 0.05 / 9))


def test_smoothing_batched_equals_single_and_uses_all_seasons():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (2, 4, 10, 10), generator=g)
    batched = spatial_temporal_smoothing(labels, torch.tensor([0, 3]), 4)
    torch.testing.assert_close(batched[1], spatial_temporal_smoothing(labels[1], 3, 4))
    changed = labels[1].clone()
    changed[1] = (changed[1] + 1) % 4  # another season: only M_t changes
    assert not torch.allclose(spatial_temporal_smoothing(changed, 3, 4), batched[1])
    with pytest.raises(ValueError, match="season"):
        spatial_temporal_smoothing(labels[0], 4, 4)


# ---------------------------------------------------------------------------------------- losses
def test_weighted_losses_eq6_eq7():
    g = torch.Generator().manual_seed(0)
    log_q = torch.log_softmax(torch.randn(1, 3, 1, 4, generator=g), 1)
    z = torch.nn.functional.one_hot(torch.tensor([[[0, 1, 2, 1]]]), 3).permute(0, 3, 1, 2).float()
    w = torch.tensor([[[1.0, 0.5, 0.0, 1.0]]])
    q = log_q.exp()
    ce = -(w * (z * log_q).sum(1)).sum() / w.sum()
    dice = 1 - 2 * (w[:, None] * z * q).sum() / (w[:, None] * (z + q)).sum()
    torch.testing.assert_close(weighted_segmentation_loss(log_q, z, w), ce + dice)
    # a pixel with weight 0 does not count
    keep = [0, 1, 3]
    torch.testing.assert_close(weighted_segmentation_loss(log_q, z, w),
                               weighted_segmentation_loss(log_q[..., keep], z[..., keep], w[..., keep]))
    assert weighted_consistency_loss(log_q, log_q, w).item() == pytest.approx(0.0, abs=1e-7)
    log_p = torch.log(torch.tensor([0.5, 0.5]))[None, :, None, None]
    log_r = torch.log(torch.tensor([0.25, 0.75]))[None, :, None, None]
    kl = 0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75)
    assert weighted_consistency_loss(log_p, log_r, torch.ones(1, 1, 1)).item() == pytest.approx(kl, rel=1e-5)


def test_consistency_target_is_detached():
    logits_p = torch.randn(1, 3, 2, 2, requires_grad=True)
    logits_q = torch.randn(1, 3, 2, 2, requires_grad=True)
    weighted_consistency_loss(logits_p.log_softmax(1), logits_q.log_softmax(1), torch.ones(1, 2, 2)).backward()
    assert logits_p.grad is None and logits_q.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- model
def test_middle_fusion_shares_the_decoder_and_late_fusion_does_not():
    mid, late = CromSS("middle", **TINY), CromSS("late", **TINY)
    assert mid.unets["s1"].decoder is mid.unets["s2"].decoder
    assert mid.unets["s1"].segmentation_head is mid.unets["s2"].segmentation_head
    assert mid.unets["s1"].encoder is not mid.unets["s2"].encoder
    late_ptrs = {p.data_ptr() for p in late.unets["s1"].decoder.parameters()}
    assert late_ptrs.isdisjoint(p.data_ptr() for p in late.unets["s2"].decoder.parameters())
    decoder_size = sum(p.numel() for p in late.unets["s2"].decoder.parameters())
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(late) - n_params(mid) > decoder_size
    assert list(CromSS("single", **TINY).unets) == ["s2"]
    assert CromSS("middle", s2_band_index=cromss.S2_9BAND_INDEX, **TINY).unets["s2"].encoder.conv1.in_channels == 9
    with pytest.raises(ValueError, match="fusion"):
        CromSS("early", **TINY)


def test_augmentation_moves_all_channels_together():
    g = torch.Generator().manual_seed(0)
    base = torch.arange(4 * 20 * 20, dtype=torch.float32).reshape(4, 1, 20, 20)
    x = torch.cat([base, 2 * base], 1)
    out = random_crop_flip_rotate(x, 8, 0.5, 0.5, g)
    assert out.shape == (4, 2, 8, 8)
    torch.testing.assert_close(out[:, 1], 2 * out[:, 0])
    for b in range(4):  # each crop is a window of its own sample
        assert set(out[b, 0].flatten().tolist()) <= set(base[b].flatten().tolist())
    with pytest.raises(ValueError, match="crop size"):
        random_crop_flip_rotate(x, 32, 0.5, 0.5, g)


def synthetic_batch(n=4, size=24, seed=0):
    """Four seasons of S1/S2 whose noisy labels follow S2 band 3 (learnable), with 10% label flips."""
    g = torch.Generator().manual_seed(seed)
    s2 = torch.rand(n, 4, 13, size, size, generator=g)
    s1 = torch.randn(n, 4, 2, size, size, generator=g)
    dw = (s2[:, :, 3] * 3).long().clamp(max=2)
    flips = torch.rand(dw.shape, generator=g) < 0.1
    dw = torch.where(flips, torch.randint(0, 3, dw.shape, generator=g), dw)
    s1[:, :, 0] += dw.float()  # S1 carries some of the signal too
    return {"s1": s1, "s2": s2, "dw": dw}


def step_context(epoch=0, seed=0):
    return train.StepContext(epoch, 0, 0, 1, 1, torch.device("cpu"), torch.Generator().manual_seed(seed), None,
                             DistInfo())


@pytest.mark.parametrize("fusion", ["middle", "late", "single"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(fusion):
    torch.manual_seed(0)
    module = CromSS(fusion, num_classes=3, rampup_epochs=2, **TINY)
    batch = synthetic_batch()
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        out = module(batch, step_context(epoch=2))  # past the ramp: alpha = alpha_0, gamma = 1
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    if fusion != "single":
        assert out["alpha"] == 0.5 and out["gamma"] == 1.0 and 0 < out["mean_w_l"] <= 1


class _Batches(torch.utils.data.Dataset):
    def __init__(self):
        self.data = synthetic_batch(n=4, size=16, seed=3)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.data.items()}


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    cfg = train.TrainConfig(epochs=2, batch_size=2, optimizer="adam", lr=1e-3, lr_schedule="plateau",
                            plateau_patience=0, device="cpu", log_every=0, checkpoint_every=1)

    def run(folder, stop=None):
        torch.manual_seed(0)
        module = CromSS("middle", num_classes=3, rampup_epochs=1, **TINY)
        train.fit(module, _Batches(), cfg, checkpoint_dir=folder, stop_after_steps=stop, log=lambda s: None)
        return module

    whole = run(tmp_path / "whole")
    run(tmp_path / "cut", stop=3)
    resumed = run(tmp_path / "cut")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_transfer_model_starts_from_the_pretrained_encoder():
    module = CromSS("middle", **TINY)
    state = module.encoder("s2").state_dict()
    model = build_segmentation_model("deeplabv3plus", 13, 5, "resnet18", 3, 16, encoder_state=state)
    for k, v in model.encoder.state_dict().items():
        torch.testing.assert_close(v, state[k])
    for arch in ("pspnet", "fpn", "deeplabv3plus"):
        for depth in (3, 4, 5):  # the tiny, small and full encoder depths
            out = build_segmentation_model(arch, 13, 5, "resnet18", depth, 16).eval()(torch.randn(1, 13, 64, 64))
            assert out.shape == (1, 5, 64, 64), (arch, depth)


# ---------------------------------------------------------------------------------------- profiles
def test_profiles_follow_the_paper_and_refuse_bad_values():
    full = get_profile("cromss", "full")
    assert (full.encoder, full.lr, full.batch_size, full.epochs, full.optimizer) == ("resnet50", 5e-3, 512, 200, "adam")
    assert (full.alpha_0, full.rampup_epochs, full.beta, full.mu, full.smoothing_sigma) == (0.5, 80, 0.05, 0.15, 3.0)
    assert (full.lr_schedule, full.plateau_patience, full.plateau_factor, full.crop_size) == ("plateau", 30, 0.5, 256)
    assert isinstance(full, train.TrainConfig)  # the loop reads the profile itself
    assert full.decoder_channels == (256, 128, 64, 32, 16)
    for field, value in [("fusion", "early"), ("alpha_0", 1.5), ("s2_bands", 10), ("decoder_channels", (8, 8)),
                         ("plateau_factor", 1.0), ("mu", -0.1)]:
        with pytest.raises(ConfigError, match=field):
            get_profile("cromss", "tiny", **{field: value})
