"""CromSS (chapter 5): the paper's equations on hand-computed values, the model and one training step."""
import math

import pandas as pd
import pytest
import torch

from eobook import train
from eobook.config import ConfigError
from eobook.data import SMOKE_SAMPLES
from eobook.data.bands import DFC_CLASSES
from eobook.evaluate import Task
from eobook.evaluate.metrics import segmentation_metrics
from eobook.methods import cromss
from eobook.methods.cromss import (CromSS, build_segmentation_model, cross_modal_enhance, entity_confidence,
                                   entity_selection_mask, gaussian_smooth, label_confidence, label_selection_mask,
                                   selection_schedule, spatial_temporal_smoothing, weighted_consistency_loss,
                                   weighted_segmentation_loss)
from eobook.rng import GeneratorRandom
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


# ---------------------------------------------------------------------------------------- label smoothing
def test_gaussian_smoothing_is_truncated_at_four_sigma_with_zero_padding():
    delta = torch.zeros(1, 1, 31, 31)
    delta[0, 0, 15, 15] = 1.0
    out = gaussian_smooth(delta, 3.0)[0, 0]  # sigma = 3: 25 taps, radius 12
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert out[15, 15 + 12] > 0 and out[15, 15 + 13] == 0 and out[15 + 13, 15] == 0
    taps = torch.exp(-0.5 * (torch.arange(-12, 13, dtype=torch.float64) / 3.0) ** 2)
    taps = taps / taps.sum()
    assert out[15, 27].item() == pytest.approx((taps[12] * taps[24]).item(), rel=1e-5)  # separable: g(0) g(12)
    corner = torch.zeros(1, 1, 31, 31)
    corner[0, 0, 0, 0] = 1.0
    assert gaussian_smooth(corner, 3.0).sum().item() < 0.5  # zero padding: mass leaves the tile
    assert torch.equal(gaussian_smooth(delta, 0.0), delta)


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


def labelled_seasons(n=3, size=20, seed=0):
    """Four seasons whose S2 band 0 and S1 channel 0 repeat the label map and S2 band 1 names the season."""
    g = torch.Generator().manual_seed(seed)
    dw = torch.randint(0, 3, (n, 4, size, size), generator=g)
    s2 = torch.zeros(n, 4, 13, size, size)
    s2[:, :, 0] = dw.float()
    s2[:, :, 1] = torch.arange(4.0).view(1, 4, 1, 1)
    s1 = torch.zeros(n, 4, 2, size, size)
    s1[:, :, 0] = 2 * dw.float()
    return {"s1": s1, "s2": s2, "dw": dw}


def test_season_crop_flip_and_rotation_move_images_and_labels_together():
    batch = labelled_seasons()
    module = CromSS("late", num_classes=3, **{**TINY, "crop_size": 12})
    images, labels, soft = module.pick_season_and_augment(batch, GeneratorRandom(0))
    assert images["s2"].shape == (3, 13, 12, 12) and images["s1"].shape == (3, 2, 12, 12)
    assert labels.shape == (3, 12, 12) and labels.dtype == torch.long and soft.shape == (3, 3, 12, 12)
    torch.testing.assert_close(images["s2"][:, 0], labels.float())
    torch.testing.assert_close(images["s1"][:, 0], 2 * labels.float())
    assert torch.equal(soft.argmax(1), labels)  # Z' keeps 0.8 + of the label's class
    torch.testing.assert_close(soft.sum(1), torch.ones(3, 12, 12))
    # without flips and rotations every sample is a 12 x 12 window of one season's label map
    module.flip_prob = module.rotate_prob = 0.0
    images, labels, _ = module.pick_season_and_augment(batch, GeneratorRandom(1))
    for b in range(3):
        season = int(images["s2"][b, 1, 0, 0])
        windows = batch["dw"][b, season].unfold(0, 12, 1).unfold(1, 12, 1).reshape(-1, 12, 12)
        assert (windows == labels[b]).all((1, 2)).any()
    with pytest.raises(ValueError, match="crop size"):
        CromSS("single", num_classes=3, **{**TINY, "crop_size": 32}).pick_season_and_augment(batch, GeneratorRandom(0))


