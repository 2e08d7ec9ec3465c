"""The authors' released weights: safe reading, strict key mapping, loading into the book's models (checked
against the same tensors put in by hand), the registry, the CLI and the download (on a loopback server)."""
import argparse
import dataclasses
import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading

import pytest
import timm
import torch
from torch import nn

from authors_checkpoints import (cromss_checkpoint, dino_mm_checkpoint, resnet50_layout, softcon_checkpoint,
                                 vit_layout, write_checkpoint)
from eobook import weights as W
from eobook.chapters import CHAPTERS, get_chapter, get_profile
from eobook.config import ConfigError
from eobook.methods import cromss as cr
from eobook.methods import dino_mm as dm
from eobook.methods import softcon as sc
from eobook.nn.vit import last_blocks_cls

ALL_RELEASED = [e for chapter in CHAPTERS.values() for e in chapter.released]


# --------------------------------------------------------------------------------------------------
# Reading: tensors and declared metadata only
# --------------------------------------------------------------------------------------------------
class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_reading_refuses_a_file_that_pickles_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": Exploit()}, path)
    with pytest.raises(W.WeightsError, match=r"evil\.pth: pickles \[.*system'\], which the book does not load"):
        W.read_checkpoint(path, ("argparse.Namespace",))


def test_reading_keeps_declared_metadata_as_inert_data_and_refuses_undeclared(tmp_path):
    path = tmp_path / "dino.pth"
    torch.save({"teacher": {"w": torch.arange(3.0)}, "args": argparse.Namespace(lr=5e-4, arch="vit_small")}, path)
    with pytest.raises(W.WeightsError, match="argparse.Namespace"):
        W.read_checkpoint(path)
    state = W.read_checkpoint(path, ("argparse.Namespace",))
    assert torch.equal(state["teacher"]["w"], torch.arange(3.0))
    assert isinstance(state["args"], W.Metadata) and state["args"].state == {"lr": 5e-4, "arch": "vit_small"}


def test_reading_names_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(W.WeightsError, match="notes.pth: not a PyTorch checkpoint"):
        W.read_checkpoint(path)
    with pytest.raises(W.WeightsError, match="missing.pth: no such file"):
        W.read_checkpoint(tmp_path / "missing.pth")


def test_lightning_hyper_parameters_are_read_without_lightning(tmp_path):
    state = cromss_checkpoint(tmp_path / "c.ckpt", "late", 9)
    assert "lightning_fabric" not in sys.modules
    back = W.read_checkpoint(tmp_path / "c.ckpt", cr.RELEASED[0].metadata_types)
    assert back["hyper_parameters"]["args"].state["fuse_type"] == "lat"
    assert torch.equal(back["state_dict"]["net.model2.encoder.conv1.weight"],
                       state["state_dict"]["net.model2.encoder.conv1.weight"])


# --------------------------------------------------------------------------------------------------
# Mapping and strict loading
# --------------------------------------------------------------------------------------------------
def test_flatten_gives_dotted_names_of_tensors_and_other_leaves():
    tensors, other = W.flatten({"teacher": {"backbone.w": torch.ones(1)}, "opt": [{"lr": 0.1}], "epoch": 3})
    assert list(tensors) == ["teacher.backbone.w"] and other == {"opt.0.lr": 0.1, "epoch": 3}


def test_keymap_renames_in_order_and_skips_with_a_reason():
    keymap = W.KeyMap(skip=((r"^optimizer\.", "optimiser state"),),
                      rename=((r"^student\.module\.", "student."), (r"weight_g$", "original0")))
    mapped, skipped, unmatched = keymap.apply({"student.module.head.weight_g": torch.ones(1),
                                               "optimizer.state.0": torch.ones(1), "stray": torch.ones(1)})
    assert list(mapped) == ["student.head.original0"]
    assert skipped == {"optimiser state": ["optimizer.state.0"]} and unmatched == ["stray"]


def test_load_strict_names_every_problem_and_loads_nothing_on_error():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    before = [p.clone() for p in model.parameters()]
    bad = {"0.weight": torch.ones(3, 2), "0.bias": torch.ones(4), "2.weight": torch.ones(1, 3), "extra": torch.ones(1)}
    keymap = W.KeyMap(rename=((r"^(0|1|2)\.", r"\1."),))
    with pytest.raises(W.WeightsError) as err:
        W.load_strict(model, bad, keymap, "bad.pth")
    message = str(err.value)
    for part in ("bad.pth", "checkpoint keys no rule maps: extra", "mapped keys the model lacks: 2.weight",
                 "model keys the checkpoint does not fill: 1.bias, 1.weight", "0.bias (4,) vs (3,)"):
        assert part in message
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_load_strict_fills_a_shared_module_under_both_names():
    shared = nn.Linear(2, 2)
    model = nn.ModuleDict({"a": nn.Sequential(shared), "b": nn.Sequential(shared)})
    report = W.load_strict(model, {"w": torch.full((2, 2), 3.0), "b": torch.zeros(2)},
                           W.KeyMap(rename=((r"^w$", "b.0.weight"), (r"^b$", "b.0.bias"))), "tied.pth")
    assert report.loaded == 2 and torch.equal(model["a"][0].weight, torch.full((2, 2), 3.0))


