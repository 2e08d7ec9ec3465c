"""Tests of Chapter 3, MultiMAE meets EO (eobook.methods.multimae_eo): band groups, Dirichlet masking under the
RNG contract, adapters and decoders, eq. (1), SEG resizing, weight decay, training, resume, DDP draws, the
downstream protocols, the results table and the profiles."""
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from eobook.config import ConfigError
from eobook.data import (MMEARTH_S2_BANDS, MODALITY_BANDS, S2_L1C_BANDS, SMOKE_SAMPLES, FMoWSentinel, GeoBench, MMEarth,
                         dataset_root, real_data_root)
from eobook.evaluate import seeded
from eobook.methods import multimae_eo as mm
from eobook.nn import patchify
from eobook.rng import GeneratorRandom
from eobook.runtime import DistInfo
from eobook.train import StepContext, TrainConfig, fit, param_groups

SIZE, PATCH = 16, 4  # 16 tokens per modality


def tiny_cfg(**overrides) -> mm.MultiMAEConfig:
    return mm.CHAPTER.profile("tiny", **overrides)


def tiny_model(**kwargs) -> mm.MultiMAE:
    torch.manual_seed(0)
    args = dict(img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=1, num_heads=2, num_visible=8, decoder_dim=16,
                decoder_depth=1, decoder_heads=2, seg_class_dim=8)
    return mm.MultiMAE(**{**args, **kwargs})


