"""Tests of DINO-MM (Wang et al., 2022): RandomSensorDrop, multi-crop, DINO loss and centre, EMA, training, the
evaluation protocol (splits, augmented probe, supervised baseline, metric) and the paper's values."""
from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch

from eobook.config import ConfigError
from eobook.data import DataError, ensure_sample_world
from eobook.evaluate import Task, multilabel_map, seeded
from eobook.methods import dino_mm as D
from eobook.rng import GeneratorRandom
from eobook.runtime import DistInfo
from eobook.train import StepContext, fit

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_cfg(**overrides):
    return D.CHAPTER.profile("tiny", **overrides)


def make_ctx(step: int = 0, epoch: int = 0, total_steps: int = 10, seed: int = 0) -> StepContext:
    return StepContext(epoch, step, step, total_steps, total_steps, torch.device("cpu"),
                       torch.Generator().manual_seed(seed), None, DistInfo())


def fake_batch(n: int = 4, size: int = 40, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"s2": torch.rand(n, 12, size, size, generator=g), "s1": torch.randn(n, 2, size, size, generator=g)}


# --------------------------------------------------------------------------------------------------
# Input and RandomSensorDrop
# --------------------------------------------------------------------------------------------------
def test_stack_sensors_orders_s2_then_vh_vv_in_unit_range():
    s2 = torch.rand(2, 12, 8, 8)
    s1 = torch.stack([torch.full((2, 8, 8), -1.0), torch.full((2, 8, 8), 1.0)], dim=1)  # VV = -1, VH = +1 sigma
    x = D.stack_sensors(s2, s1)
    assert x.shape == (2, 14, 8, 8)
    assert torch.equal(x[:, :12], s2)
    assert torch.allclose(x[:, 12], torch.full((2, 8, 8), 0.75))  # VH first: (1 + 2) / 4
    assert torch.allclose(x[:, 13], torch.full((2, 8, 8), 0.25))  # VV: (-1 + 2) / 4
    with pytest.raises(ValueError, match="s1"):
        D.stack_sensors(s2, torch.zeros(2, 3, 8, 8))


def test_random_sensor_drop_frequencies_and_never_both():
    drop = D.RandomSensorDrop(p=0.5)
    x = torch.ones(20000, 14, 2, 2)
    out = drop(x, torch.Generator().manual_seed(0))
    s2_kept = out[:, :12].amax(dim=(1, 2, 3)) > 0
    s1_kept = out[:, 12:].amax(dim=(1, 2, 3)) > 0
    assert bool((s2_kept | s1_kept).all()), "a view lost both sensors"
    assert bool((out[:, :12].amin(dim=(1, 2, 3)) == out[:, :12].amax(dim=(1, 2, 3))).all()), "S2 dropped partly"
    both, s2_only, s1_only = [float(m.float().mean()) for m in (s2_kept & s1_kept, s2_kept & ~s1_kept, s1_kept & ~s2_kept)]
    assert abs(both - 0.5) < 0.02 and abs(s2_only - 0.25) < 0.02 and abs(s1_only - 0.25) < 0.02


def test_random_sensor_drop_always_drops_one_sensor_at_p_1_and_refuses_bad_shapes():
    drop = D.RandomSensorDrop(p=1.0)
    out = drop(torch.ones(1, 14, 4, 4), torch.Generator().manual_seed(1))[0]
    assert out.shape == (14, 4, 4)
    assert (out[:12].sum() == 0) != (out[12:].sum() == 0)
    with pytest.raises(ValueError, match="C=14"):
        drop(torch.ones(1, 13, 4, 4))


def test_select_sensors_zeroes_the_missing_sensor():
    x = torch.ones(3, 14, 4, 4)
    assert D.select_sensors(x, "S1")[:, :12].abs().sum() == 0 and D.select_sensors(x, "S1")[:, 12:].min() == 1
    assert D.select_sensors(x, "S2")[:, 12:].abs().sum() == 0 and D.select_sensors(x, "S2")[:, :12].min() == 1
    assert torch.equal(D.select_sensors(x, "S1+S2"), x)


