"""Tests of Chapter 3, MultiMAE meets EO (eobook.methods.multimae_eo): band groups, Dirichlet masking,
adapters and decoders, eq. (1), SEG resizing, training, resume and the downstream readers."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from eobook.config import ConfigError, get_profile
from eobook.data import MMEARTH_S2_BANDS, MODALITY_BANDS, S2_L1C_BANDS, GeoBench, MMEarth, dataset_root, real_data_root
from eobook.methods import multimae_eo as mm
from eobook.train import TrainConfig, fit

SIZE, PATCH = 16, 4  # 16 tokens per modality


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


class Ctx:
    def __init__(self, seed=0):
        self.generator = torch.Generator().manual_seed(seed)


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
    cfg = get_profile("multimae_eo", "tiny")
    ds = MMEarth(dataset_root(cfg) / "MMEarth" / cfg.mmearth_file, split="train", normalize=False)
    raw = torch.from_numpy(ds.raw_sample(0)["s2"])[None]
    sample, groups = ds[0], mm.split_s2(raw, MMEARTH_S2_BANDS)
    for m in mm.SPECTRAL_MODALITIES:
        assert torch.equal(sample[m], groups[m][0])


def test_split_s2_refuses_missing_bands_and_wrong_shapes():
    with pytest.raises(ValueError, match="B11"):
        mm.modality_band_indices([b for b in S2_L1C_BANDS if b != "B11"])
    with pytest.raises(ValueError, match="s2"):
        mm.split_s2(torch.zeros(1, 12, 4, 4), S2_L1C_BANDS)


# ------------------------------------------------------------------------------------- masking
def test_dirichlet_allocation_sums_to_the_visible_budget_and_spreads():
    counts = mm.dirichlet_token_allocation(2000, 6, 49, alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert counts.dtype == torch.int64 and counts.shape == (2000, 6)
    assert (counts.sum(1) == 49).all() and (counts >= 0).all()
    assert torch.allclose(counts.float().mean(0), torch.full((6,), 49 / 6), atol=0.6)  # symmetric
    # alpha = 1 is uniform on the simplex: a share is Beta(1, 5), so a modality rounds to 0 tokens with
    # P(share < 1/98) = 1 - (97/98)^5 ~ 5%, and some modality of a sample holds more than half with ~6 * 3%
    assert 0.03 < (counts == 0).float().mean() < 0.08
    assert 0.1 < (counts > 24).any(dim=1).float().mean() < 0.3
    concentrated = mm.dirichlet_token_allocation(2000, 6, 49, alpha=100.0, generator=torch.Generator().manual_seed(0))
    assert concentrated.float().std() < counts.float().std() / 3


def test_dirichlet_allocation_is_reproducible_from_the_generator_and_validates():
    a = mm.dirichlet_token_allocation(8, 6, 49, generator=torch.Generator().manual_seed(3))
    b = mm.dirichlet_token_allocation(8, 6, 49, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="alpha"):
        mm.dirichlet_token_allocation(8, 6, 49, alpha=0.0)


def test_visible_tokens_follow_the_counts_and_are_uniform_within_a_modality():
    counts = torch.tensor([[3, 0, 5, 0, 0, 0], [0, 0, 0, 0, 0, 8]] * 500)
    visible = mm.visible_token_mask(counts, 16, torch.Generator().manual_seed(0))
    assert torch.equal(visible.sum(-1), counts)
    freq = visible[::2, 0].float().mean(0)  # each of 16 positions chosen with probability 3/16
    assert torch.allclose(freq, torch.full((16,), 3 / 16), atol=0.06)
    keep = mm.visible_indices(visible[:2])
    assert keep.shape == (2, 8) and (keep.diff(dim=1) > 0).all()
    assert (keep[0] // 16).tolist() == [0, 0, 0, 2, 2, 2, 2, 2] and (keep[1] // 16 == 5).all()


# ------------------------------------------------------------------------------------- model
def test_adapters_and_decoders_have_the_shapes_of_all_six_modalities():
    model, batch = tiny_model(), make_batch()
    inputs = model.prepare(batch)
    visible, keep = model.sample_masks(4, torch.Generator().manual_seed(0), torch.device("cpu"))
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
    visible, keep = model.sample_masks(4, torch.Generator().manual_seed(1), torch.device("cpu"))
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
    visible, keep = model.sample_masks(4, torch.Generator().manual_seed(0), torch.device("cpu"))
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
    pred = mm.patchify(logits, 2).reshape(1, 1, -1)
    expected = F.cross_entropy(logits, target)
    got = mm.reconstruction_loss("seg", pred, target, torch.tensor([[True]]), 2)
    assert got == pytest.approx(float(expected), rel=1e-6)


# ------------------------------------------------------------------------------------- resizing
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


def test_flip_is_the_same_in_every_modality():
    batch = make_batch(b=16)
    flipped = mm.random_hflip(batch, 0.5, torch.Generator().manual_seed(0))
    was_flipped = torch.tensor([torch.equal(flipped["rgb"][i], batch["rgb"][i].flip(-1)) for i in range(16)])
    assert 0 < was_flipped.sum() < 16
    for m in mm.MODALITIES:
        for i in range(16):
            expected = batch[m][i].flip(-1) if was_flipped[i] else batch[m][i]
            assert torch.equal(flipped[m][i], expected)


# ------------------------------------------------------------------------------------- training
def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model, batch = tiny_model(), make_batch(b=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(8):
        out = model(batch, Ctx(seed=0))  # same masks and flips every step
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
    cfg = get_profile("multimae_eo", "tiny")
    task = mm.load_task(dataset_root(cfg), "m-eurosat", max_train=8, max_test=4)
    assert task.kind == "multiclass" and len(task.train) == 8 and len(task.test) == 4
    batch = torch.utils.data.default_collate([task.train[i] for i in range(4)])
    assert batch["label"].shape == (4,)
    inputs = mm.task_inputs(batch, task.band_order, mm.INPUT_SETS["rgb+ired+sired+eb"], SIZE)
    assert sorted(inputs) == ["eb", "ired", "rgb", "sired"] and inputs["sired"].shape == (4, 2, SIZE, SIZE)
    with pytest.raises(ValueError, match="depth"):
        mm.task_inputs(batch, task.band_order, mm.INPUT_SETS["rgb+ired+depth"], SIZE)


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
    assert batch["label"].shape == (len(ds),)


# ------------------------------------------------------------------------------------- profiles
@pytest.mark.parametrize("field, value", [("num_visible", 17), ("depth_loss", "huber"), ("hflip_p", 1.5),
                                          ("input_sets", ("rgb", "nir")), ("patch_size", 6),
                                          ("decoder_dim", 30)])
def test_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        get_profile("multimae_eo", "tiny", **{field: value})


def test_full_profile_has_the_papers_settings():
    cfg = get_profile("multimae_eo", "full")
    assert (cfg.img_size, cfg.patch_size, cfg.num_visible) == (56, 8, 49)
    assert 6 * (cfg.img_size // cfg.patch_size) ** 2 == 294
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.decoder_dim, cfg.decoder_depth) == (768, 12, 12, 128, 2)
    assert (cfg.epochs, cfg.batch_size, cfg.warmup_epochs, cfg.betas, cfg.weight_decay) == (1000, 512, 1, (0.9, 0.95), 0.05)
    assert cfg.lr == pytest.approx(1e-4 * 512 / 256) and cfg.dirichlet_alpha == 1.0 and cfg.seg_class_dim == 64