# --------------------------------------------------------------------------------------------------
# The registry and the profiles
# --------------------------------------------------------------------------------------------------
def test_the_registry_lists_the_three_papers_releases_with_their_numbers():
    names = {e.name for e in ALL_RELEASED}
    assert {"dino-mm-vits8-s1s2", "softcon-rn50-ms", "softcon-vits14-ms", "softcon-vitb14-ms", "softcon-rn50-sar",
            "softcon-vits14-sar", "softcon-vitb14-sar", "cromss-13b-midf", "cromss-13b-latef", "cromss-9b-midf",
            "cromss-9b-latef"} == names
    assert {e.chapter for e in ALL_RELEASED} == {"dino_mm", "softcon", "cromss"}
    vits_ms = next(e for e in ALL_RELEASED if e.name == "softcon-vits14-ms")
    assert vits_ms.reported == {"BigEarthNet-10% linear mAP": 85.0, "EuroSAT linear OA": 97.1}
    assert dm.RELEASED[0].reported["linear mAP 100% S1+S2"] == dm.PAPER_TABLE2["DINO-MM"][("100%", "S1+S2")]
    assert cr.RELEASED[0].reported and all(e.url.startswith("https://huggingface.co/") for e in ALL_RELEASED)


def test_init_sets_the_fields_the_weights_need_and_refuses_contradictions():
    cfg = get_profile("softcon", "full", init="authors:softcon-rn50-sar")
    assert (cfg.arch, cfg.modality, cfg.mask_ratio, cfg.weights, cfg.ablation_lambdas) == \
        ("resnet50", "s1", 0.0, "", ())
    assert get_profile("dino_mm", "tiny", init="authors:dino-mm-vits8-s1s2").embed_dim == 384
    with pytest.raises(ConfigError, match=r"contradicts s2_bands=13 \(the weights need 9\)"):
        get_profile("cromss", "full", init="authors:cromss-9b-midf", s2_bands=13)
    with pytest.raises(ConfigError, match="valid: \\['authors:dino-mm-vits8-s1s2'\\]"):
        get_profile("dino_mm", "full", init="authors:softcon-rn50-ms")
    with pytest.raises(ConfigError, match="its authors released none"):
        get_profile("fus_mae", "full", init="authors:anything")
    with pytest.raises(ConfigError, match="init: expected 'pretrain' or 'authors:<name>'"):
        get_profile("dino_mm", "full", init="teacher")