# --------------------------------------------------------------------------------------------------
# Multi-crop
# --------------------------------------------------------------------------------------------------
def test_multicrop_shapes_ranges_and_determinism():
    aug = D.MultiCropAugmentation(global_size=32, local_size=16, n_local=3)
    x = torch.rand(5, 14, 40, 40)
    g, l, modes = aug(x, torch.Generator().manual_seed(3))
    assert g.shape == (10, 14, 32, 32) and l.shape == (15, 14, 16, 16) and modes.shape == (25,)
    assert float(g.min()) >= 0 and float(g.max()) <= 1
    g2, l2, _ = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(g, g2) and torch.equal(l, l2)
    g3, _, _ = aug(x, torch.Generator().manual_seed(4))
    assert not torch.equal(g, g3)


def test_multicrop_draws_are_the_same_split_over_two_ranks():
    """Two DDP ranks with half the batch each produce exactly the views one process makes of the whole batch."""
    aug = D.MultiCropAugmentation(global_size=16, local_size=8, n_local=2)
    x = torch.rand(4, 14, 24, 24)

    def views(rows, rank, world):
        ctx = StepContext(0, 0, 0, 1, 1, torch.device("cpu"), torch.Generator().manual_seed(7), None,
                          DistInfo(rank, world))
        return aug(x[rows], ctx)

    g, l, modes = views(slice(None), 0, 1)
    halves = [views(slice(2 * r, 2 * r + 2), r, 2) for r in range(2)]
    for v in range(2):  # global view v of samples 0-3 = rank 0's rows v*2:(v+1)*2, then rank 1's
        assert torch.allclose(g[4 * v:4 * v + 4], torch.cat([h[0][2 * v:2 * v + 2] for h in halves]), atol=1e-6)
    assert torch.allclose(l[4:8], torch.cat([h[1][2:4] for h in halves]), atol=1e-6)
    assert torch.equal(modes[:4], torch.cat([h[2][:2] for h in halves]))


def test_augmentation_strength_zero_leaves_crops_and_flips_only():
    """strength 0 = the same crops and flips with every photometric transform and the sensor drop off."""
    x = torch.rand(6, 14, 24, 24)
    plain = D.MultiCropAugmentation(global_size=16, local_size=8, n_local=2, sensor_drop_p=0.0, p_jitter=0.0,
                                    p_gray=0.0, p_blur=(0.0, 0.0, 0.0), p_solarize=0.0)
    paper = D.MultiCropAugmentation(global_size=16, local_size=8, n_local=2)
    off = paper(x, torch.Generator().manual_seed(1), strength=0.0)
    on = paper(x, torch.Generator().manual_seed(1))
    reference = plain(x, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(off, reference)) and int(off[2].max()) == 0
    assert not torch.equal(on[0], off[0]) and int(on[2].max()) > 0
    with pytest.raises(ValueError, match="strength"):
        paper(x, strength=1.5)


def test_augmentation_warmup_ramps_linearly_then_holds():
    module = D.DINOMM(tiny_cfg(augmentation_warmup_epochs=2))
    ctx = lambda step: StepContext(0, step, 0, 10, 100, torch.device("cpu"), torch.Generator(), None,  # noqa: E731
                                   DistInfo())
    assert [module.augmentation_strength(ctx(s)) for s in (0, 10, 20, 50)] == [0.0, 0.5, 1.0, 1.0]
    assert D.DINOMM(tiny_cfg()).augmentation_strength(ctx(0)) == 1.0  # the paper: full strength at once