def test_season_and_geometry_draws_are_the_same_split_over_two_ranks():
    """Two DDP ranks with half the batch each draw exactly what one process draws for the whole batch."""
    batch = labelled_seasons(n=4)
    module = CromSS("late", num_classes=3, **{**TINY, "crop_size": 12})

    def augmented(rows, rank, world):
        ctx = train.StepContext(0, 0, 0, 1, 1, torch.device("cpu"), torch.Generator().manual_seed(5), None,
                                DistInfo(rank, world))
        return module.pick_season_and_augment({k: v[rows] for k, v in batch.items()}, ctx)

    whole = augmented(slice(None), 0, 1)
    halves = [augmented(slice(2 * r, 2 * r + 2), r, 2) for r in range(2)]
    for m in ("s1", "s2"):
        assert torch.equal(whole[0][m], torch.cat([h[0][m] for h in halves]))
    assert torch.equal(whole[1], torch.cat([h[1] for h in halves]))
    assert torch.equal(whole[2], torch.cat([h[2] for h in halves]))


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


def test_pspnet_loads_the_stages_it_uses_of_a_deeper_encoder():
    """The authors' PSPNet (smp defaults) runs the first 3 stages of the 5-stage pretrained ResNet."""
    deep = CromSS("single", encoder="resnet18", encoder_depth=5, decoder_channels=(8,) * 5).encoder("s2").state_dict()
    model = build_segmentation_model("pspnet", 13, 10, "resnet18", 3, 16, encoder_state=deep)
    loaded = model.encoder.state_dict()
    assert not any(k.startswith(("layer3", "layer4")) for k in loaded)  # the stages PSPNet does not run are gone
    for k, v in loaded.items():
        torch.testing.assert_close(v, deep[k], msg=k)
    shallow = CromSS("single", **TINY).encoder("s2").state_dict()  # 3 stages: nothing for a 4-stage network
    with pytest.raises(ValueError, match="encoder_state: lacks"):
        build_segmentation_model("fpn", 13, 13, "resnet18", 4, 16, encoder_state=shallow)


# ---------------------------------------------------------------------------------------- transfer
def tiny_cfg(**overrides):
    settings = dict(encoder_depth=3, decoder_channels=(8, 8, 8), pspnet_channels=16, deeplab_channels=16,
                    fpn_channels=16, downstream_epochs=2, dfc2020_batch_size=4, downstream_seeds=2,
                    frozen_bn_update=False, device="cpu")
    return cromss.CHAPTER.profile("tiny", **{**settings, **overrides})