# --------------------------------------------------------------------------------------------------
# Each chapter's files into its model: zero unexplained keys, the same features as by hand
# --------------------------------------------------------------------------------------------------
def test_dino_mm_checkpoint_loads_whole_and_its_teacher_encodes_as_by_hand(tmp_path):
    entry = dm.RELEASED[0]
    state = dino_mm_checkpoint(tmp_path / entry.file)
    cfg = get_profile("dino_mm", "full", init=entry.init)
    module = dm.DINOMM(cfg)
    report = dm.load_released(module, entry, W.read_checkpoint(tmp_path / entry.file, entry.metadata_types))
    assert report.loaded == len(module.state_dict())
    assert list(report.skipped) == ["optimiser state, not needed to evaluate"]
    assert set(report.adapted) == {"teacher.backbone.pos_embed", "student.backbone.pos_embed"}

    by_hand = dm.build_backbone(cfg)
    teacher = {k.removeprefix("backbone."): v for k, v in state["teacher"].items() if k.startswith("backbone.")}
    grid = torch.nn.functional.interpolate(teacher["pos_embed"][:, 1:].reshape(1, 28, 28, 384).permute(0, 3, 1, 2),
                                           size=(16, 16), mode="bicubic", antialias=True)
    teacher["pos_embed"] = torch.cat([teacher["pos_embed"][:, :1], grid.permute(0, 2, 3, 1).reshape(1, 256, 384)], 1)
    by_hand.load_state_dict(teacher)
    x = torch.rand(2, 14, 112, 112)
    with torch.no_grad():
        assert torch.allclose(last_blocks_cls(module.teacher.backbone.eval(), x), last_blocks_cls(by_hand.eval(), x),
                              atol=1e-6)
    g, v = state["teacher"]["head.last_layer.weight_g"], state["teacher"]["head.last_layer.weight_v"]
    assert torch.allclose(module.teacher.head.last_layer.weight, g * v / v.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(module.student.backbone.blocks[3].attn.qkv.weight,
                       state["student"]["module.backbone.blocks.3.attn.qkv.weight"])
    assert torch.equal(module.loss.center, state["dino_loss"]["center"])


@pytest.mark.parametrize("name", ["softcon-vits14-ms", "softcon-rn50-ms"])
def test_softcon_backbone_loads_and_encodes_as_by_hand(name, tmp_path):
    entry = next(e for e in sc.RELEASED if e.name == name)
    state = softcon_checkpoint(tmp_path / entry.file, entry.fields["arch"], 13)
    cfg = get_profile("softcon", "full", init=entry.init)
    module = sc.pretraining_module(cfg)
    report = sc.load_released(module, entry, W.read_checkpoint(tmp_path / entry.file))
    assert report.loaded == len(module.encoder.net.state_dict())
    assert list(report.skipped) == (["DINOv2's mask token for masked-image pretraining, unused to encode"]
                                    if "vit" in name else [])
    by_hand = timm.create_model(cfg.arch, pretrained=False, in_chans=13, num_classes=0,
                                **({"img_size": 224} if "vit" in name else {}))
    by_hand.load_state_dict({k: v for k, v in state.items() if k != "mask_token"})
    x = torch.rand(2, 13, 224, 224)
    with torch.no_grad():
        ours = module.encoder.eval()(x)
        assert torch.allclose(ours, by_hand.eval()(x), atol=1e-5)
        assert torch.allclose(module.momentum_branch.encoder.eval()(x), ours)


@pytest.mark.parametrize("name", [e.name for e in sc.RELEASED])
def test_every_softcon_file_maps_with_no_unexplained_key(name, tmp_path):
    entry = next(e for e in sc.RELEASED if e.name == name)
    softcon_checkpoint(tmp_path / entry.file, entry.fields["arch"], 13 if entry.fields["modality"] == "s2c" else 2)
    module = sc.pretraining_module(get_profile("softcon", "full", init=entry.init))
    report = sc.load_released(module, entry, W.read_checkpoint(tmp_path / entry.file))
    assert report.loaded == len(module.encoder.net.state_dict()) and not report.adapted


@pytest.mark.parametrize("entry", cr.RELEASED, ids=lambda e: e.name)
def test_cromss_checkpoint_loads_both_unets_and_encoders_as_by_hand(entry, tmp_path):
    import segmentation_models_pytorch as smp

    fusion, bands = entry.fields["fusion"], entry.fields["s2_bands"]
    state = cromss_checkpoint(tmp_path / entry.file, fusion, bands)["state_dict"]
    module = cr.build_module(get_profile("cromss", "full", init=entry.init))
    report = cr.load_released(module, entry, W.read_checkpoint(tmp_path / entry.file, entry.metadata_types))
    assert list(report.skipped) == ["Lightning training state"]
    prefixes = {"middle": {"s1": "net.encoder1.", "s2": "net.encoder."},
                "late": {"s1": "net.model1.encoder.", "s2": "net.model2.encoder."}}[fusion]
    x = {"s1": torch.rand(1, 2, 64, 64), "s2": torch.rand(1, bands, 64, 64)}
    for modality, prefix in prefixes.items():
        by_hand = smp.encoders.get_encoder("resnet50", in_channels=x[modality].shape[1], depth=5, weights=None)
        by_hand.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
        with torch.no_grad():
            ours, theirs = module.encoder(modality).eval()(x[modality]), by_hand.eval()(x[modality])
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))
    decoder = ("net.decoder" if fusion == "middle" else "net.model1.decoder") + ".blocks.0.conv1.0.weight"
    assert torch.equal(module.unets["s1"].decoder.blocks[0].conv1[0].weight, state[decoder])
    assert (module.unets["s1"].decoder is module.unets["s2"].decoder) == (fusion == "middle")


def test_a_layout_that_does_not_fit_names_the_keys(tmp_path):
    entry = next(e for e in sc.RELEASED if e.name == "softcon-vits14-ms")
    state = {k: torch.zeros(v) for k, v in vit_layout(384, 11, 14, 13, 224, layer_scale=True).items()}
    torch.save(state, tmp_path / entry.file)
    module = sc.pretraining_module(get_profile("softcon", "full", init=entry.init))
    with pytest.raises(W.WeightsError, match=r"model keys the checkpoint does not fill: net\.blocks\.11|blocks\.11\."):
        sc.load_released(module, entry, W.read_checkpoint(tmp_path / entry.file))
    rn = {k: torch.zeros(v) for k, v in resnet50_layout(12).items()}
    torch.save(rn, tmp_path / "rn.pth")
    rn_entry = next(e for e in sc.RELEASED if e.name == "softcon-rn50-ms")
    rn_module = sc.pretraining_module(get_profile("softcon", "full", init=rn_entry.init))
    with pytest.raises(W.WeightsError, match=r"conv1\.weight \(64, 12, 7, 7\) vs \(64, 13, 7, 7\)"):
        sc.load_released(rn_module, rn_entry, W.read_checkpoint(tmp_path / "rn.pth"))