# --------------------------------------------------------------------------------------------------
# Loss, centre, EMA
# --------------------------------------------------------------------------------------------------
def direct_dino_loss(student, teacher, center, tau_s, tau_t, n_crops):
    """The formula written out sample by sample and pair by pair."""
    b = teacher.shape[0] // 2
    terms = []
    for t in range(2):
        for v in range(n_crops):
            if v == t:
                continue
            for i in range(b):
                p_t = torch.exp((teacher[t * b + i] - center[0]) / tau_t)
                p_t = p_t / p_t.sum()
                p_s = torch.exp(student[v * b + i] / tau_s)
                p_s = p_s / p_s.sum()
                terms.append(-(p_t * torch.log(p_s)).sum())
    return torch.stack(terms).mean()


def test_dino_loss_matches_the_formula_and_centre_moves_to_batch_mean():
    g = torch.Generator().manual_seed(0)
    n_crops, b, k = 4, 3, 5
    student, teacher = torch.randn(n_crops * b, k, generator=g), torch.randn(2 * b, k, generator=g)
    loss_fn = D.DINOLoss(k, n_crops, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=4,
                         n_epochs=10, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, k, generator=g))
    center0 = loss_fn.center.clone()
    out = loss_fn(student, teacher, epoch=2)
    tau_t = 0.04 + 2 * (0.07 - 0.04) / 3  # linspace(0.04, 0.07, 4)[2]
    assert out["teacher_temp"].item() == pytest.approx(tau_t)
    assert out["loss"].item() == pytest.approx(direct_dino_loss(student, teacher, center0, 0.1, tau_t, n_crops).item(),
                                               rel=1e-5)
    mean = teacher.mean(0, keepdim=True)
    assert torch.allclose(loss_fn.center, 0.9 * center0 + 0.1 * mean, atol=1e-6)
    assert (loss_fn.center - mean).norm() < (center0 - mean).norm()
    assert loss_fn.teacher_temp(50) == pytest.approx(0.07)


def test_collapse_monitors_detect_a_constant_teacher():
    k = 6
    loss_fn = D.DINOLoss(k, 2, n_epochs=1, warmup_teacher_temp_epochs=0)
    constant = torch.randn(1, k).expand(8, k)
    loss_fn.center.copy_(constant[:1])
    out = loss_fn(torch.randn(8, k), constant, epoch=0)
    assert out["teacher_entropy"].item() == pytest.approx(np.log(k), rel=1e-5)  # uniform targets
    assert out["kl_to_center"].item() == pytest.approx(0.0, abs=1e-6)


def test_dino_head_is_weight_normalised_with_fixed_gain():
    head = D.DINOHead(16, 10, hidden_dim=32, bottleneck_dim=8)
    gain = head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad and torch.all(gain == 1)
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(10), atol=1e-5)
    assert head(torch.randn(3, 16)).shape == (3, 10)


def test_ema_update_of_the_teacher_is_exact():
    module = D.DINOMM(tiny_cfg())
    with torch.no_grad():
        for p in module.student.parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in module.teacher.named_parameters()}
    student = dict(module.student.named_parameters())
    ctx = make_ctx(step=3, total_steps=10)
    m = 1 - (1 - 0.996) * (1 + np.cos(np.pi * 3 / 10)) / 2
    module.on_step_end(ctx)
    for name, p in module.teacher.named_parameters():
        assert torch.allclose(p, m * before[name] + (1 - m) * student[name], atol=1e-6), name


def test_last_layer_frozen_in_first_epoch_only():
    module = D.DINOMM(tiny_cfg())
    module(fake_batch(), make_ctx())["loss"].backward()
    module.on_after_backward(make_ctx(epoch=0))
    assert module.student.head.last_layer.parametrizations.weight.original1.grad is None
    assert module.student.backbone.patch_embed.proj.weight.grad is not None
    module(fake_batch(), make_ctx())["loss"].backward()
    module.on_after_backward(make_ctx(epoch=1))
    assert module.student.head.last_layer.parametrizations.weight.original1.grad is not None
    assert all(p.grad is None for p in module.teacher.parameters())


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    module = D.DINOMM(tiny_cfg())
    batch = fake_batch(8)
    center = module.loss.center.clone()

    def loss_now():  # same views (same generator seed), same centre, same teacher
        module.loss.center.copy_(center)
        return module(batch, make_ctx(epoch=1, seed=5))["loss"]

    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    first = loss_now()
    for _ in range(5):
        opt.zero_grad()
        loss_now().backward()
        opt.step()
    assert loss_now().item() < first.item() - 1e-3


