"""Tests of SoftCon (chapter 4): label similarity, the soft contrastive loss, the MoCo-v3-style module,
patch-embedding adaptation and loading of vision-foundation-model weights (random weights, no download),
the evaluation recipe and the profiles."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import timm
import torch
import torch.nn.functional as F

from eobook.config import ConfigError
from eobook.evaluate import seeded
from eobook.methods import softcon as sc
from eobook.nn import encode_visible
from eobook.rng import GeneratorRandom
from eobook.runtime import DistInfo
from eobook.train import StepContext, TrainConfig, fit

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ctx_for(step: int = 0, total: int = 10, seed: int = 0, rank: int = 0, world: int = 1) -> StepContext:
    return StepContext(0, step, step, total, total, torch.device("cpu"), torch.Generator().manual_seed(seed), None,
                       DistInfo(rank, world))


def tiny_cfg(**overrides) -> sc.SoftConConfig:
    return sc.CHAPTER.profile("tiny", **overrides)


def tiny_module(mask_ratio: float = 0.5, lam: float = 0.5, seed: int = 0) -> sc.SoftCon:
    torch.manual_seed(seed)
    backbone = sc.Backbone("vit", in_chans=13, img_size=16, patch_size=4, vit_dim=32, vit_depth=1, vit_heads=2)
    return sc.SoftCon(backbone, proj_hidden=32, proj_dim=16, pred_hidden=32, lam=lam, mask_ratio=mask_ratio,
                      img_size=16, momentum=0.9)


def fake_batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, 9, generator=g) < 0.3).float()
    labels[:, 0] = labels[:, 0].clamp_min((labels.sum(1) == 0).float())  # every scene labelled
    return {"s2": torch.rand(n, 13, 20, 20, generator=g), "multilabel": labels}


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------
def test_label_similarity_hand_values():
    y = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]])
    s = sc.label_similarity(y, y)
    assert s.shape == (4, 4)
    assert s[0, 1] == pytest.approx(1.0)                      # identical label sets
    assert s[0, 2] == pytest.approx(0.0)                      # disjoint
    assert s[0, 3] == pytest.approx(1 / math.sqrt(2))         # {a, b} vs {a}: 1 / sqrt(2 * 1)
    fractions = torch.tensor([[0.6, 0.4, 0.0]]), torch.tensor([[0.3, 0.2, 0.5]])
    expected = (0.6 * 0.3 + 0.4 * 0.2) / (math.hypot(0.6, 0.4) * math.sqrt(0.3**2 + 0.2**2 + 0.5**2))
    assert sc.label_similarity(*fractions)[0, 0] == pytest.approx(expected)


def test_label_similarity_single_label_is_binary():
    classes = torch.tensor([0, 2, 2, 1, 0])
    s = sc.label_similarity(F.one_hot(classes, 3).float(), F.one_hot(classes, 3).float())
    assert torch.equal(s, (classes[:, None] == classes[None, :]).float())


def test_label_similarity_refuses_or_excludes_empty_rows():
    y = torch.tensor([[1.0, 0], [0, 0]])
    with pytest.raises(ValueError, match="y2: rows \\[1\\]"):
        sc.label_similarity(y[:1], y)
    s = sc.label_similarity(y, y, allow_empty=True)
    assert torch.equal(s, torch.tensor([[1.0, 0], [0, 0]]))
    with pytest.raises(ValueError, match="y1: expected finite non-negative"):
        sc.label_similarity(-y, y, allow_empty=True)


def test_build_multilabels_from_dw_threshold_and_nodata():
    dw = torch.full((10, 10), 1)
    dw[0, :4] = 0        # 4 of 90 labelled pixels (4.4%): below 5%
    dw[1:3, :] = 2       # 20 of 90
    dw[9, :] = -1        # no data: not counted
    labels = sc.build_multilabels_from_dw(dw, threshold=0.05)
    assert labels.tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert sc.build_multilabels_from_dw(torch.full((2, 4, 4), -1)).sum() == 0
    with pytest.raises(ValueError, match="threshold"):
        sc.build_multilabels_from_dw(dw, threshold=0.0)
    with pytest.raises(ValueError, match="dw: class ids"):
        sc.build_multilabels_from_dw(torch.full((4, 4), 9))


def test_multilabels_json_matches_the_sample_world(tmp_path):
    """Rebuilding SSL4EO-S12-ML from the sample world's Dynamic World masks gives its json."""
    from eobook.data import SSL4EOS12, ensure_sample_world

    root = ensure_sample_world("tiny", 0) / "SSL4EO-S12"
    ds = SSL4EOS12(root, modalities=("s1",), seasons="all", dw_labels=True)
    ids = ds.ids[:3]
    labels = sc.build_multilabels_from_dw(torch.stack([ds[i]["dw"] for i in range(3)]))  # [3, T, 9]
    written = json.loads(sc.write_multilabels_json(tmp_path / "ml.json", ids, labels).read_text())
    official = json.loads((root / "ssl4eo_s12_ml.json").read_text())
    assert written == {k: official[k] for k in ids}


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------
def test_soft_cross_entropy_is_minimal_where_softmax_matches_targets():
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(5, 7, generator=g) + 0.1
    p = targets / targets.sum(1, keepdim=True)
    best = p.log().requires_grad_()
    loss = sc.soft_target_cross_entropy(best, targets)
    loss.backward()
    entropy = -(p * p.log()).sum(1).mean()
    assert loss.item() == pytest.approx(entropy.item(), rel=1e-5)
    assert best.grad.abs().max() < 1e-6
    for _ in range(20):
        other = best.detach() + 0.3 * torch.randn(5, 7, generator=g)
        assert sc.soft_target_cross_entropy(other, targets) > loss