def test_pretrain_with_authors_init_loads_instead_of_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EOBOOK_WEIGHTS_DIR", str(tmp_path))
    entry = next(e for e in sc.RELEASED if e.name == "softcon-rn50-sar")
    cfg = get_profile("softcon", "full", init=entry.init, smoke=True)
    with pytest.raises(W.WeightsError, match="is not there and this run downloads nothing"):
        sc.CHAPTER.pretrain(cfg, None)
    path = write_checkpoint(entry, tmp_path)
    module, result = sc.CHAPTER.pretrain(cfg, None)
    assert result.steps == 0 and result.history == []
    assert torch.equal(module.encoder.net.conv1.weight, W.read_checkpoint(path)["conv1.weight"])
    assert "no pretraining in this run" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Download, CLI
# --------------------------------------------------------------------------------------------------
class _Server(http.server.ThreadingHTTPServer):
    payload = b""
    etag = ""


class _Handler(http.server.BaseHTTPRequestHandler):
    """As the Hugging Face hub: ``/resolve/...`` redirects to the storage with the file's hash in
    ``X-Linked-Etag``; the storage (``/cdn/...``) sends the bytes with an ETag of its own."""

    def _headers(self):
        if self.path.startswith("/resolve/"):
            self.send_response(302)
            self.send_header("Location", self.path.replace("/resolve/", "/cdn/"))
            if self.server.etag:
                self.send_header("X-Linked-Etag", f'"{self.server.etag}"')
            self.send_header("Content-Length", "0")
        else:
            self.send_response(200)
            self.send_header("ETag", '"storage-etag-1"')
            self.send_header("Content-Length", str(len(self.server.payload)))
        self.end_headers()
        return self.path.startswith("/cdn/")

    def do_HEAD(self):
        self._headers()

    def do_GET(self):
        if self._headers():
            self.wfile.write(self.server.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def _entry_at(server, sha256: str = "") -> W.Released:
    url = f"http://127.0.0.1:{server.server_port}/resolve/main/w.pth"
    return dataclasses.replace(dm.RELEASED[0], url=url, sha256=sha256)


def test_download_is_verified_against_the_servers_published_hash(server, tmp_path, monkeypatch):
    monkeypatch.setenv("EOBOOK_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    server.payload = buffer.getvalue()
    server.etag = hashlib.sha256(server.payload).hexdigest()
    path = W.download(_entry_at(server), progress=False)
    assert path == tmp_path / "dino_mm" / dm.RELEASED[0].file and path.read_bytes() == server.payload
    assert path.with_name(path.name + ".sha256").read_text().startswith(server.etag)

    path.unlink()
    server.etag = "0" * 64
    with pytest.raises(W.WeightsError, match="checksum mismatch"):
        W.download(_entry_at(server), progress=False)
    assert not path.exists()
    server.etag = ""
    with pytest.raises(W.WeightsError, match="publishes no SHA-256"):
        W.download(_entry_at(server), progress=False)
    assert W.download(_entry_at(server, hashlib.sha256(server.payload).hexdigest()), progress=False).is_file()


def test_download_is_refused_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("EOBOOK_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(W.WeightsError, match="downloads are off"):
        W.download(dm.RELEASED[0])


def test_cli_lists_every_released_file_with_its_numbers(tmp_path):
    env = os.environ | {"EOBOOK_WEIGHTS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "eobook", "weights", "list"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    for entry in ALL_RELEASED:
        assert f"{entry.name}  [{get_chapter(entry.chapter).number}. {entry.chapter}; -p init=authors:{entry.name}" \
            in done.stdout
    assert "BigEarthNet-10% linear mAP 85.0, EuroSAT linear OA 97.1" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "eobook", "weights", "download", "nope"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "unknown weights ['nope']" in bad.stderr


def test_evaluation_cost_counts_flops_of_a_known_layer():
    assert W.forward_gflops(nn.Linear(100, 10, bias=False), torch.zeros(4, 100)) == pytest.approx(2 * 100 * 10 / 1e9)
    assert W.gpu_minutes(1000.0, 60 * 989 * 0.35) == pytest.approx(1.0)