class FakeBEN(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {k: v[0] for k, v in fake_batch(1, 24, seed=i).items()}


def test_resume_equals_uninterrupted(tmp_path):
    cfg = tiny_cfg(epochs=2, batch_size=4, global_crop_size=16, local_crop_size=8, img_size=16,
                   eval_crop_size=16, out_dim=32)
    train = dataclasses.replace(cfg, log_every=100)

    def run(folder, stop=None):
        torch.manual_seed(0)
        module = D.DINOMM(cfg)
        fit(module, FakeBEN(), train, checkpoint_dir=folder, stop_after_steps=stop, log=lambda _: None)
        return module

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop=2)
    resumed = run(tmp_path / "b")
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name


def test_cls_attention_maps_are_distributions_over_patches():
    module = D.DINOMM(tiny_cfg())
    maps = D.cls_attention_maps(module.teacher.backbone, torch.rand(2, 14, 32, 32))
    assert maps.shape == (2, 4, 4, 4)
    assert torch.all(maps >= 0) and torch.all(maps.sum(dim=(2, 3)) <= 1 + 1e-5)


def test_results_table_layout():
    run = {"DINO-MM": {("100%", "S1"): 50.0}}
    table = D.results_table(run)
    assert list(table.index) == ["Random", "DINO-S1/2", "DINO-MM", "Supervised"]
    assert table.loc["DINO-MM", ("100%", "S1", "paper")] == 79.5
    assert table.loc["DINO-MM", ("100%", "S1", "this run")] == 50.0


def test_random_init_row_is_the_mean_over_seeded_backbones():
    cfg = tiny_cfg(random_init_seeds=2, label_fractions=(1.0,), probe_epochs=5)
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(48, D.N_CLASSES, generator=g) < 0.5).float()
    data = [{"s2": torch.rand(12, 32, 32, generator=g) * 0.5 + 0.5 * labels[i, :12, None, None],
             "s1": torch.rand(2, 32, 32, generator=g), "label": labels[i]} for i in range(48)]
    mean, per_seed = D.random_init_evaluation(data[:32], data[32:], cfg)
    assert len(per_seed) == 2 and per_seed[0] != per_seed[1]  # two different random ViTs
    for column, value in mean.items():
        assert value == pytest.approx((per_seed[0][column] + per_seed[1][column]) / 2)
    again = D.linear_evaluation(seeded(lambda: D.build_backbone(cfg), cfg.seed + 1), data[:32], data[32:], cfg)
    assert again == pytest.approx(per_seed[1])  # seed cfg.seed + i is the i-th row, reproducibly


# --------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------
def test_full_profile_is_the_paper():
    cfg = D.CHAPTER.profile("full")
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size) == (384, 12, 6, 8)
    assert (cfg.out_dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim) == (65536, 2048, 256)
    assert (cfg.global_crop_size, cfg.local_crop_size, cfg.n_local_crops) == (112, 48, 8)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.warmup_epochs) == (100, 256, 5e-4, 10)
    assert (cfg.student_temp, cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs) == \
        (0.1, 0.04, 0.07, 30)
    assert cfg.label_fractions == (1.0, 0.01) and cfg.probe_lr == 0.01 and cfg.probe_blocks == 4
    assert not cfg.probe_standardize and cfg.random_init_seeds == 1


