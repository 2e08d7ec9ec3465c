"""CromSS (chapter 5): the paper's equations on hand-computed values, the model and one training step."""
import math

import pandas as pd
import pytest
import torch

from eobook import train
from eobook.config import ConfigError
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


# ---------------------------------------------------------------------------------------- transfer
def tiny_cfg(**overrides):
    settings = dict(encoder_depth=3, decoder_channels=(8, 8, 8), downstream_decoder_channels=16,
                    downstream_classes=4, downstream_epochs=2, downstream_batch_size=4, downstream_seeds=2,
                    device="cpu")
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


def test_transfer_freezes_the_encoder_and_its_statistics_or_trains_it():
    cfg = tiny_cfg()
    data = segmentation_samples()
    state = CromSS("middle", **TINY).encoder("s2").state_dict()
    frozen = cromss.transfer_to_segmentation(state, data[:6], data[6:], cfg, modality="s2", frozen=True, seed=0)
    assert set(frozen.metrics) == {"OA", "AA", "mIoU", "mF1"}
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
    assert set(finetuned) == {"random", "CromSS-midF", "single-modal"}
    assert finetuned["random"].model.encoder.conv1.in_channels == 9
    drift = cromss.weight_drift(finetuned)
    assert all(d["encoder"] > 0 and d["decoder"] > 0 for d in drift.values())
    table = cromss.results_table(rows, cfg)
    first = table.iloc[0]  # S2 random frozen: the paper's 9-band row
    assert (first["OA paper"], first["mF1 paper"]) == (61.16, 44.76)
    assert pd.isna(table.iloc[4]["OA paper"])  # the paper has no 9-band single-modal row
    assert table.iloc[6]["OA paper"] == 53.89  # S1 random
    miou = cromss.miou_columns(rows)
    assert set(miou["random"]) == {"S2 frozen", "S2 fine-tuned", "S1 frozen", "S1 fine-tuned"}


def test_paper_rows_and_names():
    assert cromss.paper_row("S2", "CromSS-midF", "fine-tuned") == (70.41, 55.11, 43.21, 54.91)
    assert cromss.paper_row("S2", "CromSS-midF", "fine-tuned", s2_bands=9) == (69.00, 57.07, 42.17, 54.02)
    assert cromss.paper_row("S1", "random", "frozen", s2_bands=9) == (53.89, 40.65, 28.96, 38.74)
    assert cromss.paper_row("S2", "single-modal", "frozen") == (66.36, 52.52, 40.27, None)  # Table V: no mF1
    assert cromss.paper_row("S2", "single-modal", "frozen", s2_bands=9) == (None,) * 4
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


# ---------------------------------------------------------------------------------------- profiles
def test_profiles_follow_the_paper_and_refuse_bad_values():
    full = cromss.CHAPTER.profile("full")
    assert (full.encoder, full.lr, full.batch_size, full.epochs, full.optimizer) == ("resnet50", 5e-3, 512, 200, "adam")
    assert (full.alpha_0, full.rampup_epochs, full.beta, full.mu, full.smoothing_sigma) == (0.5, 80, 0.05, 0.15, 3.0)
    assert (full.lr_schedule, full.plateau_patience, full.plateau_factor, full.crop_size) == ("plateau", 30, 0.5, 256)
    assert (full.downstream_epochs, full.downstream_lr, full.downstream_batch_size, full.downstream_seeds) == \
        (50, 5e-4, 32, 3)
    assert isinstance(full, train.TrainConfig)  # the loop reads the profile itself
    assert full.decoder_channels == (256, 128, 64, 32, 16)
    assert cromss.CHAPTER.unexplained_deviations() == []
    assert {row["field"] for row in cromss.CHAPTER.deviation_rows()} >= {"lr_schedule", "downstream_classes"}
    for field, value in [("fusion", "early"), ("alpha_0", 1.5), ("s2_bands", 10), ("decoder_channels", (8, 8)),
                         ("plateau_factor", 1.0), ("mu", -0.1)]:
        with pytest.raises(ConfigError, match=field):
            cromss.CHAPTER.profile("tiny", **{field: value})
    with pytest.raises(ConfigError, match="beta, mu"):
        cromss.CHAPTER.profile("tiny", beta=0.6, mu=0.5)