def test_soft_contrastive_loss_equals_its_formula():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(4, 6, generator=g), torch.randn(5, 6, generator=g)
    y1, y2 = (torch.rand(4, 3, generator=g) < 0.6).float() + 0.0, (torch.rand(5, 3, generator=g) < 0.6).float()
    y1[:, 0], y2[:, 0] = 1, 1
    tau = 0.3
    total = 0.0
    for i in range(4):  # L = mean_i -sum_j s_ij / sum_k s_ik * log(exp(c_ij/tau) / sum_k exp(c_ik/tau))
        c = [float(F.cosine_similarity(z1[i], z2[j], dim=0)) / tau for j in range(5)]
        s = [float(y1[i] @ y2[j]) / float(y1[i].norm() * y2[j].norm()) for j in range(5)]
        log_z = math.log(sum(math.exp(v) for v in c))
        total += -sum(s[j] / sum(s) * (c[j] - log_z) for j in range(5))
    assert sc.soft_contrastive_loss(z1, z2, y1, y2, tau).item() == pytest.approx(total / 4, rel=1e-5)


def test_soft_contrastive_with_one_hot_labels_is_supervised_contrastive():
    g = torch.Generator().manual_seed(2)
    classes = torch.tensor([0, 1, 0, 2, 1, 0])
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    y = F.one_hot(classes, 3).float()
    tau = 0.1
    logits = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / tau
    log_prob = logits.log_softmax(1)
    positives = (classes[:, None] == classes[None, :]).float()
    supcon = -((positives * log_prob).sum(1) / positives.sum(1)).mean()  # Khosla et al. (2020), L_out
    assert sc.soft_contrastive_loss(z1, z2, y, y, tau).item() == pytest.approx(supcon.item(), rel=1e-5)


def test_softcon_loss_is_the_lambda_mixture_and_one_soft_cross_entropy():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    y = (torch.rand(6, 9, generator=g) < 0.4).float()
    y[:, 4] = 1
    out = sc.softcon_loss(z1, z2, y, y, 0.2, lam=0.3)
    assert out["loss"].item() == pytest.approx(0.3 * out["nce"].item() + 0.7 * out["soft"].item(), rel=1e-6)
    assert out["nce"].item() == pytest.approx(F.cross_entropy(sc.embedding_logits(z1, z2, 0.2), torch.arange(6)).item())
    s = sc.label_similarity(y, y)
    mixed = 0.3 * torch.eye(6) + 0.7 * s / s.sum(1, keepdim=True)
    assert out["loss"].item() == pytest.approx(sc.soft_target_cross_entropy(sc.embedding_logits(z1, z2, 0.2), mixed).item(), rel=1e-5)
    assert sc.softcon_loss(z1, z2, y, y, 0.2, lam=1.0)["loss"].item() == pytest.approx(out["nce"].item())
    with pytest.raises(ValueError, match="lam"):
        sc.softcon_loss(z1, z2, y, y, 0.2, lam=1.5)


def test_info_nce_offset_points_at_the_local_keys():
    g = torch.Generator().manual_seed(4)
    keys = torch.randn(8, 5, generator=g)
    anchors = keys[4:] + 0.01 * torch.randn(4, 5, generator=g)
    assert sc.info_nce(anchors, keys, 0.1, offset=4) < sc.info_nce(anchors, keys, 0.1, offset=0)


def test_unlabelled_scenes_are_left_out_of_the_soft_term():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    y = torch.tensor([[1.0, 0], [0, 1], [1, 1]])
    base = sc.soft_contrastive_loss(z1, z2, y, y, 0.2)
    z2_more = torch.cat([z2, torch.randn(2, 4, generator=g)])
    y_more = torch.cat([y, torch.zeros(2, 2)])
    assert sc.soft_contrastive_loss(z1, z2_more, y, y_more, 0.2, allow_empty=True).item() == pytest.approx(base.item())
    z1_more = torch.cat([z1, torch.randn(1, 4, generator=g)])
    assert sc.soft_contrastive_loss(z1_more, z2, torch.cat([y, torch.zeros(1, 2)]), y, 0.2,
                                    allow_empty=True).item() == pytest.approx(base.item(), rel=1e-6)


def test_gather_without_process_group_is_identity():
    x = torch.randn(3, 2)
    gathered, offset = sc.gather_with_grad(x)
    assert gathered is x and offset == 0


# --------------------------------------------------------------------------------------------------
# Continual pretraining: patch embedding and foundation weights
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_chans", [13, 2])
def test_adapt_patch_embed_keeps_the_response_to_grey(in_chans):
    g = torch.Generator().manual_seed(6)
    w_rgb = torch.randn(16, 3, 4, 4, generator=g)
    w = sc.adapt_patch_embed(w_rgb, in_chans)
    assert w.shape == (16, in_chans, 4, 4)
    grey = torch.rand(2, 1, 8, 8, generator=g)
    rgb_response = F.conv2d(grey.expand(-1, 3, -1, -1), w_rgb, stride=4)
    assert torch.allclose(F.conv2d(grey.expand(-1, in_chans, -1, -1), w, stride=4), rgb_response, atol=1e-5)
    with pytest.raises(ValueError, match="weight_rgb"):
        sc.adapt_patch_embed(torch.randn(16, 4, 4, 4), in_chans)