@pytest.mark.parametrize("field, value", [("sensor_drop_p", 1.5), ("local_crop_scale", (0.5, 0.1)),
                                          ("global_crop_size", 30), ("label_fractions", (0.0,)),
                                          ("center_momentum", -0.1)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        tiny_cfg(**{field: value})


@pytest.mark.parametrize("field, value", [("split_scheme", "dino"), ("eval_split", "train"),
                                          ("map_average", "weighted")])
def test_protocol_choices_are_checked(field, value):
    with pytest.raises(ConfigError, match=f"{field}: expected one of"):
        tiny_cfg(**{field: value})


def test_standardised_features_need_the_cached_probe():
    with pytest.raises(ConfigError, match="probe_standardize.*probe_augment=False"):
        tiny_cfg(probe_augment=True)  # tiny standardises
    assert tiny_cfg(probe_augment=True, probe_standardize=False).probe_augment


# --------------------------------------------------------------------------------------------------
# The paper's values and the deviations of the full profile
# --------------------------------------------------------------------------------------------------
def test_full_profile_follows_the_authors_protocol():
    cfg = D.CHAPTER.profile("full")
    assert cfg.probe_augment and not cfg.probe_standardize and cfg.map_average == "micro"
    assert cfg.supervised_augment and (cfg.eval_train_samples, cfg.eval_test_samples) == (0, 0)
    assert cfg.norm_last_layer and cfg.betas == (0.9, 0.999)
    # the CPU profiles probe cached features of the evaluation view
    assert not D.CHAPTER.profile("tiny").probe_augment and not D.CHAPTER.profile("small").probe_augment


def test_deviations_table_names_every_departure_with_its_reason():
    rows = {r["field"]: r for r in D.CHAPTER.deviation_rows()}
    assert set(rows) == {"sensor_drop_p", "grad_clip", "amp", "split_scheme", "eval_split",
                         "supervised_weight_decay", "supervised_augment"}
    assert (rows["split_scheme"]["paper"], rows["split_scheme"]["full"]) == ("seco", "official")
    assert (rows["eval_split"]["paper"], rows["eval_split"]["full"]) == ("val", "test")
    assert (rows["amp"]["paper"], rows["amp"]["full"]) == ("off", "auto")
    assert rows["supervised_weight_decay"]["paper"] is None  # not stated: the book's choice, with its reason
    assert all(r["reason"] for r in rows.values()) and D.CHAPTER.unexplained_deviations() == []
    table = D.CHAPTER.deviations_table()
    assert table.loc["sensor_drop_p", "paper"] == "0.666667" and table.loc["supervised_augment", "paper"] == "-"
    # a field the paper fixes and full keeps is not a row
    assert "probe_augment" in D.PAPER and "probe_augment" not in rows


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    return ensure_sample_world(size="tiny", seed=0)


def test_split_scheme_reads_the_papers_lists(world, tmp_path):
    ben = tmp_path / "BigEarthNet-MM"
    shutil.copytree(world / "BigEarthNet-MM", ben)
    cfg = tiny_cfg(data_root=str(tmp_path), cache_data=False, split_scheme="seco")
    with pytest.raises(DataError, match="missing split file") as info:
        D.bigearthnet(cfg, "train")
    assert "bigearthnet-train.txt" in str(info.value)
    official = (ben / "train.csv").read_text().split()
    snow_cloud = set((ben / "patches_with_seasonal_snow.csv").read_text().split()) | \
        set((ben / "patches_with_cloud_and_shadow.csv").read_text().split())
    chosen = [n for n in official if n not in snow_cloud][:5] + sorted(snow_cloud)[:1]
    (ben / "bigearthnet-train.txt").write_text("\n".join(chosen) + "\n")
    seco = D.bigearthnet(cfg, "train")
    assert seco.patches == chosen[:5]  # the list's patches, without the snow / cloud ones
    assert len(D.bigearthnet(dataclasses.replace(cfg, split_scheme="official"), "train")) > 5


def test_eval_split_and_summary_lines(world):
    cfg = tiny_cfg(cache_data=False)
    train, test = D.eval_datasets(cfg)
    _, val = D.eval_datasets(dataclasses.replace(cfg, eval_split="val"))
    row = lambda ds: {int(name.rsplit("_", 1)[1]) // 1000 for name in ds.patches}  # noqa: E731  (the world's rows)
    assert (row(train), row(val), row(test)) == ({0}, {1}, {2})
    line = D.split_summary(cfg, "test", test)
    assert line.startswith("BigEarthNet-MM 'test' split (the official split lists") and f": {len(test)} patches" in line
    capped = D.eval_datasets(dataclasses.replace(cfg, eval_test_samples=3))[1]
    assert D.split_summary(cfg, "test", capped).endswith(f"{len(test)} patches, of which this run uses the first 3")
    smoke = dataclasses.replace(cfg, smoke=True)
    smoke_train = D.bigearthnet(smoke, "train")
    assert len(smoke_train) < len(train)
    assert D.split_summary(smoke, "train", smoke_train).endswith(
        f"{len(train)} patches, of which this run uses the first {len(smoke_train)} (smoke run)")


# --------------------------------------------------------------------------------------------------
# Evaluation protocol
# --------------------------------------------------------------------------------------------------
def labelled_patches(n: int = 48, size: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, D.N_CLASSES, generator=g) < 0.5).float()
    return [{"s2": torch.rand(12, size, size, generator=g) * 0.5 + 0.5 * labels[i, :12, None, None],
             "s1": torch.rand(2, size, size, generator=g), "label": labels[i]} for i in range(n)]


def test_probe_train_view_crops_flips_and_keeps_only_the_asked_sensor():
    batch = {k: v for k, v in fake_batch(6, 40).items()}
    views = D.probe_train_view(batch, "S1", 32, GeneratorRandom(0))
    assert views.shape == (6, 14, 32, 32) and float(views[:, :12].abs().max()) == 0.0
    assert float(views[:, 12:].min()) >= 0 and float(views[:, 12:].max()) <= 1
    assert torch.equal(views, D.probe_train_view(batch, "S1", 32, GeneratorRandom(0)))
    assert not torch.equal(views, D.probe_train_view(batch, "S1", 32, GeneratorRandom(1)))
    full = D.probe_train_view(batch, "S1+S2", 32, GeneratorRandom(0))
    center = D.eval_input(batch, "S1+S2", tiny_cfg())
    assert not torch.allclose(full, torch.nn.functional.interpolate(center, size=32))  # random, not the centre


def test_augmented_probe_trains_only_the_head_and_checkpoints_only_it(tmp_path):
    cfg = tiny_cfg(probe_augment=True, probe_standardize=False, probe_epochs=2, label_fractions=(1.0,))
    backbone = seeded(lambda: D.build_backbone(cfg), 0)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    data = labelled_patches()
    results = D.linear_evaluation(backbone, data[:32], data[32:], cfg, checkpoint_dir=tmp_path)
    assert set(results) == {("100%", s) for s in ("S1", "S2", "S1+S2")}
    assert all(0.0 <= v <= 100.0 for v in results.values())
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # frozen
    ckpt = next((tmp_path / "100%-S1").glob("ckpt-*.pt"))
    state = torch.load(ckpt, weights_only=True)["model"]
    assert sorted(state) == ["model.head.bias", "model.head.weight"]  # the backbone is not saved with each probe
    again = D.linear_evaluation(backbone, data[:32], data[32:], cfg)
    assert again == pytest.approx(results)  # seeded: the same probe, the same views


def test_probe_head_is_dinos_linear_classifier():
    head = D.probe_head(1536, D.N_CLASSES, seed=3)
    weight = head.weight.detach()
    assert weight.shape == (D.N_CLASSES, 1536) and torch.all(head.bias == 0)
    assert float(weight.std()) == pytest.approx(0.01, rel=0.05) and abs(float(weight.mean())) < 1e-3
    assert torch.equal(head.weight, D.probe_head(1536, D.N_CLASSES, seed=3).weight)


def test_frozen_probe_never_trains_the_backbone_nor_drops_paths():
    cfg = tiny_cfg(drop_path_rate=0.5)
    backbone = D.build_backbone(cfg, cfg.drop_path_rate)
    probe = D.FrozenProbe(backbone, 2, torch.nn.Linear(2 * cfg.embed_dim, D.N_CLASSES))
    assert [n for n, _ in probe.named_parameters()] == ["head.weight", "head.bias"]
    probe.train()
    x = torch.rand(3, 14, 32, 32)
    out = probe(x)
    assert torch.equal(out, probe(x))  # no stochastic depth in the frozen backbone
    out.sum().backward()
    assert all(p.grad is None for p in backbone.parameters()) and probe.head.weight.grad is not None


def test_map_average_picks_the_metric_of_the_cells():
    cfg = tiny_cfg(label_fractions=(1.0,), probe_epochs=3)
    backbone = seeded(lambda: D.build_backbone(cfg), 0)
    data = labelled_patches()
    micro = D.linear_evaluation(backbone, data[:32], data[32:], cfg)
    macro = D.linear_evaluation(backbone, data[:32], data[32:], dataclasses.replace(cfg, map_average="macro"))
    assert micro.keys() == macro.keys() and micro != macro
    assert D.map_key(cfg) == "mAP_micro"


def test_metric_survives_a_handful_of_test_patches_with_absent_classes():
    """A smoke run scores 8 patches (the real-data smoke: 1); classes without a positive must not crash."""
    scores, targets = torch.rand(1, D.N_CLASSES), torch.zeros(1, D.N_CLASSES)
    targets[0, [2, 5]] = 1
    result = Task("multilabel", D.N_CLASSES).score(torch.logit(scores), targets)
    assert result == pytest.approx(multilabel_map(scores, targets))
    assert 0 < result["mAP_micro"] <= 100 and 0 < result["mAP_macro"] <= 100


def test_supervised_baseline_trains_on_random_crops(monkeypatch):
    cfg = tiny_cfg(label_fractions=(1.0,), supervised_epochs=1)
    data = labelled_patches(24)
    seen = []
    original = D.evaluation.probe_train_view

    def spy(batch, sensors, size, rng):
        seen.append((sensors, size))
        return original(batch, sensors, size, rng)

    monkeypatch.setattr(D.evaluation, "probe_train_view", spy)
    results = D.supervised_evaluation(data[:16], data[16:], cfg)
    assert set(results) == {("100%", s) for s in ("S1", "S2", "S1+S2")}
    assert {s for s, _ in seen} == {"S1", "S2", "S1+S2"} and {n for _, n in seen} == {cfg.eval_crop_size}
    seen.clear()
    D.supervised_evaluation(data[:16], data[16:], dataclasses.replace(cfg, supervised_augment=False))
    assert seen == []


def test_evaluation_loaders_use_at_most_one_worker_per_core(monkeypatch):
    """The probes inherit the profile's workers (sized for a GPU node); the loop's loader caps them at the cores."""
    from eobook.train import loop

    monkeypatch.setattr(loop, "available_cpus", lambda: 2)
    full = D.CHAPTER.profile("full")
    probe = full.stage(epochs=1, batch_size=4)
    assert full.num_workers > 2 and probe.num_workers == full.num_workers
    loader = loop.make_loader(list(range(8)), loop.ResumableBatchSampler(8, 4, seed=0), probe.num_workers)
    assert loader.num_workers == 2
    assert loop.make_loader(list(range(8)), loop.ResumableBatchSampler(8, 4, seed=0), tiny_cfg().num_workers).num_workers == 0