def make_batch(b=4, size=SIZE, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {m: torch.randn(b, mm.modality_channels(m), size, size, generator=g) for m in mm.MODALITIES if m != "seg"}
    batch["seg"] = torch.randint(0, mm.NUM_SEG_CLASSES, (b, size, size), generator=g)
    return batch


def make_ctx(rank: int = 0, world: int = 1, seed: int = 0) -> StepContext:
    return StepContext(0, 0, 0, 10, 10, torch.device("cpu"), torch.Generator().manual_seed(seed), None,
                       DistInfo(rank, world))


# ------------------------------------------------------------------------------------- band groups
def test_band_groups_index_the_mmearth_order_where_b8a_precedes_b08():
    index = mm.modality_band_indices(MMEARTH_S2_BANDS)
    assert index == {"rgb": [3, 2, 1], "ired": [4, 5, 6], "sired": [11, 12], "eb": [7, 8]}
    assert mm.modality_band_indices(S2_L1C_BANDS)["eb"] == [8, 7]  # the same bands in L1C order
    s2 = torch.arange(13.0).view(1, 13, 1, 1).expand(2, 13, 4, 4)
    groups = mm.split_s2(s2, MMEARTH_S2_BANDS)
    for m, bands in MODALITY_BANDS.items():
        assert groups[m][0, :, 0, 0].tolist() == [float(MMEARTH_S2_BANDS.index(b)) for b in bands]


def test_band_mapping_agrees_with_the_mmearth_reader():
    cfg = tiny_cfg()
    ds = MMEarth(dataset_root(cfg) / "MMEarth" / cfg.mmearth_file, split="train", normalize=False)
    raw = torch.from_numpy(ds.raw_sample(0)["s2"])[None]
    sample, groups = ds[0], mm.split_s2(raw, MMEARTH_S2_BANDS)
    for m in mm.SPECTRAL_MODALITIES:
        assert torch.equal(sample[m], groups[m][0])


def test_pretraining_set_is_the_mmearth_train_split_with_six_modalities():
    pretraining = mm.CHAPTER.build_pretraining(tiny_cfg())
    sample = pretraining.dataset[0]
    assert set(mm.MODALITIES) <= set(sample) and sample["seg"].dtype == torch.int64
    assert isinstance(pretraining.module, mm.MultiMAE) and pretraining.meta["arch"] == "multimae"


def test_split_s2_refuses_missing_bands_and_wrong_shapes():
    with pytest.raises(ValueError, match="B11"):
        mm.modality_band_indices([b for b in S2_L1C_BANDS if b != "B11"])
    with pytest.raises(ValueError, match="s2"):
        mm.split_s2(torch.zeros(1, 12, 4, 4), S2_L1C_BANDS)


# ------------------------------------------------------------------------------------- masking
def test_dirichlet_shares_at_alpha_1_are_normalised_exponentials():
    u = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.0, 0.5]])
    e = -np.log1p(-u.double().numpy())                             # Gamma(1) = Exp(1) by the inverse CDF
    assert torch.allclose(mm.dirichlet_shares(u, 1.0), torch.from_numpy(e / e.sum(1, keepdims=True)))
    assert torch.equal(mm.dirichlet_shares(torch.zeros(1, 4), 1.0), torch.full((1, 4), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_dirichlet_shares_have_the_moments_of_a_dirichlet(alpha):
    m = 6
    shares = mm.dirichlet_shares(GeneratorRandom(0).rand(40_000, m), alpha)
    assert torch.allclose(shares.sum(1), torch.ones(40_000, dtype=torch.float64))
    # each share is Beta(alpha, (m - 1) alpha): mean 1/m, variance (m - 1) / (m^2 (m alpha + 1))
    assert torch.allclose(shares.mean(0), torch.full((m,), 1 / m, dtype=torch.float64), atol=0.004)
    var = (m - 1) / (m ** 2 * (m * alpha + 1))
    assert torch.allclose(shares.var(0), torch.full((m,), var, dtype=torch.float64), rtol=0.05)
    # and two shares are negatively correlated: corr = -1 / (m - 1)
    corr = np.corrcoef(shares[:, 0].numpy(), shares[:, 1].numpy())[0, 1]
    assert corr == pytest.approx(-1 / (m - 1), abs=0.02)


def test_largest_remainder_rounds_to_the_exact_budget():
    shares = torch.tensor([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3], [0.96, 0.02, 0.02]])
    assert mm.largest_remainder(shares, 7).tolist() == [[4, 2, 1], [3, 2, 2], [7, 0, 0]]
    # 3.5 / 2.1 / 1.4: floors 3, 2, 1 and the one token left goes to the largest remainder (0.5)


def test_dirichlet_allocation_sums_to_the_visible_budget_and_spreads():
    counts = mm.dirichlet_token_allocation(2000, 6, 49, alpha=1.0, rng=GeneratorRandom(0))
    assert counts.dtype == torch.int64 and counts.shape == (2000, 6)
    assert (counts.sum(1) == 49).all() and (counts >= 0).all()
    assert torch.allclose(counts.float().mean(0), torch.full((6,), 49 / 6), atol=0.6)  # symmetric
    # alpha = 1 is uniform on the simplex: a share is Beta(1, 5), so a modality rounds to 0 tokens with
    # P(share < 1/98) = 1 - (97/98)^5 ~ 5%, and some modality of a sample holds more than half with ~6 * 3%
    assert 0.03 < (counts == 0).float().mean() < 0.08
    assert 0.1 < (counts > 24).any(dim=1).float().mean() < 0.3
    concentrated = mm.dirichlet_token_allocation(2000, 6, 49, alpha=100.0, rng=GeneratorRandom(0))
    assert concentrated.float().std() < counts.float().std() / 3


def test_masks_are_drawn_from_the_rng_only():
    a = mm.dirichlet_token_allocation(8, 6, 49, rng=torch.Generator().manual_seed(3))
    b = mm.dirichlet_token_allocation(8, 6, 49, rng=GeneratorRandom(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, mm.dirichlet_token_allocation(8, 6, 49, rng=GeneratorRandom(4)))
    model = tiny_model()
    state = torch.random.get_rng_state()
    model.sample_masks(4, GeneratorRandom(0), torch.device("cpu"))
    model(make_batch(), make_ctx())
    assert torch.equal(torch.random.get_rng_state(), state)  # torch's global generator is left alone
    with pytest.raises(ValueError, match="alpha"):
        mm.dirichlet_token_allocation(8, 6, 49, alpha=0.0)


def test_visible_tokens_follow_the_counts_and_are_uniform_within_a_modality():
    counts = torch.tensor([[3, 0, 5, 0, 0, 0], [0, 0, 0, 0, 0, 8]] * 500)
    visible = mm.visible_token_mask(counts, 16, GeneratorRandom(0))
    assert torch.equal(visible.sum(-1), counts)
    freq = visible[::2, 0].float().mean(0)  # each of 16 positions chosen with probability 3/16
    assert torch.allclose(freq, torch.full((16,), 3 / 16), atol=0.06)
    keep = mm.visible_indices(visible[:2])
    assert keep.shape == (2, 8) and (keep.diff(dim=1) > 0).all()
    assert (keep[0] // 16).tolist() == [0, 0, 0, 2, 2, 2, 2, 2] and (keep[1] // 16 == 5).all()


def test_masks_and_flips_split_over_two_ranks_are_the_rows_of_one_process():
    """Under DDP each rank draws its rows of one global draw: 2 ranks x 2 samples = 1 process x 4 samples."""
    model, batch = tiny_model(), make_batch(b=4)
    whole_ctx = make_ctx()
    whole_inputs = model.prepare(batch, whole_ctx)
    whole_visible, _ = model.sample_masks(4, whole_ctx, torch.device("cpu"))
    for rank in range(2):
        ctx, rows = make_ctx(rank, 2), slice(2 * rank, 2 * rank + 2)
        inputs = model.prepare({m: x[rows] for m, x in batch.items()}, ctx)
        visible, _ = model.sample_masks(2, ctx, torch.device("cpu"))
        assert torch.equal(visible, whole_visible[rows])
        for m in mm.MODALITIES:
            assert torch.equal(inputs[m], whole_inputs[m][rows])


# ------------------------------------------------------------------------------------- model
def test_adapters_and_decoders_have_the_shapes_of_all_six_modalities():
    model, batch = tiny_model(), make_batch()
    inputs = model.prepare(batch)
    visible, keep = model.sample_masks(4, GeneratorRandom(0), torch.device("cpu"))
    assert visible.shape == (4, 6, 16) and keep.shape == (4, 8)
    for m in mm.MODALITIES:
        assert model.encoder.adapters[m](inputs[m]).shape == (4, 16, 32)
    assert model.encoder(inputs, keep).shape == (4, 1 + 8, 32)
    preds = model.reconstruct(inputs, visible, keep)
    for m in mm.MODALITIES:
        out = mm.NUM_SEG_CLASSES if m == "seg" else mm.modality_channels(m)
        assert preds[m].shape == (4, 16, out * PATCH * PATCH)
    assert mm.predictions_to_images("seg", preds["seg"], PATCH).shape == (4, SIZE, SIZE)


def test_decoder_queries_see_other_modalities_through_cross_attention():
    model, batch = tiny_model(), make_batch()
    inputs = model.prepare(batch)
    visible, keep = model.sample_masks(4, GeneratorRandom(1), torch.device("cpu"))
    only_seg = {**inputs, "seg": torch.zeros_like(inputs["seg"])}
    seg_visible = (keep // 16 == 5).any(dim=1)
    with torch.no_grad():
        a, b = model.reconstruct(inputs, visible, keep)["rgb"], model.reconstruct(only_seg, visible, keep)["rgb"]
    # the RGB decoder's output changes when visible SEG tokens change (and only then)
    assert not torch.allclose(a[seg_visible], b[seg_visible])
    assert torch.allclose(a[~seg_visible], b[~seg_visible])


def test_seg_adapter_refuses_float_maps_and_model_refuses_missing_modalities():
    model = tiny_model()
    with pytest.raises(ValueError, match="seg"):
        model.encoder.adapters["seg"](torch.zeros(2, SIZE, SIZE))
    batch = make_batch()
    del batch["depth"]
    with pytest.raises(ValueError, match="depth"):
        model.prepare(batch)


def test_embeddings_tokens_biases_and_norms_do_not_decay():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert {"encoder.global_token", "encoder.adapters.seg.class_embed.weight", "decoders.rgb.mask_token",
            "decoders.seg.modality_embed"} <= exempt
    embeddings = {n for n in exempt if model.get_parameter(n).ndim >= 2}
    assert all(n.endswith(("token", "modality_embed", "class_embed.weight")) for n in embeddings)
    decaying = {names[id(p)] for p in decay["params"]}
    assert {"encoder.adapters.rgb.proj.weight", "decoders.depth.head.weight", "encoder.blocks.0.attn.qkv.weight"} <= decaying
    assert all(model.get_parameter(n).ndim >= 2 for n in decaying)


def test_parameter_counts_add_up_to_the_model():
    model = tiny_model()
    assert sum(mm.parameter_counts(model).values()) == sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------- loss (eq. 1)
def test_reconstruction_loss_matches_hand_computation_on_masked_tokens():
    target = torch.zeros(1, 1, 4, 4)                               # 4 tokens of 2x2 pixels
    pred = torch.tensor([[[1.0] * 4, [2.0] * 4, [3.0] * 4, [4.0] * 4]])
    masked = torch.tensor([[True, False, True, False]])
    assert mm.reconstruction_loss("depth", pred, target, masked, 2) == pytest.approx((1 + 9) / 2)
    assert mm.reconstruction_loss("depth", pred, target, masked, 2, depth_loss="l1") == pytest.approx((1 + 3) / 2)


def test_the_loss_ignores_visible_tokens():
    model, batch = tiny_model(), make_batch()
    inputs = model.prepare(batch)
    visible, keep = model.sample_masks(4, GeneratorRandom(0), torch.device("cpu"))
    with torch.no_grad():
        preds = model.reconstruct(inputs, visible, keep)
    for i, m in enumerate(mm.MODALITIES):
        masked = ~visible[:, i]
        base = mm.reconstruction_loss(m, preds[m], inputs[m], masked, PATCH)
        noise = 100 * torch.randn_like(preds[m])
        on_visible = preds[m] + noise * (~masked).unsqueeze(-1)
        on_masked = preds[m] + noise * masked.unsqueeze(-1)
        assert mm.reconstruction_loss(m, on_visible, inputs[m], masked, PATCH) == pytest.approx(float(base), rel=1e-5)
        assert mm.reconstruction_loss(m, on_masked, inputs[m], masked, PATCH) != pytest.approx(float(base), rel=1e-3)


def test_seg_loss_is_cross_entropy_over_classes():
    target = torch.tensor([[[0, 1], [2, 3]]])                     # one 2x2 token
    logits = torch.zeros(1, mm.NUM_SEG_CLASSES, 2, 2)
    logits[0, 0] = 5.0
    pred = patchify(logits, 2).reshape(1, 1, -1)
    expected = F.cross_entropy(logits, target)
    got = mm.reconstruction_loss("seg", pred, target, torch.tensor([[True]]), 2)
    assert got == pytest.approx(float(expected), rel=1e-6)


def test_loss_terms_are_the_six_terms_of_eq_1_and_sum_to_the_loss():
    model, batch = tiny_model(), make_batch()
    with torch.no_grad():
        out = model(batch, make_ctx())
    assert set(out) == {"loss", *[f"loss_{m}" for m in mm.MODALITIES]}
    assert float(out["loss"]) == pytest.approx(sum(float(out[f"loss_{m}"]) for m in mm.MODALITIES), rel=1e-6)


# ------------------------------------------------------------------------------------- resizing, flips
@pytest.mark.parametrize("size_in", [32, 64])
def test_seg_targets_stay_integer_class_ids_after_resizing(size_in):
    g = torch.Generator().manual_seed(0)
    seg = torch.tensor([0, 3, 7, 11])[torch.randint(0, 4, (2, size_in, size_in), generator=g)]
    out = mm.resize_modalities({"seg": seg, "rgb": torch.rand(2, 3, size_in, size_in)}, 56)
    assert out["seg"].dtype == torch.int64 and out["seg"].shape == (2, 56, 56)
    assert set(out["seg"].unique().tolist()) <= {0, 3, 7, 11}
    assert out["rgb"].shape == (2, 3, 56, 56)
    # what the authors' bilinear resize + int cast does instead: class ids that were never there
    mixed = F.interpolate(seg[:, None].float(), size=(56, 56), mode="bilinear").long()
    assert not set(mixed.unique().tolist()) <= {0, 3, 7, 11}


def test_pretraining_flips_every_modality_of_a_sample_alike():
    model, batch = tiny_model(hflip_p=0.5), make_batch(b=16)
    flipped = model.prepare(batch, GeneratorRandom(0))
    was_flipped = torch.tensor([torch.equal(flipped["rgb"][i], batch["rgb"][i].flip(-1)) for i in range(16)])
    assert 0 < was_flipped.sum() < 16
    for m in mm.MODALITIES:
        for i in range(16):
            expected = batch[m][i].flip(-1) if was_flipped[i] else batch[m][i]
            assert torch.equal(flipped[m][i], expected)
    assert all(torch.equal(model.prepare(batch)[m], batch[m]) for m in mm.MODALITIES)  # no rng: no flip


# ------------------------------------------------------------------------------------- training
def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model, batch = tiny_model(), make_batch(b=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(8):
        out = model(batch, GeneratorRandom(0))  # same masks and flips every step
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in out.items()})
    assert set(history[0]) == {"loss", *[f"loss_{m}" for m in mm.MODALITIES]}
    assert history[-1]["loss"] < 0.85 * history[0]["loss"]
    assert all(history[-1][k] < history[0][k] for k in history[0])  # every modality's term drops


class FixedRows(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {k: v[0] for k, v in make_batch(b=1, seed=i).items()}


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, device="cpu", checkpoint_every=1, progress="off", seed=0)
    quiet = dict(log=lambda _: None)
    full = tiny_model()
    fit(full, FixedRows(), cfg, checkpoint_dir=tmp_path / "a", **quiet)
    fit(tiny_model(), FixedRows(), cfg, checkpoint_dir=tmp_path / "b", stop_after_steps=3, **quiet)
    resumed = tiny_model()
    result = fit(resumed, FixedRows(), cfg, checkpoint_dir=tmp_path / "b", **quiet)
    assert result.resumed_from == 3
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------------- downstream
def test_segmentation_head_of_four_convnext_blocks_returns_logits_at_the_label_size():
    encoder = tiny_model().encoder
    model = mm.MultiMAETaskModel(encoder, ("rgb", "ired"), num_classes=5, segmentation=True, seg_head_dim=8)
    assert len(model.head.blocks) == 4
    logits = model({"rgb": torch.rand(2, 3, SIZE, SIZE), "ired": torch.rand(2, 3, SIZE, SIZE)}, out_size=(20, 20))
    assert logits.shape == (2, 5, 20, 20)
    classifier = mm.MultiMAETaskModel(encoder, ("rgb",), num_classes=7)
    assert classifier({"rgb": torch.rand(2, 3, SIZE, SIZE)}).shape == (2, 7)


def test_sample_world_tasks_give_scalar_class_ids_and_encoder_inputs():
    cfg = tiny_cfg()
    task = mm.load_task(dataset_root(cfg), "m-eurosat", max_train=8, max_test=4)
    assert task.kind == "multiclass" and len(task.train) == 8 and len(task.test) == 4
    assert (task.metric, task.protocols, task.objective.kind) == ("OA", ("linear probing", "end-to-end"), "multiclass")
    batch = torch.utils.data.default_collate([task.train[i] for i in range(4)])
    assert batch["label"].shape == (4,)
    inputs = mm.task_inputs(batch, task.band_order, mm.INPUT_SETS["rgb+ired+sired+eb"], SIZE)
    assert sorted(inputs) == ["eb", "ired", "rgb", "sired"] and inputs["sired"].shape == (4, 2, SIZE, SIZE)
    with pytest.raises(ValueError, match="depth"):
        mm.task_inputs(batch, task.band_order, mm.INPUT_SETS["rgb+ired+depth"], SIZE)


def eval_cfg(**overrides) -> mm.MultiMAEConfig:
    return tiny_cfg(**{"embed_dim": 32, "depth": 1, "num_heads": 2, "eval_max_train": 12, "eval_max_test": 8,
                       "probe_epochs": 3, "finetune_epochs": 1, "finetune_batch_size": 4, "seg_head_dim": 8,
                       "input_sets": ("rgb",), "classification_tasks": ("m-eurosat",), "device": "cpu",
                       "progress": "off", **overrides})


def test_downstream_protocols_score_every_cell_checkpoint_each_stage_and_resume(tmp_path):
    cfg = eval_cfg()
    tasks = mm.downstream_tasks(cfg)
    assert [t.name for t in tasks] == ["m-eurosat", "m-landcover-seg"]
    encoder = seeded(lambda: mm.build_encoder(cfg), 0).train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    scores, seg_models = mm.evaluate_downstream(encoder, tasks, cfg, checkpoint_dir=tmp_path)
    assert encoder.training  # the probe reads it in eval mode and restores the mode
    assert set(scores) == {("m-eurosat", "OA", "rgb", "linear probing"), ("m-eurosat", "OA", "rgb", "end-to-end"),
                           ("m-landcover-seg", "mIoU", "rgb", "frozen encoder"),
                           ("m-landcover-seg", "mIoU", "rgb", "end-to-end")}
    assert all(0.0 <= v <= 100.0 for v in scores.values())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # the encoder is copied
    model, task = seg_models[("m-landcover-seg", "rgb")]
    assert task.kind == "segmentation" and model.segmentation
    for stage in ("m-eurosat/rgb/linear-probing", "m-eurosat/rgb/end-to-end", "m-landcover-seg/rgb/frozen-encoder"):
        assert any((tmp_path / stage).glob("ckpt-*.pt")), stage
    again, _ = mm.evaluate_downstream(encoder, tasks, cfg, checkpoint_dir=tmp_path)  # finished stages are loaded
    assert again == pytest.approx(scores)


def test_end_to_end_segmentation_trains_a_copy_of_the_encoder():
    cfg = eval_cfg(classification_tasks=())
    task = mm.downstream_tasks(cfg)[0]
    encoder = seeded(lambda: mm.build_encoder(cfg), 0)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    scores, end_to_end = mm.evaluate_task(encoder, task, "rgb", cfg)
    assert set(scores) == {"frozen encoder", "end-to-end"} and end_to_end.encoder is not encoder
    assert all(p.requires_grad for p in end_to_end.encoder.parameters())
    assert any(not torch.equal(before[k], v) for k, v in end_to_end.encoder.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_random_init_row_is_the_mean_over_seeded_encoders(tmp_path):
    cfg = eval_cfg(segmentation_tasks=(), random_init_seeds=2, seed=3)
    tasks = mm.downstream_tasks(cfg)
    mean, per_seed = mm.random_init_evaluation(tasks, cfg, checkpoint_dir=tmp_path)
    assert len(per_seed) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["seed3", "seed4"]
    for cell, value in mean.items():
        assert value == pytest.approx((per_seed[0][cell] + per_seed[1][cell]) / 2)
    again, _ = mm.evaluate_downstream(seeded(lambda: mm.build_encoder(cfg), cfg.seed + 1), tasks, cfg)
    assert again == pytest.approx(per_seed[1])  # seed cfg.seed + i is the i-th row, reproducibly


def test_results_table_puts_the_paper_beside_this_run_and_the_baseline():
    cells = [("m-eurosat", "OA", "rgb", "linear probing"), ("m-eurosat", "OA", "rgb", "end-to-end")]
    scores = dict(zip(cells, [50.0, 60.0]))
    seeds = [dict(zip(cells, [40.0, 45.0])), dict(zip(cells, [44.0, 47.0]))]
    table = mm.results_table(scores, {c: (seeds[0][c] + seeds[1][c]) / 2 for c in cells}, seeds)
    assert list(table.index.names) == ["task", "metric", "input set", "protocol"]
    assert table.loc[cells[0], "this run (%)"] == 50.0 and table.loc[cells[1], "random init (%)"] == 46.0
    assert table.loc[cells[0], "random init range"] == "40.0-44.0"
    assert table.loc[cells[0], "paper (%)"] == "main text, not in the appendix"
    assert "random init (%)" not in mm.results_table(scores).columns


def test_reconstruction_examples_show_the_input_on_visible_patches():
    model, batch = tiny_model(), make_batch()
    ex = mm.reconstruction_examples(model, batch, GeneratorRandom(0))
    assert ex["counts"].shape == (4, 6) and (ex["counts"].sum(1) == 8).all()
    rgb, seg = ex["rgb"], ex["seg"]
    shown = ~torch.isnan(rgb["masked"])
    assert torch.equal(rgb["reconstruction"][shown], rgb["original"][shown])
    assert seg["original"].shape == (4, 1, SIZE, SIZE) and set(seg["masked"].unique().tolist()) <= {-1, *range(12)}


def test_real_geobench_samples_go_through_the_same_reader_and_encoder():
    real = real_data_root()
    if real is None or not (real / "geobench" / "brick_kiln_v1.0").is_dir():
        pytest.skip("real GEO-Bench samples (../shared/data/real/geobench) are absent")
    ds = GeoBench(real / "geobench" / "brick_kiln_v1.0", split="train")
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert batch["label"].shape == (len(ds),)  # single-class labels batch to [B]
    band_order = mm.geobench_band_codes(ds.bands)
    assert band_order == S2_L1C_BANDS and batch["s2"].shape[1:] == (13, 64, 64)
    inputs = mm.task_inputs(batch, band_order, mm.INPUT_SETS["rgb+ired+sired+eb"], SIZE)
    with torch.no_grad():
        features = tiny_model().encoder.features(inputs)
    assert features.shape == (len(ds), 32) and torch.isfinite(features).all()


# ------------------------------------------------------------------------------------- profiles
@pytest.mark.parametrize("field, value", [("num_visible", 17), ("depth_loss", "huber"), ("hflip_p", 1.5),
                                          ("input_sets", ("rgb", "nir")), ("patch_size", 6),
                                          ("decoder_dim", 30), ("random_init_seeds", -1),
                                          ("fmow_train_fraction", 0.0), ("fmow_train_fraction", 1.5),
                                          ("fmow_test_split", "train"), ("fmow_image_size", 0),
                                          ("mmearth_split", "everything"), ("probe_batch_size", 0),
                                          ("classification_tasks", ("m-landcover-seg",)),
                                          ("segmentation_tasks", ("fmow",))])
def test_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        tiny_cfg(**{field: value})


def test_full_profile_reads_every_task_of_table_3_and_the_authors_pretraining_settings():
    cfg = mm.CHAPTER.profile("full")
    assert cfg.classification_tasks == mm.PAPER["classification_tasks"].value and "fmow" in cfg.classification_tasks
    assert cfg.segmentation_tasks == mm.PAPER["segmentation_tasks"].value
    assert (cfg.fmow_train_fraction, cfg.fmow_image_size, cfg.eval_max_train, cfg.eval_max_test) == (0.1, 64, 0, 0)
    assert (cfg.min_lr, cfg.hflip_p, cfg.decoder_heads, cfg.drop_path_rate, cfg.grad_clip) == (0.0, 0.5, 8, 0.0, 0.0)
    assert cfg.mmearth_split == "train" and cfg.weight_decay_end is None and cfg.lr_schedule == "cosine"


def test_full_profile_has_the_papers_settings():
    cfg = mm.CHAPTER.profile("full")
    assert (cfg.img_size, cfg.patch_size, cfg.num_visible) == (56, 8, 49)
    assert 6 * (cfg.img_size // cfg.patch_size) ** 2 == 294
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.decoder_dim, cfg.decoder_depth) == (768, 12, 12, 128, 2)
    assert (cfg.epochs, cfg.batch_size, cfg.warmup_epochs, cfg.betas, cfg.weight_decay) == (1000, 512, 1, (0.9, 0.95), 0.05)
    assert cfg.lr == pytest.approx(1e-4 * 512 / 256) and cfg.dirichlet_alpha == 1.0 and cfg.seg_class_dim == 64


def test_every_departure_from_the_paper_has_a_reason():
    assert mm.CHAPTER.unexplained_deviations() == []
    rows = {row["field"]: row for row in mm.CHAPTER.deviation_rows()}
    assert rows["probe_standardize"]["paper"] is False and rows["probe_standardize"]["full"] is True
    assert "num_visible" not in rows and "depth_loss" not in rows  # the full profile is the paper there
    # the authors' config fixes these, and full now follows it: no row
    assert not {"classification_tasks", "hflip_p", "min_lr", "decoder_heads", "drop_path_rate"} & set(rows)
    assert rows["amp"]["paper"] == "fp16" and rows["amp"]["full"] == "auto" and "bf16" in rows["amp"]["reason"]
    assert rows["mmearth_split"]["paper"] == rows["mmearth_split"]["full"] == "train"  # shown for the appendix's word
    assert rows["fmow_test_split"]["paper"] is None and rows["fmow_test_split"]["full"] == "val"
    table = mm.CHAPTER.deviations_table()
    assert list(table.columns) == ["paper", "where", "full profile", "why"] and set(table.index) == set(rows)
    wrong = dataclasses.replace(mm.CHAPTER, deviations={k: v for k, v in mm.DEVIATIONS.items() if k != "input_sets"})
    assert wrong.unexplained_deviations() == ["input_sets"]


def test_profiles_keep_todays_probe_and_baseline_behaviour():
    for name in ("tiny", "small", "full"):
        cfg = mm.CHAPTER.profile(name)
        assert cfg.profile == name and cfg.probe_standardize and cfg.random_init_seed_list == [cfg.seed]


# ------------------------------------------------------------------------------------- data of the protocols
def test_fmow_trains_on_a_recorded_seeded_tenth_of_its_training_split_at_64_px():
    root = dataset_root(tiny_cfg())
    task = mm.load_task(root, "fmow", seed=0)
    reader = FMoWSentinel(root / "fMoW-Sentinel", split="train")
    assert (task.kind, task.num_classes, task.train_split, task.test_split) == ("multiclass", 62, "train", "val")
    assert task.train_of == len(reader) and len(task.train) == round(0.1 * len(reader)) == len(task.train_indices)
    assert task.test_of == len(task.test) == len(FMoWSentinel(root / "fMoW-Sentinel", split="val"))
    assert list(task.train_indices) == sorted(set(task.train_indices))  # drawn without replacement
    assert list(task.train_ids) == [reader.rows[i]["id"] for i in task.train_indices]
    assert [task.train[i]["id"] for i in range(len(task.train))] == list(task.train_ids)
    sample = task.train[0]
    assert sample["s2"].shape == (13, 64, 64) and 0 <= int(sample["label"]) < 62
    assert mm.load_task(root, "fmow", seed=0).train_indices == task.train_indices  # seeded
    assert mm.load_task(root, "fmow", seed=1).train_indices != task.train_indices
    line = task.describe()
    assert "10% draw (seed 0)" in line and f"of the {len(reader)} samples of split 'train'" in line
    quarter = mm.load_task(root, "fmow", seed=0, fmow_fraction=0.25, fmow_image_size=32)
    assert len(quarter.train) == round(0.25 * len(reader)) and quarter.train[0]["s2"].shape == (13, 32, 32)
    other = mm.load_task(root, "m-eurosat")  # the other tasks use their whole splits
    assert other.train_fraction == 1.0 and len(other.train) == other.train_of and not other.is_subset


def test_the_fmow_draw_is_written_to_the_run_folder_and_counted(tmp_path):
    cfg = tiny_cfg(classification_tasks=("m-eurosat", "fmow"), segmentation_tasks=(), eval_max_train=0)
    tasks = mm.downstream_tasks(cfg)
    records = mm.record_task_data(tasks, tmp_path)
    fmow = next(t for t in tasks if t.name == "fmow")
    assert records["fmow"]["train"] == len(fmow.train) and records["fmow"]["train_of"] == fmow.train_of
    assert records["fmow"]["subset_file"] == "subsets/fmow.json" and "subset_file" not in records["m-eurosat"]
    saved = json.loads((tmp_path / "subsets" / "fmow.json").read_text())
    assert saved["indices"] == list(fmow.train_indices) and saved["ids"] == list(fmow.train_ids)
    assert (saved["train"], saved["train_fraction"], saved["seed"]) == (len(fmow.train), 0.1, 0)
    assert saved["test_split"] == "val"
    assert mm.record_task_data(tasks, None)["fmow"]["train"] == len(fmow.train)  # no folder: nothing written
    assert sorted(p.name for p in (tmp_path / "subsets").iterdir()) == ["fmow.json"]


def test_fmow_goes_through_both_protocols_with_62_classes(tmp_path):
    cfg = eval_cfg(classification_tasks=("fmow",), segmentation_tasks=(), eval_max_train=0)
    tasks = mm.downstream_tasks(cfg)
    scores, _ = mm.evaluate_downstream(seeded(lambda: mm.build_encoder(cfg), 0), tasks, cfg, checkpoint_dir=tmp_path)
    assert set(scores) == {("fmow", "OA", "rgb", "linear probing"), ("fmow", "OA", "rgb", "end-to-end")}
    assert all(0.0 <= v <= 100.0 for v in scores.values())
    _, model = mm.evaluate_task(seeded(lambda: mm.build_encoder(cfg), 0), tasks[0], "rgb", cfg)
    assert model.head.out_features == 62


def test_a_smoke_run_reads_a_handful_of_every_dataset_of_the_full_profile(capsys):
    cfg = mm.CHAPTER.profile("full", smoke=True)
    pretraining = mm.pretraining_dataset(cfg)
    assert len(pretraining) == SMOKE_SAMPLES and set(mm.MODALITIES) <= set(pretraining[0])
    assert f"pretraining on {SMOKE_SAMPLES} of its" in mm.describe_pretraining(cfg, pretraining)
    tasks = mm.downstream_tasks(cfg)
    assert [t.name for t in tasks] == [*cfg.classification_tasks, *cfg.segmentation_tasks]
    for task in tasks:
        assert 0 < len(task.train) <= SMOKE_SAMPLES and 0 < len(task.test) <= SMOKE_SAMPLES, task.name
        assert len(task.train_indices) == len(task.train) and len(task.test_indices) == len(task.test)
    full = mm.downstream_tasks(dataclasses.replace(cfg, smoke=False))
    for small, whole in zip(tasks, full):  # the smoke keeps the first samples of what the full run uses
        assert small.train_indices == whole.train_indices[:len(small.train)]
        assert small.train[0]["id"] == whole.train[0]["id"]
    assert mm.evaluation_checkpoint_dir(cfg, "ckpt") is None and "no checkpoints" in capsys.readouterr().out
    assert str(mm.evaluation_checkpoint_dir(dataclasses.replace(cfg, smoke=False), "ckpt")) == "ckpt"


def test_mmearth_split_picks_the_rows_pretrained_on():
    rows = {split: len(mm.pretraining_dataset(tiny_cfg(mmearth_split=split))) for split in ("train", "val", "test")}
    assert len(mm.pretraining_dataset(tiny_cfg(mmearth_split="all"))) == sum(rows.values())
    assert "split 'val'" in mm.describe_pretraining(tiny_cfg(mmearth_split="val"),
                                                    mm.pretraining_dataset(tiny_cfg(mmearth_split="val")))


def test_only_the_segmentation_models_the_figures_need_are_kept():
    cfg = eval_cfg(classification_tasks=(), input_sets=("rgb", "rgb+ired+sired+eb"), probe_epochs=1)
    tasks = mm.downstream_tasks(cfg)
    encoder = seeded(lambda: mm.build_encoder(cfg), 0)
    scores, kept = mm.evaluate_downstream(encoder, tasks, cfg)
    assert list(kept) == [("m-landcover-seg", "rgb")] and len(scores) == 4  # every cell scored, one model kept
    _, every = mm.evaluate_downstream(encoder, tasks, cfg, keep_models=None)
    assert list(every) == [("m-landcover-seg", "rgb"), ("m-landcover-seg", "rgb+ired+sired+eb")]