@pytest.mark.slow
def test_load_dinov2_weights_from_a_local_file(tmp_path):
    rgb = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)  # 518 px, 37x37 grid
    torch.save(rgb.state_dict(), tmp_path / "dinov2_vits14.pth")
    backbone = sc.Backbone("vit_small_patch14_dinov2", in_chans=13, img_size=56)
    report = sc.load_foundation_weights(backbone, str(tmp_path / "dinov2_vits14.pth"))
    assert set(report["adapted"]) == {"patch_embed.proj.weight", "pos_embed"}
    state = backbone.net.state_dict()
    assert torch.equal(state["blocks.3.attn.qkv.weight"], rgb.state_dict()["blocks.3.attn.qkv.weight"])
    assert torch.equal(state["patch_embed.proj.weight"], sc.adapt_patch_embed(rgb.patch_embed.proj.weight.detach(), 13))
    assert state["pos_embed"].shape == (1, 1 + 4 * 4, 384)
    assert backbone(torch.rand(2, 13, 56, 56)).shape == (2, 384)


@pytest.mark.slow
def test_load_resnet50_weights_wrapped_in_a_checkpoint(tmp_path):
    rgb = timm.create_model("resnet50", pretrained=False)
    torch.save({"state_dict": rgb.state_dict()}, tmp_path / "rn50.pth")
    backbone = sc.Backbone("resnet50", in_chans=2, img_size=64)
    report = sc.load_foundation_weights(backbone, str(tmp_path / "rn50.pth"))
    assert report["adapted"] == ["conv1.weight"] and set(report["skipped"]) == {"fc.weight", "fc.bias"}
    assert torch.equal(backbone.net.layer4[0].conv1.weight, rgb.layer4[0].conv1.weight)
    with pytest.raises(ValueError, match="do not fit 'vit'"):
        sc.load_foundation_weights(sc.Backbone("vit", 2, 16, 4, 32, 1, 2), str(tmp_path / "rn50.pth"))


def test_load_rgb_weights_into_a_multispectral_custom_vit(tmp_path):
    def vit(in_chans: int, img_size: int) -> sc.Backbone:
        return sc.Backbone("vit", in_chans=in_chans, img_size=img_size, patch_size=8, vit_dim=32, vit_depth=1, vit_heads=2)

    rgb = vit(3, 32)
    torch.save({"model": rgb.net.state_dict()}, tmp_path / "rgb.pth")
    ms = vit(13, 16)  # other grid: the positional embedding is resampled
    assert sc.load_foundation_weights(ms, str(tmp_path / "rgb.pth"))["adapted"] == ["patch_embed.proj.weight", "pos_embed"]
    assert ms.net.pos_embed.shape == (1, 1 + 2 * 2, 32)
    same_grid = vit(13, 32)
    sc.load_foundation_weights(same_grid, str(tmp_path / "rgb.pth"))
    grey = torch.rand(2, 1, 32, 32)  # a grey scene gives the RGB model's features
    assert torch.allclose(same_grid(grey.expand(-1, 13, -1, -1)), rgb(grey.expand(-1, 3, -1, -1)), atol=1e-4)


def test_label_order_groups_equal_label_sets():
    y = torch.tensor([[0.0, 1], [1, 0], [0, 1], [1, 1]])
    assert sc.label_order(y).tolist() == [3, 1, 0, 2]


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        sc.load_foundation_weights(sc.Backbone("vit", 2, 16, 4, 32, 1, 2), str(tmp_path / "nope.pth"))


# --------------------------------------------------------------------------------------------------
# The framework
# --------------------------------------------------------------------------------------------------
def test_ema_update_of_the_momentum_branch_is_exact():
    module = tiny_module()
    with torch.no_grad():
        for p in module.base.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in module.momentum_branch.state_dict().items()}
    base = {k: v.clone() for k, v in module.base.state_dict().items()}
    ctx = ctx_for(step=3, total=10)
    m = module.momentum_at(ctx)
    assert m == pytest.approx(1 - 0.1 * (math.cos(math.pi * 0.3) + 1) / 2)
    module.on_step_end(ctx)
    for name, p in module.momentum_branch.named_parameters():
        assert torch.allclose(p, m * before[name] + (1 - m) * base[name], atol=1e-7)
    assert module.momentum_at(ctx_for(0, 10)) == pytest.approx(0.9)
    assert module.momentum_at(ctx_for(10, 10)) == pytest.approx(1.0)
    assert not any(p.requires_grad for p in module.momentum_branch.parameters())


def test_siamese_masking_encodes_only_visible_patches():
    module = tiny_module(mask_ratio=0.75)
    keep = module.keep_indices(3, GeneratorRandom(0))
    assert keep.shape == (3, 4)  # 16 patches, 25% visible
    assert bool((keep[:, 1:] > keep[:, :-1]).all()) and len(set(map(tuple, keep.tolist()))) > 1  # sorted, per sample
    tokens = encode_visible(module.encoder.net, torch.rand(3, 13, 16, 16), keep)
    assert tokens.shape == (3, 1 + 4, 32)
    assert tiny_module(mask_ratio=0.0).keep_indices(3, GeneratorRandom(0)) is None
    with pytest.raises(ValueError, match="mask_ratio"):
        sc.SoftCon(sc.Backbone("resnet50", 2, 32), mask_ratio=0.5)


def test_views_are_deterministic_given_the_generator():
    module = tiny_module()
    x = torch.rand(4, 13, 20, 20)
    a = module.views(x, GeneratorRandom(1))
    b = module.views(x, torch.Generator().manual_seed(1))  # a generator is wrapped as the same source
    assert a[0].shape == (4, 13, 16, 16) and torch.equal(a[0], b[0]) and not torch.equal(a[0], a[1])


