"""Tests of SoftCon (chapter 4): label similarity, the soft contrastive loss, the MoCo-v3-style module,
patch-embedding adaptation and loading of vision-foundation-model weights (random weights, no download)."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import timm
import torch
import torch.nn.functional as F

from eobook.config import ConfigError, get_profile
from eobook.methods import softcon as sc
from eobook.runtime import DistInfo
from eobook.train import StepContext, TrainConfig, fit

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ctx_for(step: int = 0, total: int = 10, seed: int = 0) -> StepContext:
    return StepContext(0, step, step, total, total, torch.device("cpu"), torch.Generator().manual_seed(seed), None,
                       DistInfo())


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
    m = module.momentum_at(ctx.progress)
    assert m == pytest.approx(1 - 0.1 * (math.cos(math.pi * 0.3) + 1) / 2)
    module.on_step_end(ctx)
    for name, p in module.momentum_branch.named_parameters():
        assert torch.allclose(p, m * before[name] + (1 - m) * base[name], atol=1e-7)
    assert module.momentum_at(0.0) == pytest.approx(0.9) and module.momentum_at(1.0) == pytest.approx(1.0)
    assert not any(p.requires_grad for p in module.momentum_branch.parameters())


def test_siamese_masking_encodes_only_visible_patches():
    module = tiny_module(mask_ratio=0.75)
    keep = module.keep_indices(3, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert keep.shape == (3, 4)  # 16 patches, 25% visible
    tokens = sc.encode_visible(module.encoder.net, torch.rand(3, 13, 16, 16), keep)
    assert tokens.shape == (3, 1 + 4, 32)
    assert tiny_module(mask_ratio=0.0).keep_indices(3, torch.Generator(), torch.device("cpu")) is None
    with pytest.raises(ValueError, match="mask_ratio"):
        sc.SoftCon(sc.Backbone("resnet50", 2, 32), mask_ratio=0.5)


def test_views_are_deterministic_given_the_generator():
    module = tiny_module()
    x = torch.rand(4, 13, 20, 20)
    a = module.views(x, torch.Generator().manual_seed(1))
    b = module.views(x, torch.Generator().manual_seed(1))
    assert a[0].shape == (4, 13, 16, 16) and torch.equal(a[0], b[0]) and not torch.equal(a[0], a[1])


def test_full_crop_is_the_image_or_its_flip():
    x = torch.rand(6, 2, 8, 8)
    out = sc.random_resized_crop(x, 8, (1.0, 1.0), torch.Generator().manual_seed(0), ratio=(1.0, 1.0))
    for a, b in zip(out, x):
        assert any(torch.allclose(a, b.flip(dims) if dims else b, atol=1e-5) for dims in ((), (-1,), (-2,), (-1, -2)))


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
    full = get_profile("softcon", "full")
    assert (full.arch, full.img_size, full.modality) == ("vit_small_patch14_dinov2", 224, "s2c")
    assert get_profile("softcon", "tiny").weights == ""
    for bad, field in (({"lam": 1.5}, "lam"), ({"mask_ratio": 1.0}, "mask_ratio"),
                       ({"arch": "resnet50"}, "mask_ratio"), ({"ablation_lambdas": (0.5, 2.0)}, "ablation_lambdas"),
                       ({"modality": "s2a"}, "modality"), ({"img_size": 100}, "img_size"),
                       ({"crop_scale": (0.5, 0.2)}, "crop_scale")):
        with pytest.raises(ConfigError, match=field):
            get_profile("softcon", "full", **bad)
    assert get_profile("softcon", "full", arch="resnet50", mask_ratio=0).arch == "resnet50"


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
    assert (results[0][0] + results[1][0]) / 2 == pytest.approx(float(single), rel=1e-5)
    assert torch.allclose(torch.tensor(results[0][1] + results[1][1]) / 2, q.grad, atol=1e-6)