def segmentation_samples(n=8, size=16, seed=0):
    """Scenes whose clean label follows S2 band 2 (and S1 channel 0); one unlabelled corner each."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):
        s2 = torch.rand(13, size, size, generator=g)
        label = (s2[2] * 4).long().clamp(max=3)
        label[:2, :2] = -1
        samples.append({"s2": s2, "s1": torch.randn(2, size, size, generator=g) + label.float(), "label": label})
    return samples


def batchnorm_buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


def test_transfer_freezes_the_encoder_and_its_statistics_or_trains_it():
    cfg = tiny_cfg()
    data = segmentation_samples()
    state = CromSS("middle", **TINY).encoder("s2").state_dict()
    frozen = cromss.transfer_to_segmentation(state, data[:6], data[6:], cfg, modality="s2", frozen=True, seed=0)
    assert set(frozen.metrics) == {"OA", "AA", "mIoU", "mF1", "classes"}
    for k, v in frozen.model.encoder.state_dict().items():  # weights and BN running statistics
        torch.testing.assert_close(v, state[k], msg=k)
    assert any(not torch.equal(frozen.initial_state[k], v) for k, v in frozen.model.state_dict().items()
               if k.startswith("decoder"))
    tuned = cromss.transfer_to_segmentation(state, data[:6], data[6:], cfg, modality="s2", frozen=False, seed=0)
    assert any(not torch.equal(v, state[k]) for k, v in tuned.model.encoder.state_dict().items())
    # the same seed builds the same network (decoder and, for random init, encoder); another seed does not
    random0 = cromss.transfer_to_segmentation(None, data[:6], data[6:], cfg, modality="s1", frozen=True, seed=0)
    again = cromss.transfer_to_segmentation(None, data[:6], data[6:], cfg, modality="s1", frozen=True, seed=0)
    random1 = cromss.transfer_to_segmentation(None, data[:6], data[6:], cfg, modality="s1", frozen=True, seed=1)
    assert random0.metrics == again.metrics
    w = "encoder.conv1.weight"
    assert torch.equal(random0.initial_state[w], again.initial_state[w])
    assert not torch.equal(random0.initial_state[w], random1.initial_state[w])
    assert random0.model.encoder.conv1.in_channels == 2


def test_frozen_encoder_batchnorm_statistics_follow_the_data_as_the_authors_train():
    """frozen_bn_update (the authors' code): the encoder's weights stay, its BN running statistics move."""
    cfg = tiny_cfg(frozen_bn_update=True)
    data = segmentation_samples()
    state = CromSS("middle", **TINY).encoder("s2").state_dict()
    run = cromss.transfer_to_segmentation(state, data[:6], data[6:], cfg, modality="s2", frozen=True, seed=0)
    after = run.model.encoder.state_dict()
    for k, v in after.items():
        if "running" in k or "num_batches" in k:
            continue
        torch.testing.assert_close(v, state[k], msg=k)  # weights and affine BN parameters: frozen
    moved = [k for k in batchnorm_buffers(run.model.encoder) if not torch.equal(after[k], state[k])]
    assert "bn1.running_mean" in moved and len(moved) > 4
    assert not run.model.training  # scored in eval mode


def test_cross_entropy_dice_is_the_authors_loss_over_labelled_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    labels = torch.randint(0, 2, (2, 4, 4), generator=g)  # class 2 never occurs
    labels[0, 0] = -1
    loss = cromss.CrossEntropyDice()(logits, labels)
    # by hand: CE over labelled pixels + mean over classes of (1 - Dice), 0 for a class absent from the batch
    keep = labels >= 0
    ce = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], labels[keep])
    p = logits.softmax(1) * keep.unsqueeze(1)
    onehot = torch.nn.functional.one_hot(labels.clamp(min=0), 3).permute(0, 3, 1, 2) * keep.unsqueeze(1)
    dice = [1 - 2 * (p[:, c] * onehot[:, c]).sum() / (p[:, c] + onehot[:, c]).sum() if onehot[:, c].any()
            else torch.tensor(0.0) for c in range(3)]
    torch.testing.assert_close(loss, ce + torch.stack(dice).mean(), rtol=1e-5, atol=1e-6)
    # the logits of an unlabelled pixel do not matter
    other = logits.detach().clone()
    other[0, :, 0] = 100 * torch.randn(3, 4, generator=g)
    torch.testing.assert_close(cromss.CrossEntropyDice()(other, labels), loss.detach())
    nothing = cromss.CrossEntropyDice()(logits, torch.full_like(labels, -1))
    nothing.backward()
    assert nothing.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_transfer_augment_crops_flips_and_rotates_images_and_labels_together():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(-1, 5, (6, 20, 20), generator=g)
    s2 = torch.rand(6, 13, 20, 20, generator=g)
    s2[:, 4] = label.float()  # band 4 repeats the label map
    s1 = torch.stack([2 * label.float(), -label.float()], 1)
    batch = {"s2": s2, "s1": s1, "label": label, "id": [str(i) for i in range(6)]}
    out = cromss.transfer_augment(12, 0.5, 0.5)(batch, GeneratorRandom(1))
    assert out["s2"].shape == (6, 13, 12, 12) and out["s1"].shape == (6, 2, 12, 12)
    assert out["label"].shape == (6, 12, 12) and out["label"].dtype == torch.long and out["id"] == batch["id"]
    torch.testing.assert_close(out["s2"][:, 4], out["label"].float())
    torch.testing.assert_close(out["s1"][:, 0], 2 * out["label"].float())
    assert (out["label"] == -1).any()  # unlabelled pixels stay unlabelled
    # every output is a flipped / rotated 12 x 12 window of its own sample
    for b in range(6):
        windows = label[b].unfold(0, 12, 1).unfold(1, 12, 1).reshape(-1, 12, 12)
        views = [torch.rot90(v, k, (-2, -1)) for v in (out["label"][b], out["label"][b].flip(-1)) for k in range(4)]
        assert any((windows == v).all((1, 2)).any() for v in views)
    again = cromss.transfer_augment(12, 0.5, 0.5)(batch, GeneratorRandom(1))
    assert torch.equal(again["s2"], out["s2"])  # drawn from the step's source
    whole = cromss.transfer_augment(0, 0.0, 0.0)(batch, GeneratorRandom(1))
    assert torch.equal(whole["label"], label) and torch.equal(whole["s2"], s2)  # crop 0, p 0: unchanged


def test_predict_pads_to_the_output_stride_and_scales_s1():
    model = build_segmentation_model("fpn", 2, 4, "resnet18", 3, 16).eval()
    assert model.encoder.output_stride == 8
    predict = cromss.segmentation_predict("s1", None, 8)
    z = torch.randn(2, 2, 30, 30)
    out = predict(model, {"s1": z})
    assert out.shape == (2, 4, 30, 30)  # 30 px: padded to 32 for smp, cut back
    padded = model(torch.nn.functional.pad(cromss.s1_unit_range(z), (0, 2, 0, 2)))
    torch.testing.assert_close(out, padded[..., :30, :30])
    s2_model = build_segmentation_model("pspnet", 9, 4, "resnet18", 3, 16).eval()
    s2 = torch.rand(1, 13, 16, 16)
    out = cromss.segmentation_predict("s2", list(cromss.S2_9BAND_INDEX), 8)(s2_model, {"s2": s2})
    torch.testing.assert_close(out, s2_model(s2[:, list(cromss.S2_9BAND_INDEX)]))


def test_s1_unit_range_is_the_authors_clip_of_mean_plus_minus_two_std():
    torch.testing.assert_close(cromss.s1_unit_range(torch.tensor([-3.0, -2.0, 0.0, 1.0, 2.0, 5.0])),
                               torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))


def test_scores_average_the_evaluated_classes_present_in_the_test_labels():
    task = Task("segmentation", 10, ignore_index=-1, eval_classes=cromss.DFC2020_EVAL_IDS)
    targets = torch.tensor([[0, 0, 1, 2, -1, 9]])  # savanna (2) is not evaluated; 3..8 are absent
    preds = torch.tensor([[0, 1, 1, 2, 5, 9]])
    scores = task.score(preds, targets)
    expected = segmentation_metrics(preds, targets, 10, ignore_index=-1, classes=(0, 1, 9))
    assert scores == expected and scores["classes"] == 3
    assert scores["OA"] == pytest.approx(100 * 4 / 5)  # every labelled pixel counts in OA, savanna too
    assert scores["mIoU"] == pytest.approx(100 * (1 / 2 + 1 / 2 + 1) / 3)
    with pytest.raises(ValueError, match="none of the evaluated classes"):
        task.score(torch.tensor([[2, 2]]), torch.tensor([[2, 7]]))


def test_dfc2020_keeps_its_ids_or_maps_to_the_authors_eight_classes():
    assert cromss.DFC2020_EVAL_IDS == (0, 1, 3, 4, 5, 6, 8, 9)  # all but savanna and snow / ice
    # simplified IGBP -> the authors' classes by name (write_data_to_lmdb.py), in their order (CLS_DICT[8])
    pairs = {DFC_CLASSES[i]: cromss.DFC2020_PAPER_CLASSES[c] for i, c in enumerate(cromss.DFC2020_TO_PAPER) if c >= 0}
    assert pairs == {"forest": "forest", "shrubland": "shrubland", "grassland": "grassland", "wetlands": "wetland",
                     "croplands": "cropland", "urban / built-up": "urban / built-up", "barren": "barren",
                     "water": "water"}
    assert cromss.DFC2020_PAPER_CLASSES[:2] == ("water", "forest")
    data = [{"label": torch.tensor([[0, 2, 9], [-1, 7, 8]])}]
    relabelled = cromss.Relabelled(data, cromss.DFC2020_TO_PAPER)
    assert relabelled[0]["label"].tolist() == [[1, -1, 0], [-1, -1, 7]]
    cfg = tiny_cfg(dfc2020_classes=8)
    setup = cromss.task_setup(cfg, "dfc2020")
    assert len(setup.classes) == 8 and setup.eval_classes == tuple(range(8))
    train, test = cromss.downstream_datasets(cfg, "dfc2020")
    labels = torch.cat([train[i]["label"].flatten() for i in range(len(train))])
    assert int(labels.max()) <= 7 and int(labels.min()) >= -1
    assert cromss.task_setup(tiny_cfg(), "dfc2020").eval_classes == cromss.DFC2020_EVAL_IDS


def test_task_setups_follow_the_paper_in_the_full_profile():
    full = cromss.CHAPTER.profile("full")
    dfc, dw, osm = (cromss.task_setup(full, key) for key in ("dfc2020", "dw", "osm"))
    assert (dfc.task.arch, dfc.batch_size, dfc.crop_size, dfc.encoder_depth, dfc.decoder_channels) == \
        ("pspnet", 32, 0, 3, 512)
    assert (dw.task.arch, dw.batch_size, dw.crop_size, dw.encoder_depth, len(dw.classes)) == \
        ("deeplabv3plus", 56, 496, 5, 9)
    assert (osm.task.arch, osm.batch_size, osm.crop_size, osm.encoder_depth, len(osm.classes)) == \
        ("fpn", 32, 480, 5, 13)
    assert (dfc.task.table, dw.task.table, osm.task.table) == ("Table II", "Table III", "Table IV")
    # the real tiles fit the networks without padding: 496 / 16, 480 / 32, 512 / 32, 256 / 8
    for arch, depth, side in (("deeplabv3plus", 5, 496), ("fpn", 5, 480), ("fpn", 5, 512), ("pspnet", 3, 256)):
        stride = build_segmentation_model(arch, 13, 9, "resnet18", depth, 16).encoder.output_stride
        assert side % stride == 0, (arch, side, stride)
    with pytest.raises(ValueError, match="task"):
        cromss.task_setup(full, "sen12ms")
    assert cromss.S2_9BAND_INDEX == (1, 2, 3, 4, 5, 6, 7, 11, 12)  # "9B": the authors' BANDS[9] of the 13 L1C bands


def test_noldo_tasks_read_the_sample_world_with_crops_and_unlabelled_pixels():
    cfg = tiny_cfg()
    for key, classes in (("dw", 9), ("osm", 13)):
        train, test = cromss.downstream_datasets(cfg, key)
        assert cromss.tile_size(test) == cromss.tile_size(train) + 2  # 510 / 512 px in the real data
        label = train[0]["label"]
        assert int(label.max()) < classes and (label == -1).any()
        line = cromss.split_summary(cfg, key, train, test)
        assert f"'{key}_train' {len(train)} tiles" in line and f"'{key}_test' {len(test)} tiles" in line
        assert f"random {cfg.dw_crop_size} px training crops" in line and "smoke" not in line
    smoke = tiny_cfg(smoke=True)
    train, test = cromss.downstream_datasets(smoke, "dfc2020")
    assert len(train) == len(test) == SMOKE_SAMPLES
    line = cromss.split_summary(smoke, "dfc2020", train, test)
    assert f"this smoke run keeps the first {SMOKE_SAMPLES}" in line and "whole training patches" in line
    pretrain = cromss.noisy_label_dataset(smoke)
    assert f"(this smoke run keeps the first {SMOKE_SAMPLES})" in cromss.pretraining_summary(smoke, pretrain)


def test_pretraining_uses_whole_tiles_smaller_than_the_crop(capsys):
    cfg = tiny_cfg(crop_size=64, smoke=True)  # the tiny sample world's SSL4EO-S12 tiles are 36 px
    pretraining = cromss.build_pretraining(cfg)
    assert pretraining.module.crop_size == 36
    assert "36 px are smaller than the 64 px crop" in capsys.readouterr().out
    assert cromss.build_pretraining(tiny_cfg(smoke=True)).module.crop_size == 32


def test_transfer_on_noldo_tiles_pads_and_crops():
    cfg = tiny_cfg(downstream_epochs=1, dw_batch_size=4, smoke=True)
    train, test = cromss.downstream_datasets(cfg, "dw")
    run = cromss.transfer_to_segmentation(None, train, test, cfg, task="dw", modality="s2", frozen=False, seed=0)
    assert run.model.segmentation_head[0].out_channels == 9
    assert 1 <= run.metrics["classes"] <= 9 and 0 <= run.metrics["mIoU"] <= 100
    assert run.result.steps == 2  # a smoke stage


def test_downstream_evaluation_rows_and_the_paper_table():
    cfg = tiny_cfg(s2_bands=9, downstream_epochs=1)
    data = segmentation_samples()
    pretrained = {"CromSS-midF": CromSS("middle", s2_band_index=cromss.S2_9BAND_INDEX, **TINY),
                  "single-modal": CromSS("single", s2_band_index=cromss.S2_9BAND_INDEX, **TINY)}
    rows, finetuned = cromss.downstream_evaluation(pretrained, data[:6], data[6:], cfg)
    keys = [(r["inputs"], r["weights"], r["encoder"]) for r in rows]
    assert keys == [(i, w, e) for i, ws in (("S2", ("random", "CromSS-midF", "single-modal")),
                                            ("S1", ("random", "CromSS-midF"))) for w in ws
                    for e in ("frozen", "fine-tuned")]
    assert all(r["mIoU_std"] >= 0 for r in rows) and any(r["mIoU_std"] > 0 for r in rows)  # two seeds
    assert all(r["runs"] == 2 and r["task"] == "dfc2020" and r["classes"] == 3 for r in rows)  # ids 0, 1, 3
    assert set(finetuned) == {"random", "CromSS-midF", "single-modal"}
    assert finetuned["random"].model.encoder.conv1.in_channels == 9
    drift = cromss.weight_drift(finetuned)
    assert all(d["encoder"] > 0 and d["decoder"] > 0 for d in drift.values())
    table = cromss.results_table(rows, cfg)
    first = table.iloc[0]  # S2 random frozen: the paper's 9-band row
    assert (first["OA paper"], first["mF1 paper"]) == (61.16, 44.76)
    assert pd.isna(table.iloc[4]["OA paper"])  # the paper has no 9-band single-modal row
    assert table.iloc[6]["OA paper"] == 53.89  # S1 random
    dw_table = cromss.results_table(rows, cfg, "dw")
    assert dw_table.iloc[0]["mIoU paper"] == 48.22 and dw_table.iloc[6]["mIoU paper"] == 29.85
    miou = cromss.miou_columns(rows)
    assert set(miou["random"]) == {"S2 frozen", "S2 fine-tuned", "S1 frozen", "S1 fine-tuned"}
    assert cromss.transfer_seeds(cfg) == [0, 1] and cromss.transfer_seeds(tiny_cfg(smoke=True)) == [0]


def test_transfer_resumes_from_its_checkpoint(tmp_path):
    cfg = tiny_cfg()
    data = segmentation_samples()
    first = cromss.transfer_to_segmentation(None, data[:6], data[6:], cfg, modality="s2", frozen=False, seed=0,
                                            checkpoint_dir=tmp_path)
    assert list(tmp_path.glob("ckpt-*.pt"))
    loaded = cromss.transfer_to_segmentation(None, data[:6], data[6:], cfg, modality="s2", frozen=False, seed=0,
                                             checkpoint_dir=tmp_path)  # finished: loaded, not trained again
    assert first.result.resumed_from is None and first.result.steps == 2 * 1  # 2 epochs of one batch of 4
    assert loaded.result.resumed_from == first.result.steps and loaded.metrics == first.metrics
    for k, v in first.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    capped = cromss.transfer_to_segmentation(None, data[:6], data[6:], tiny_cfg(dfc2020_batch_size=2,
                                             downstream_max_steps=1), modality="s2", frozen=False, seed=0)
    assert capped.result.steps == 2 * 1  # 2 epochs of at most one step (three batches of 2 without the cap)


def test_paper_rows_and_names():
    assert cromss.paper_row("S2", "CromSS-midF", "fine-tuned") == (70.41, 55.11, 43.21, 54.91)
    assert cromss.paper_row("S2", "CromSS-midF", "fine-tuned", s2_bands=9) == (69.00, 57.07, 42.17, 54.02)
    assert cromss.paper_row("S1", "random", "frozen", s2_bands=9) == (53.89, 40.65, 28.96, 38.74)
    assert cromss.paper_row("S2", "single-modal", "frozen") == (66.36, 52.52, 40.27, None)  # Table V: no mF1
    assert cromss.paper_row("S2", "single-modal", "frozen", s2_bands=9) == (None,) * 4
    # Table III (DW) and IV (OSM), Table V's DW / OSM columns
    assert cromss.paper_row("S2", "CromSS-lateF", "fine-tuned", task="dw") == (79.33, 73.46, 61.10, 73.33)
    assert cromss.paper_row("S1", "CromSS-midF", "frozen", task="dw") == (66.25, 54.29, 39.63, 52.17)
    assert cromss.paper_row("S2", "midF", "frozen", task="dw") == (78.82, 73.28, 60.91, None)
    assert cromss.paper_row("S2", "CromSS-midF", "fine-tuned", task="osm") == (86.04, 70.05, 50.11, 62.59)
    assert cromss.paper_row("S2", "random", "frozen", s2_bands=9, task="osm") == (70.89, 60.04, 28.35, 36.71)
    assert cromss.paper_row("S1", "single-modal", "fine-tuned", task="osm") == (78.30, 49.85, 36.20, None)
    for table in (cromss.PAPER_DFC2020, cromss.PAPER_DW, cromss.PAPER_OSM):
        assert len(table) == 30 and all(len(v) == 4 and 0 < v[0] < 100 for v in table.values())
    cfg = tiny_cfg()
    assert cromss.weights_name(cfg) == "CromSS-midF"
    assert cromss.weights_name(tiny_cfg(fusion="late", sample_selection=False)) == "lateF"
    assert cromss.weights_name(cromss.single_modal_config(cfg)) == "single-modal"
    assert cromss.single_modal_config(cfg).profile == "tiny"


def test_figure_helpers_fig11_fig8_fig13():
    torch.manual_seed(0)
    module = CromSS("middle", num_classes=3, **TINY)
    batch = {k: v[:, 0] for k, v in synthetic_batch(n=2, size=16).items()}  # one season
    masks = cromss.scene_selection_masks(module, batch, batch["dw"], alpha=0.5, gamma=1.0)
    with torch.no_grad():
        p = {m: module.predict(module.inputs(batch, m), m).softmax(1) for m in ("s1", "s2")}
    f_l = {m: label_confidence(p[m], batch["dw"]) for m in p}
    torch.testing.assert_close(masks["W_l from F"], label_selection_mask(f_l["s2"], batch["dw"], 0.5, 3))
    torch.testing.assert_close(masks["W_l from F'"], label_selection_mask(cross_modal_enhance(f_l["s2"], f_l["s1"]),
                                                                          batch["dw"], 0.5, 3))
    torch.testing.assert_close(masks["W_e from F"], entity_confidence(p["s2"]))  # gamma = 1: W_e = F_e
    assert (masks["W_e from F'"] <= masks["W_e from F"] + 1e-6).all()  # eq. 10 never raises a confidence
    same = cromss.batchnorm_statistics_kl(module, module)
    assert same == {"encoder": pytest.approx(0.0, abs=1e-9), "decoder": pytest.approx(0.0, abs=1e-9)}
    cfg = tiny_cfg()
    state = torch.random.get_rng_state()
    first, second = cromss.random_s2_encoder(cfg), cromss.random_s2_encoder(cfg)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded: the run's generator is left alone
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    curves = cromss.variance_curves({"random": first}, torch.rand(6, 13, 16, 16), "image", cfg)
    assert len(curves["random"]) == cfg.encoder_depth and all(c[-1] == pytest.approx(1.0) for c in curves["random"])


def test_fig13_features_are_computed_a_few_images_at_a_time_from_a_capped_set():
    encoder = CromSS("single", **TINY).encoder("s2")
    images = torch.rand(10, 13, 16, 16)
    samples = [{"s2": x} for x in images]
    for level in ("image", "pixel"):
        at_once = cromss.encoder_module_features(encoder, images, level, 4, seed=3, batch_size=16)
        streamed = cromss.encoder_module_features(encoder, samples, level, 4, seed=3, batch_size=3)
        assert [f.shape[0] for f in streamed] == [10 if level == "image" else 40] * 3
        for a, b in zip(at_once, streamed):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    cfg = tiny_cfg(pca_images=4)
    picked = cromss.pca_subset(list(range(10)), cfg)
    assert len(picked) == 4 and list(picked) == sorted(picked) and list(picked) == list(cromss.pca_subset(
        list(range(10)), cfg))  # a seeded choice, in order
    assert len(cromss.pca_subset(list(range(3)), cfg)) == 3
    data, line = cromss.dw_test_images(cfg)
    assert len(data) <= 4 and "SSL4EO-S12@DW test tiles" in line and set(data[0]) == {"s2", "label", "id"}
    data, line = cromss.eurosat_images(cfg)
    assert len(data) == 4 and "sample world's synthetic EuroSAT-MS" in line


# ---------------------------------------------------------------------------------------- profiles
def test_profiles_follow_the_paper_and_refuse_bad_values():
    full = cromss.CHAPTER.profile("full")
    assert (full.encoder, full.lr, full.batch_size, full.epochs, full.optimizer) == ("resnet50", 5e-3, 512, 200, "adam")
    assert (full.alpha_0, full.rampup_epochs, full.beta, full.mu, full.smoothing_sigma) == (0.5, 80, 0.05, 0.15, 3.0)
    assert (full.lr_schedule, full.plateau_patience, full.plateau_factor, full.crop_size) == ("plateau", 30, 0.5, 256)
    assert (full.downstream_epochs, full.downstream_lr, full.downstream_seeds, full.downstream_min_lr) == \
        (50, 5e-4, 3, 1e-5)
    assert (full.dfc2020_batch_size, full.dw_batch_size, full.osm_batch_size) == (32, 56, 32)
    assert (full.dw_crop_size, full.osm_crop_size, full.pspnet_encoder_depth, full.pspnet_channels) == \
        (496, 480, 3, 512)
    assert (full.transfer_tasks, full.frozen_bn_update, full.downstream_max_steps) == \
        (("dfc2020", "dw", "osm"), True, 0)
    assert isinstance(full, train.TrainConfig)  # the loop reads the profile itself
    assert full.decoder_channels == (256, 128, 64, 32, 16)
    assert cromss.CHAPTER.unexplained_deviations() == []
    fields = {row["field"] for row in cromss.CHAPTER.deviation_rows()}
    assert fields >= {"lr_schedule", "dfc2020_classes", "amp", "downstream_min_lr", "downstream_flip_prob"}
    table = cromss.CHAPTER.deviations_table()
    assert table.loc["dfc2020_classes", "paper"] == "8" and table.loc["dfc2020_classes", "full profile"] == "10"
    for field in ("downstream_epochs", "downstream_lr", "dw_crop_size", "osm_crop_size", "pspnet_encoder_depth",
                  "weight_decay", "frozen_bn_update", "transfer_tasks"):
        assert field in cromss.PAPER, field
    for field, value in [("fusion", "early"), ("alpha_0", 1.5), ("s2_bands", 10), ("decoder_channels", (8, 8)),
                         ("plateau_factor", 1.0), ("mu", -0.1), ("dfc2020_classes", 9), ("pspnet_encoder_depth", 4),
                         ("transfer_tasks", ("dfc2020", "sen12ms")), ("transfer_tasks", ("dw", "dw")),
                         ("downstream_rotate_prob", 1.5)]:
        with pytest.raises(ConfigError, match=field):
            cromss.CHAPTER.profile("tiny", **{field: value})
    with pytest.raises(ConfigError, match="beta, mu"):
        cromss.CHAPTER.profile("tiny", beta=0.6, mu=0.5)


def test_packed_batches_carry_the_drawn_season_only(tmp_path):
    """From a packed store, fit's native batches hold the images of one season per location (season_for's draw,
    given as ``season``) beside the masks of all four; normalised on the device they equal that season of the
    samples, and the step takes the season from the batch."""
    from eobook.data import SSL4EOS12, ensure_sample_world
    from eobook.data.pack import prepare
    from eobook.data.ssl4eo import season_for
    from eobook.train.loop import native_batches

    store = prepare("SSL4EOS12", ensure_sample_world("tiny", 0) / "SSL4EO-S12", tmp_path / "ssl.zarr")
    dataset = SSL4EOS12(store, modalities=("s1", "s2c"), seasons="all", dw_labels=True, seed=4, native_season="random")
    dataset.set_epoch(2)
    loaded, on_device = native_batches(dataset)
    indices = [3, 0, 7]
    batch = on_device(loaded.__getitems__(indices).collated)
    assert batch["s2"].shape[1] == 13 and batch["s2"].ndim == 4 and batch["dw"].ndim == 4
    for row, i in enumerate(indices):
        season = season_for(4, 2, i)
        assert int(batch["season"][row]) == season
        sample = dataset[i]  # samples read otherwise keep all four seasons
        assert torch.equal(batch["s2"][row], sample["s2"][season]) and torch.equal(batch["s1"][row], sample["s1"][season])
        assert torch.equal(batch["dw"][row], sample["dw"])
    module = CromSS("late", num_classes=9, **{**TINY, "crop_size": 36})
    module.flip_prob = module.rotate_prob = 0.0
    images, labels, _ = module.pick_season_and_augment(batch, GeneratorRandom(0))
    assert torch.equal(labels, batch["dw"][torch.arange(3), batch["season"]])
    with pytest.raises(ValueError, match="native_season"):
        SSL4EOS12(store, seasons="random", native_season="random")