def test_whole_image_views_are_flipped_both_ways_and_jittered_as_one_spectrum():
    """With crop scale 1 a view is the image, mirrored left-right and/or up-down; the jitter is one affine map
    ``a x + d`` for all bands of a sample (contrast about the all-band mean, then brightness), unclamped."""
    module = tiny_module()
    module.crop_scale, module.jitter = (1.0, 1.0), 0.0
    x = torch.rand(64, 13, 16, 16)
    seen = set()
    for view in module.views(x, GeneratorRandom(0)):
        for v, image in zip(view, x):
            flips = [dims for dims in ((), (-1,), (-2,), (-1, -2)) if torch.allclose(v, image.flip(dims), atol=1e-5)]
            assert len(flips) == 1
            seen.add(flips[0])
    assert len(seen) == 4
    plain = module.views(x, GeneratorRandom(1))[0]      # the same draws: only the jitter's strength differs
    module.jitter = 0.4
    v1 = module.views(x, GeneratorRandom(1))[0]
    for u, v in zip(plain, v1):
        design = torch.stack([u.flatten(), torch.ones(u.numel())], dim=1).double()  # fit v = a u + d per sample
        coefficients = torch.linalg.lstsq(design, v.flatten().double()[:, None]).solution
        assert torch.allclose((design @ coefficients)[:, 0], v.flatten().double(), atol=1e-4)
    assert not torch.allclose(plain, v1)
    assert float(v1.max()) > 1.0 or float(v1.min()) < 0.0  # not clamped to [0, 1]


def test_views_and_masks_are_the_same_split_over_two_ranks():
    """Two DDP ranks with half the batch each draw exactly the views and Siamese masks of one process."""
    module = tiny_module()
    x = torch.rand(4, 13, 20, 20)

    def draws(rows: slice, rank: int, world: int):
        ctx = ctx_for(seed=5, rank=rank, world=world)
        return (*module.views(x[rows], ctx), module.keep_indices(len(x[rows]), ctx))

    whole = draws(slice(None), 0, 1)
    halves = [draws(slice(2 * r, 2 * r + 2), r, 2) for r in range(2)]
    for i, drawn in enumerate(whole):
        assert torch.allclose(drawn, torch.cat([h[i] for h in halves]), atol=1e-6)


def test_model_input_inserts_b10_for_bigearthnet():
    s2 = torch.rand(2, 12, 4, 4)
    x = sc.model_input({"s2": s2}, "s2c")
    assert x.shape == (2, 13, 4, 4) and torch.all(x[:, 10] == 0.5)
    assert torch.equal(x[:, :10], s2[:, :10]) and torch.equal(x[:, 11:], s2[:, 10:])
    with pytest.raises(ValueError, match="12 or 13 bands"):
        sc.model_input({"s2": torch.rand(1, 4, 2, 2)}, "s2c")


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    module, batch = tiny_module(), fake_batch()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=3e-3)

    def loss_at_fixed_views() -> float:
        with torch.no_grad():
            return module(batch, ctx_for(seed=123))["loss"].item()

    before = loss_at_fixed_views()
    for step in range(8):
        ctx = ctx_for(step=step, total=8, seed=123)
        loss = module(batch, ctx)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        module.on_step_end(ctx)
    assert loss_at_fixed_views() < before


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    data = [{k: v[i] for k, v in fake_batch(16, seed=7).items()} for i in range(16)]
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, progress="off", device="cpu", log_every=0)
    whole = tiny_module()
    fit(whole, data, cfg, checkpoint_dir=tmp_path / "a", log=lambda _: None)
    part = tiny_module()
    fit(part, data, cfg, checkpoint_dir=tmp_path / "b", stop_after_steps=3, checkpoint_meta={"x": 1}, log=lambda _: None)
    resumed = tiny_module(seed=1)  # other init: everything must come from the checkpoint
    fit(resumed, data, dataclasses.replace(cfg, checkpoint_every=0), checkpoint_dir=tmp_path / "b",
        checkpoint_meta={"x": 1}, log=lambda _: None)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------
def test_profiles_validate_and_name_the_field():
    full = sc.CHAPTER.profile("full")
    assert (full.arch, full.img_size, full.modality, full.probe_fraction) == ("vit_small_patch14_dinov2", 224, "s2c", 0.1)
    assert full.profile == "full" and tiny_cfg().weights == "" and tiny_cfg(lam=1.0).profile == "tiny"
    for bad, field in (({"lam": 1.5}, "lam"), ({"mask_ratio": 1.0}, "mask_ratio"),
                       ({"arch": "resnet50"}, "mask_ratio"), ({"ablation_lambdas": (0.5, 2.0)}, "ablation_lambdas"),
                       ({"modality": "s2a"}, "modality"), ({"img_size": 100}, "img_size"),
                       ({"crop_scale": (0.5, 0.2)}, "crop_scale"), ({"probe_fraction": 0.0}, "probe_fraction")):
        with pytest.raises(ConfigError, match=field):
            sc.CHAPTER.profile("full", **bad)
    assert sc.CHAPTER.profile("full", arch="resnet50", mask_ratio=0).arch == "resnet50"


def test_paper_values_and_deviations_are_complete():
    """Every departure of ``full`` from the published values has a reason; the probe keeps standardising its
    features in every profile (as before the move), which the paper does not."""
    assert sc.CHAPTER.unexplained_deviations() == []
    rows = {row["field"]: row for row in sc.CHAPTER.deviation_rows()}
    assert rows["probe_standardize"]["paper"] is False and rows["probe_standardize"]["full"] is True
    assert "img_size" not in rows and "probe_fraction" not in rows  # the full profile has the paper's values
    assert all(cfg.probe_standardize for cfg in sc.PROFILES.values())
    assert rows["lam"]["paper"] is None and rows["lam"]["reason"]  # a book choice, stated


def _ddp_worker(rank: int, world: int, init_file: str, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    y = (torch.rand(8, 4, generator=g) < 0.5).float()
    y[:, 0] = 1
    local = slice(4 * rank, 4 * rank + 4)
    q_local = q[local].clone().requires_grad_()
    k_all, offset = sc.gather_with_grad(k[local])
    y_all, _ = sc.gather_with_grad(y[local])
    out = sc.softcon_loss(q_local, k_all, y[local], y_all, 0.2, lam=0.5, offset=offset)
    out["loss"].backward()
    queue.put((rank, float(out["loss"]), q_local.grad.tolist()))  # plain data: the worker exits
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_keys_gathered_over_two_ranks_give_the_single_process_loss(tmp_path):
    """Two gloo ranks, each with half the anchors and the keys of all ranks, reproduce one process's loss
    (mean over ranks) and its gradients."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, str(tmp_path / "init"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (loss, grad)) for r, loss, grad in (queue.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    y = (torch.rand(8, 4, generator=g) < 0.5).float()
    y[:, 0] = 1
    q.requires_grad_()
    single = sc.softcon_loss(q, k, y, y, 0.2, lam=0.5)["loss"]
    single.backward()
    assert (results[0][0] + results[1][0]) / 2 == pytest.approx(float(single.detach()), rel=1e-5)
    assert torch.allclose(torch.tensor(results[0][1] + results[1][1]) / 2, q.grad, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The lambda mixture, the continual-pretraining check, the module of a profile
# --------------------------------------------------------------------------------------------------
def test_mixed_target_gives_the_softcon_loss_as_one_cross_entropy():
    g = torch.Generator().manual_seed(8)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    y = (torch.rand(6, 9, generator=g) < 0.4).float()
    y[:, 2] = 1
    s = sc.label_similarity(y, y)
    target = sc.mixed_target(s, 0.3)
    assert torch.allclose(target.sum(1), torch.ones(6))
    assert torch.allclose(target, 0.3 * torch.eye(6) + 0.7 * s / s.sum(1, keepdim=True))
    one = sc.soft_target_cross_entropy(sc.embedding_logits(z1, z2, 0.2), target)
    assert one.item() == pytest.approx(sc.softcon_loss(z1, z2, y, y, 0.2, lam=0.3)["loss"].item(), rel=1e-5)
    assert torch.equal(sc.mixed_target(s, 1.0), torch.eye(6))
    with pytest.raises(ValueError, match="lam"):
        sc.mixed_target(s, -0.1)
    with pytest.raises(ValueError, match="square"):
        sc.mixed_target(s[:3], 0.5)


def test_grey_scene_check_loads_rgb_weights_that_answer_grey_like_the_rgb_model():
    report, gap = sc.grey_scene_check(tiny_cfg())
    assert report["adapted"] == ["patch_embed.proj.weight"] and gap < 1e-4
    assert sc.grey_scene_check(tiny_cfg(modality="s1"))[1] < 1e-4


def test_build_pretraining_starts_every_run_from_the_seeded_network():
    """The pretraining module is built seeded (whatever ran before), so the lambda ablation starts from the
    main run's network and the random-init row's first backbone is that network's encoder."""
    cfg = tiny_cfg()
    torch.manual_seed(123)
    first = sc.build_pretraining(cfg)
    torch.rand(10)
    second = sc.build_pretraining(dataclasses.replace(cfg, lam=1.0))
    for (name, a), b in zip(first.module.state_dict().items(), second.module.state_dict().values()):
        assert torch.equal(a, b), name
    random_row = seeded(lambda: sc.create_backbone(cfg), cfg.seed)
    assert all(torch.equal(a, b) for a, b in zip(random_row.state_dict().values(),
                                                   first.module.encoder.state_dict().values()))
    assert first.meta == {"arch": "vit", "in_chans": 13, "embed_dim": 64, "img_size": 32, "proj_dim": 32,
                          "proj_hidden": 128}
    assert "multilabel" in first.dataset[0] and first.module.input_key == "s2"


# --------------------------------------------------------------------------------------------------
# Evaluation recipe
# --------------------------------------------------------------------------------------------------
def test_probes_and_fine_tuning_follow_the_protocol(monkeypatch, tmp_path):
    """The probe: SGD momentum 0.9, no weight decay, lr and epochs of the profile, standardised features,
    19-class multi-label on BigEarthNet then 10-class EuroSAT; fine-tuning: AdamW, weight decay 0.05, on the
    label fraction; each stage in its own checkpoint folder."""
    from eobook.methods.softcon import evaluation as ev

    calls = []

    def fake_probe(train_x, train_y, test_x, test_y, task, loop, *, standardize_features, checkpoint_dir):
        calls.append(("probe", task, loop, standardize_features, checkpoint_dir, train_x.shape, test_x.shape))
        return {"mAP_macro": 50.0, "OA": 60.0}

    def fake_fine_tune(model, train_set, test_set, predict, task, loop, *, checkpoint_dir):
        batch = torch.utils.data.default_collate([train_set[0], train_set[1]])
        calls.append(("fine-tune", task, loop, len(train_set), checkpoint_dir, predict(model, batch).shape))
        return {"mAP_macro": 70.0}, None

    monkeypatch.setattr(ev, "linear_probe", fake_probe)
    monkeypatch.setattr(ev, "fine_tune", fake_fine_tune)
    cfg = tiny_cfg(probe_fraction=0.5)
    scores = sc.evaluate_backbone(sc.create_backbone(cfg), cfg, "cpu", tmp_path)
    assert scores == {"ben_mAP": 50.0, "eurosat_OA": 60.0, "ben_ft_mAP": 70.0}
    (_, ben, loop, std, folder, train_shape, _), (_, euro, _, _, euro_folder, _, _), ft = calls
    assert (ben.kind, ben.num_classes, euro.kind, euro.num_classes) == ("multilabel", 19, "multiclass", 10)
    assert (loop.optimizer, loop.momentum, loop.weight_decay, loop.lr, loop.epochs, loop.batch_size) == \
        ("sgd", 0.9, 0.0, cfg.probe_lr, cfg.probe_epochs, cfg.probe_batch_size)
    assert std is True and train_shape[1] == cfg.vit_dim
    assert (folder, euro_folder) == (tmp_path / "bigearthnet-probe", tmp_path / "eurosat-probe")
    train, _ = sc.bigearthnet_splits(cfg)
    _, task, ft_loop, n_train, ft_folder, logits_shape = ft
    assert (ft_loop.optimizer, ft_loop.weight_decay, ft_loop.lr, ft_loop.epochs) == ("adamw", 0.05, cfg.finetune_lr, 1)
    assert n_train == len(train) and ft_folder == tmp_path / "bigearthnet-finetune" and logits_shape == (2, 19)
    calls.clear()
    sar = tiny_cfg(modality="s1", finetune_epochs=0)
    assert set(sc.evaluate_backbone(sc.create_backbone(sar), sar)) == {"ben_mAP"}  # no EuroSAT-SAR, no fine-tuning
    assert [c[0] for c in calls] == ["probe"] and calls[0][3] is True


def test_evaluation_runs_rows_ablation_and_verdicts(monkeypatch, tmp_path):
    """The chapter's evaluation: the random init (mean over seeds), SoftCon, and one pretraining per ablation
    lambda through the given pretrain function, each in its own folder, from the same config but lambda."""
    from eobook.methods.softcon import evaluation as ev

    evaluated = []

    def fake_evaluate(backbone, cfg, device="cpu", checkpoint_dir=None):
        evaluated.append((cfg.lam, checkpoint_dir))
        value = 40.0 + 10 * len(evaluated)
        return {"ben_mAP": value, "eurosat_OA": value + 1}

    pretrained = []

    def fake_pretrain(cfg, out_dir, **kwargs):
        pretrained.append((cfg, out_dir))
        return tiny_module(), None

    monkeypatch.setattr(ev, "evaluate_backbone", fake_evaluate)
    cfg = tiny_cfg(random_init_seeds=2, ablation_lambdas=(1.0, 0.0))
    result = sc.evaluate_runs(tiny_module(), cfg, fake_pretrain, tmp_path)
    assert list(result.scores) == ["random init", "SoftCon, lambda=0.5", "InfoNCE only, lambda=1", "SoftCon, lambda=0"]
    assert result.scores["random init"] == {"ben_mAP": 55.0, "eurosat_OA": 56.0}  # mean of seeds 0 and 1
    assert [folder for _, folder in evaluated] == [tmp_path / "random" / "seed0", tmp_path / "random" / "seed1",
                                                   tmp_path / "softcon", tmp_path / "lambda1", tmp_path / "lambda0"]
    assert [(c.lam, folder) for c, folder in pretrained] == [(1.0, tmp_path / "lambda1"), (0.0, tmp_path / "lambda0")]
    assert dataclasses.replace(pretrained[0][0], lam=0.5) == cfg
    verdicts = result.verdicts()
    assert verdicts[0].startswith("SoftCon, lambda=0.5 beats random init")
    assert verdicts[1].startswith("SoftCon, lambda=0.5 does not beat InfoNCE only, lambda=1")
    assert verdicts[2] == "random init over 2 seeds: BigEarthNet linear mAP 50.0-60.0, EuroSAT linear OA 51.0-61.0"
    assert list(result.table().columns) == ["BigEarthNet linear mAP", "EuroSAT linear OA"]
    torch.save(sc.Backbone("vit", 3, 32, 8, 64, 2, 4).net.state_dict(), tmp_path / "rgb.pth")
    foundation = sc.evaluate_runs(tiny_module(), dataclasses.replace(cfg, weights=str(tmp_path / "rgb.pth"),
                                                                     ablation_lambdas=()), fake_pretrain, None)
    assert list(foundation.scores) == ["foundation model (no EO pretraining)", "SoftCon, lambda=0.5"]
    assert len(foundation.init_per_seed) == 1  # one network whatever the seed


def test_paper_table_puts_this_run_in_its_row():
    ours = {"ben_mAP": 12.3, "eurosat_OA": 45.6}
    table = sc.paper_table(ours, sc.CHAPTER.profile("full"))
    mine = table[table["BigEarthNet mAP (this run)"].notna()]
    assert list(mine["backbone"]) == ["vit_small_patch14_dinov2"] and list(mine["input"]) == ["MS 13 bands"]
    assert float(mine["BigEarthNet-10% mAP (paper)"].iloc[0]) == 85.0 and float(mine["EuroSAT OA (this run)"].iloc[0]) == 45.6
    tiny = sc.paper_table({"ben_mAP": 1.0}, tiny_cfg(), baseline={"ben_mAP": 0.5, "eurosat_OA": 0.25})
    assert len(tiny) == len(sc.PAPER_RESULTS) + 1 and tiny.iloc[-1]["backbone"].startswith("vit (dim 64")
    assert tiny["BigEarthNet mAP (this run)"].notna().sum() == 1
    assert tiny.iloc[-1]["BigEarthNet mAP (random init)"] == 0.5 and tiny.iloc[-1]["EuroSAT OA (random init)"] == 0.25
    assert tiny["BigEarthNet mAP (random init)"].notna().sum() == 1


def test_evaluation_of_a_backbone_resumes_from_its_stage_folders(tmp_path):
    """The real probes and fine-tuning on the tiny sample world: scores in percent, one folder per stage, and
    a second call (e.g. after a kill) loads the finished stages and gives the same scores."""
    cfg = tiny_cfg(probe_epochs=5)
    backbone = sc.create_backbone(cfg)
    first = sc.evaluate_backbone(backbone, cfg, "cpu", tmp_path)
    assert set(first) == {"ben_mAP", "eurosat_OA", "ben_ft_mAP"} and all(0 <= v <= 100 for v in first.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bigearthnet-finetune", "bigearthnet-probe", "eurosat-probe"]
    assert all(any(p.glob("ckpt-*.pt")) for p in tmp_path.iterdir())
    assert sc.evaluate_backbone(backbone, cfg, "cpu", tmp_path) == first


# --------------------------------------------------------------------------------------------------
# Start weights: the paper's foundation models, and smoke runs that download nothing (issue 18)
# --------------------------------------------------------------------------------------------------
def test_start_weights_says_what_both_branches_start_from(tmp_path):
    random_cfg, line = sc.start_weights(tiny_cfg())
    assert random_cfg == tiny_cfg() and line.startswith("start weights: random (vit, 13 bands, 32 px")
    full = sc.CHAPTER.profile("full")
    same, line = sc.start_weights(full)  # a full run loads the hub weights later (online or from the cache)
    assert same == full and "DINOv2 ViT-S/14" in line and "as the paper" in line
    torch.save(sc.Backbone("vit", 3, 32, 8, 64, 2, 4).net.state_dict(), tmp_path / "rgb.pth")
    local = tiny_cfg(weights=str(tmp_path / "rgb.pth"))
    assert sc.start_weights(local) == (local, f"start weights: the RGB state dict {tmp_path / 'rgb.pth'} "
                                              f"(vit, 13 bands, 32 px)")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        sc.start_weights(tiny_cfg(weights=str(tmp_path / "nope.pth")))
    rn50 = sc.start_weights(sc.CHAPTER.profile("full", arch="resnet50", mask_ratio=0))[1]
    assert "supervised ImageNet-1k" in rn50 and "DINO's ResNet-50" in rn50  # the deviation, said in the run


def test_a_smoke_run_without_the_hub_weights_starts_from_random_weights(monkeypatch):
    """At the paper's sizes: ViT-S/14, 13 bands, 224 px; nothing is fetched (timm's pretrained path is never
    taken), the config says weights='' and the line says why."""
    monkeypatch.setattr(sc.model, "hub_weights_file", lambda arch: None)

    def no_download(*args, pretrained=False, **kwargs):
        assert not pretrained, "a smoke run must not fetch weights"
        return real_create(*args, **kwargs)

    real_create = timm.create_model
    monkeypatch.setattr(timm, "create_model", no_download)
    smoke = sc.CHAPTER.profile("full", smoke=True)
    resolved, line = sc.start_weights(smoke)
    assert resolved == dataclasses.replace(smoke, weights="") and resolved.arch == "vit_small_patch14_dinov2"
    assert line.startswith("start weights: SMOKE RUN without the hub weights") and "random weights of the same " \
        "architecture (vit_small_patch14_dinov2, 13 bands, 224 px)" in line
    assert sc.init_name(resolved) == "random init"
    backbone = sc.create_backbone(resolved)  # the paper's model and input size, random weights
    assert (backbone.embed_dim, backbone.num_patches, backbone.in_chans) == (384, 16 * 16, 13)


def test_build_pretraining_of_a_smoke_run_prints_its_fallback(monkeypatch, capsys):
    """``python -m eobook pretrain ... --smoke`` (no notebook) falls back the same way and prints the line once;
    a config the notebook already resolved prints nothing."""
    monkeypatch.setattr(sc.model, "hub_weights_file", lambda arch: None)
    cfg = tiny_cfg(smoke=True, weights="hub")
    built = sc.build_pretraining(cfg)
    assert "SMOKE RUN without the hub weights" in capsys.readouterr().out
    expected = seeded(lambda: sc.pretraining_module(dataclasses.replace(cfg, weights="")), cfg.seed)
    assert all(torch.equal(a, b) for a, b in zip(built.module.state_dict().values(), expected.state_dict().values()))
    sc.build_pretraining(sc.start_weights(cfg)[0])
    assert capsys.readouterr().out == ""


def test_a_smoke_run_reads_cached_hub_weights_without_the_network(monkeypatch, tmp_path):
    """Hub weights already in the local cache (timm's safetensors file) are read from that file."""
    from safetensors.torch import save_file

    rgb = sc.Backbone("vit", 3, 32, 8, 64, 2, 4)
    save_file({k: v.contiguous() for k, v in rgb.net.state_dict().items()}, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(sc.model, "hub_weights_file", lambda arch: str(tmp_path / "model.safetensors"))
    resolved, line = sc.start_weights(tiny_cfg(smoke=True, weights="hub"))
    assert resolved.weights == str(tmp_path / "model.safetensors") and "read from the local cache" in line
    backbone = sc.create_backbone(resolved)
    assert torch.equal(backbone.net.blocks[1].mlp.fc1.weight, rgb.net.blocks[1].mlp.fc1.weight)
    assert torch.equal(backbone.net.patch_embed.proj.weight,
                       sc.adapt_patch_embed(rgb.net.patch_embed.proj.weight.detach(), 13))


def test_hub_weights_file_looks_only_in_the_local_cache(monkeypatch):
    import huggingface_hub

    asked = []

    def cache(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return "/cache/model.safetensors" if filename == "model.safetensors" else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", cache)
    assert sc.hub_weights_file("vit_small_patch14_dinov2") == "/cache/model.safetensors"
    assert asked == [("timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors")]
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    assert sc.hub_weights_file("resnet50") is None
    assert sc.hub_weights_file("vit") is None  # the CPU profiles' custom ViT has no hub weights


@pytest.mark.slow
def test_a_dino_resnet50_backbone_file_loads_into_the_resnet50_row(tmp_path):
    """The paper's ResNet-50 start (DINO's backbone file: a torchvision resnet50 state dict without ``fc``,
    see DEVIATIONS["weights"]) loads with weights=<file>: same keys as timm's resnet50."""
    import torchvision

    dino_like = torchvision.models.resnet50(weights=None)
    dino_like.fc = torch.nn.Identity()
    torch.save(dino_like.state_dict(), tmp_path / "dino_resnet50_pretrain.pth")
    backbone = sc.Backbone("resnet50", in_chans=13, img_size=64)
    report = sc.load_foundation_weights(backbone, str(tmp_path / "dino_resnet50_pretrain.pth"))
    assert report == {"adapted": ["conv1.weight"], "skipped": []}
    assert torch.equal(backbone.net.layer3[2].conv2.weight, dino_like.layer3[2].conv2.weight)


def test_the_resnet50_start_weights_are_a_recorded_deviation():
    rows = {row["field"]: row for row in sc.CHAPTER.deviation_rows()}
    assert rows["weights"]["paper"] == rows["weights"]["full"] == "hub"  # ViT-S/14: DINOv2, as the paper
    assert "DINO" in sc.PAPER["weights"].source and "DINO's self-supervised ResNet-50" in rows["weights"]["reason"]
    assert "dino_resnet50_pretrain.pth" in rows["weights"]["reason"]
    assert sc.PAPER["probe_blocks"].value == 1 and rows["probe_blocks"]["full"] == 1
    for name in ("optimizer", "warmup_epochs", "betas", "min_lr", "probe_lr", "probe_batch_size", "finetune_lr",
                 "finetune_batch_size"):  # the book's choices, each with its own row
        assert rows[name]["paper"] is None and rows[name]["reason"].startswith("Not in the abstract"), name
    table = sc.CHAPTER.deviations_table()
    assert list(table.columns) == ["paper", "where", "full profile", "why"] and table.loc["weights", "paper"] == "hub"


# --------------------------------------------------------------------------------------------------
# Splits and counts, pretraining labels, smoke subsets (issue 18)
# --------------------------------------------------------------------------------------------------
def test_data_splits_say_which_split_and_how_many(tmp_path):
    cfg = tiny_cfg(probe_fraction=0.25)
    ben_train, ben_test = sc.bigearthnet_splits(cfg)
    euro_train, euro_test = sc.eurosat_splits(cfg)
    ben, euro = sc.data_splits(cfg)
    assert ben.startswith("BigEarthNet-MM, official split lists train.csv / test.csv (v1 layout)")
    assert f"25% of the 64 training patches, drawn without replacement with seed {cfg.seed}" in ben
    assert len(ben_train) == 16 and f"reads 16 training and {len(ben_test)} test patches" in ben
    assert "60/20/20 split by file-name hash" in euro
    assert f"reads {len(euro_train)} training and {len(euro_test)} test images" in euro and "smoke" not in euro
    assert "all 64 training patches" in sc.data_splits(tiny_cfg(probe_fraction=1.0))[0]
    assert sc.data_splits(tiny_cfg(modality="s1"))[1].startswith("EuroSAT: not evaluated for SAR input")


def test_a_smoke_run_keeps_the_first_patches_of_the_label_fraction():
    """The 10% draw comes from the whole training split, then a smoke run keeps its first few patches (not 10%
    of a handful), and says so."""
    from eobook.data import SMOKE_SAMPLES

    full_draw, _ = sc.bigearthnet_splits(tiny_cfg(probe_fraction=0.5))
    smoke_train, smoke_test = sc.bigearthnet_splits(tiny_cfg(probe_fraction=0.5, smoke=True))
    assert len(smoke_train) == SMOKE_SAMPLES == len(smoke_test)
    assert [smoke_train[i]["id"] for i in range(SMOKE_SAMPLES)] == [full_draw[i]["id"] for i in range(SMOKE_SAMPLES)]
    line = sc.data_splits(tiny_cfg(probe_fraction=0.5, smoke=True))[0]
    assert "50% of the 64 training patches" in line and f"smoke run: only the first {SMOKE_SAMPLES}" in line


def test_pretraining_labels_come_from_the_label_file_alone(monkeypatch):
    from eobook.data import SSL4EOS12

    cfg = tiny_cfg(smoke=True)
    dataset = sc.ssl4eo_ml(cfg)
    expected = torch.stack([dataset[i]["multilabel"] for i in range(len(dataset))])

    def no_image(*args, **kwargs):
        raise AssertionError("pretraining_labels decoded an image")

    monkeypatch.setattr(SSL4EOS12, "_read_bands", no_image)
    labels = sc.pretraining_labels(cfg)
    assert labels.shape == (len(dataset), 9) and torch.equal(labels, expected)


def test_soft_target_entropy_hand_values():
    """0 for InfoNCE's identity target, 1 for uniform targets, log(M/K)/log M for K balanced one-hot classes."""
    assert float(sc.soft_target_entropy(torch.eye(4))) == pytest.approx(0.0)
    assert float(sc.soft_target_entropy(torch.ones(3, 5))) == pytest.approx(1.0)
    one_hot = F.one_hot(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 4).float()
    s = sc.label_similarity(one_hot, one_hot)
    assert float(sc.soft_target_entropy(s)) == pytest.approx(math.log(2) / math.log(8))
    # a row [1, 1, 2] / 4: entropy 1.5 bits = 1.5 ln 2 nats, over log 3
    assert float(sc.soft_target_entropy(torch.tensor([[1.0, 1.0, 2.0]]))) == pytest.approx(1.5 * math.log(2) / math.log(3))
    unlabelled = torch.zeros(2, 3)
    assert float(sc.soft_target_entropy(unlabelled)) == 0.0
    with pytest.raises(ValueError, match="label_sim"):
        sc.soft_target_entropy(-torch.ones(2, 2))
