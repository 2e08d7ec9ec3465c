"""Downloads: resumable (HTTP Range), verified (md5 and/or sha256), with progress bars, unpacked (tar, tar.gz, .bz2,
.xz, zip, split archives) into the readers' layout and checked; Hugging Face hub files from a prepared offline cache.
Everything runs against a loopback HTTP server or local files: never the internet."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from eobook.data import DataError, ensure_sample_world
from eobook.data.download import (ALGORITHMS, REGISTRY_DIR, STATE, archive_groups, check_download, check_entry,
                                  digests_of, download, extract, fetch, hub_file, registry)

PAYLOAD = bytes(range(256)) * 400  # 100 kB
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []
    files: dict[str, bytes] = {}  # path -> bytes; every other path serves PAYLOAD

    def do_GET(self):
        RangeHandler.requests.append(self.headers.get("Range", ""))
        body = RangeHandler.files.get(self.path, PAYLOAD)
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if start >= len(body):
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_resume_with_range(server, tmp_path):
    target = tmp_path / "x.bin"
    (tmp_path / "x.bin.part").write_bytes(PAYLOAD[:30000])  # an interrupted earlier download
    RangeHandler.requests.clear()
    fetch(f"{server}/x.bin", target, len(PAYLOAD), SHA256, md5=MD5)
    assert target.read_bytes() == PAYLOAD and RangeHandler.requests == ["bytes=30000-"]
    assert not (tmp_path / "x.bin.part").exists()


def test_resume_of_a_complete_part_with_unknown_size(server, tmp_path):
    (tmp_path / "x.bin.part").write_bytes(PAYLOAD)  # finished, but not yet verified and renamed
    fetch(f"{server}/x.bin", tmp_path / "x.bin", None, None, md5=MD5)  # the server answers 416
    assert (tmp_path / "x.bin").read_bytes() == PAYLOAD


def test_md5_match_passes(server, tmp_path):
    target = fetch(f"{server}/x.bin", tmp_path / "x.bin", len(PAYLOAD), None, md5=MD5)
    assert target.read_bytes() == PAYLOAD
    RangeHandler.requests.clear()
    fetch(f"{server}/x.bin", target, len(PAYLOAD), None, md5=MD5)  # verified file in place: no request
    assert RangeHandler.requests == []


def test_md5_mismatch_is_refused_and_removed(server, tmp_path):
    with pytest.raises(DataError, match="md5") as info:
        fetch(f"{server}/x.bin", tmp_path / "x.bin", len(PAYLOAD), None, md5="0" * 32)
    message = str(info.value)
    assert "x.bin" in message and "0" * 32 in message and MD5 in message and "removed" in message
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "x.bin.part").exists()


def test_sha256_and_size_mismatch_are_refused(server, tmp_path):
    with pytest.raises(DataError, match="sha256") as info:
        fetch(f"{server}/x.bin", tmp_path / "x.bin", len(PAYLOAD), "0" * 64)
    assert "x.bin" in str(info.value) and not (tmp_path / "x.bin").exists()
    assert not (tmp_path / "x.bin.part").exists()
    with pytest.raises(DataError, match="size"):
        fetch(f"{server}/x.bin", tmp_path / "y.bin", len(PAYLOAD) + 1, None)


@pytest.mark.parametrize("md5, sha256, wrong", [(MD5, "f" * 64, "sha256"), ("f" * 32, SHA256, "md5")])
def test_one_of_two_checksums_wrong_is_refused(server, tmp_path, md5, sha256, wrong):
    with pytest.raises(DataError, match=wrong) as info:
        fetch(f"{server}/x.bin", tmp_path / "x.bin", len(PAYLOAD), sha256, md5=md5)
    right = "md5" if wrong == "sha256" else "sha256"
    assert f"{right} " not in str(info.value)  # only the failing algorithm is reported
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "x.bin.part").exists()


def test_a_corrupt_file_in_place_is_fetched_again(server, tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"not the payload")
    fetch(f"{server}/x.bin", target, len(PAYLOAD), SHA256, md5=MD5)
    assert target.read_bytes() == PAYLOAD


def test_digests_in_one_pass(tmp_path):
    path = tmp_path / "p.bin"
    path.write_bytes(PAYLOAD)
    assert digests_of(path, ("md5", "sha256")) == {"md5": MD5, "sha256": SHA256}


def test_registry_entry_download(server, tmp_path):
    entry = {"name": "toy", "files": [{"url": f"{server}/a.bin", "path": "toy/a.bin", "size": len(PAYLOAD),
                                       "md5": MD5, "sha256": SHA256, "source": "test"}]}
    (tmp_path / "toy.json").write_text(json.dumps(entry))
    paths = download("toy", tmp_path / "root", directory=tmp_path)
    assert paths[0].read_bytes() == PAYLOAD
    entry["files"][0]["md5"] = "1" * 32
    (tmp_path / "toy.json").write_text(json.dumps(entry))
    with pytest.raises(DataError, match="md5"):
        download("toy", tmp_path / "other", directory=tmp_path)


@pytest.mark.parametrize("change", [
    {"md5": "abc"}, {"md5": "A" * 32}, {"sha256": "0" * 63}, {"sha256": "g" * 64}, {"size": 0},
    {"size": "12"}, {"size": True}, {"url": ""}, {"path": None}, {"path": "../escape.bin"},
    {"hub": {"repo": "a/b", "file": "c"}}, {"strip_components": -1},
])
def test_malformed_entries_are_refused(change):
    entry = {"name": "toy", "files": [{"url": "https://example.org/a", "path": "a", "size": None, **change}]}
    with pytest.raises(DataError):
        check_entry(entry)


def test_shipped_registry_is_well_formed():
    entries = registry()
    assert {"BigEarthNet-MM", "SSL4EO-S12", "MMEarth", "GEO-Bench", "SEN12MS", "EuroSAT-MS"} <= set(entries)
    assert len(list(REGISTRY_DIR.glob("*.json"))) == len(entries)  # one file per name, no duplicates
    for entry in entries.values():
        assert isinstance(entry.get("note", ""), str) and entry.get("source") and entry.get("licence")
        assert entry.get("reader") and entry.get("check")  # every dataset is checked after its download
        paths = [f["path"] for f in entry["files"]]
        assert len(set(paths)) == len(paths)
        for f in entry["files"]:
            assert f.get("url", "https://").startswith("https://") and f["path"]
            assert not f["path"].startswith(entry["name"] + "/")  # paths are inside the dataset's folder
            assert f["size"] is None or (type(f["size"]) is int and f["size"] > 0)
            for algorithm, length in ALGORITHMS.items():
                value = f.get(algorithm)
                assert value is None or (len(value) == length and int(value, 16) >= 0), (f["path"], algorithm)
            has_checksum = any(f.get(a) for a in ALGORITHMS)
            assert f.get("source") or entry.get("source")
            # an entry without any checksum must say why in its note
            assert has_checksum or "checksum" in entry["note"].lower()
            if f.get("verified_url") is False:
                assert f.get("url_note"), f"{f['path']}: unverified URL without a reason"


def test_the_registry_travels_inside_the_package():
    import eobook

    assert REGISTRY_DIR == Path(eobook.__file__).parent / "data" / "registry"


# --------------------------------------------------------------------------------------------------
# Progress, archives, a whole dataset
# --------------------------------------------------------------------------------------------------
def test_a_progress_bar_shows_size_and_rate(server, tmp_path, capsys):
    fetch(f"{server}/x.bin", tmp_path / "x.bin", len(PAYLOAD), SHA256, progress=True)
    err = capsys.readouterr().err
    assert "x.bin: 100%" in err and "100k/100k" in err and "B/s" in err  # 102,400 bytes in KiB, and the rate
    assert "verify x.bin" in err


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


MEMBERS = {"top/a/one.txt": b"one", "top/b/two.txt": b"two" * 1000}


@pytest.mark.parametrize("name, data", [
    ("x.tar", _tar(MEMBERS, "w")), ("x.tar.gz", _tar(MEMBERS, "w:gz")), ("x.tgz", _tar(MEMBERS, "w:gz")),
    ("x.tar.bz2", _tar(MEMBERS, "w:bz2")), ("x.tar.xz", _tar(MEMBERS, "w:xz")), ("x.zip", _zip(MEMBERS)),
])
def test_archives_unpack_with_and_without_their_top_folder(tmp_path, name, data):
    archive = tmp_path / name
    archive.write_bytes(data)
    extract([archive], tmp_path / "kept", progress=False)
    assert (tmp_path / "kept" / "top" / "b" / "two.txt").read_bytes() == b"two" * 1000
    extract([archive], tmp_path / "stripped", strip_components=1, progress=False)
    assert (tmp_path / "stripped" / "a" / "one.txt").read_bytes() == b"one"


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_split_archives_unpack_as_one(tmp_path, kind):
    data = _tar(MEMBERS) if kind == "tar" else _zip(MEMBERS)
    name = "x.tar.gz" if kind == "tar" else "x.zip"
    pieces = []
    step = len(data) // 3 + 1
    for i, start in enumerate(range(0, len(data), step)):
        pieces.append(tmp_path / f"{name}.parta{'abc'[i]}")
        pieces[-1].write_bytes(data[start:start + step])
    assert len(pieces) == 3
    extract(pieces, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "top" / "b" / "two.txt").read_bytes() == b"two" * 1000


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "top/../../evil.txt"])
def test_members_outside_the_folder_are_refused(tmp_path, member):
    for name, data in [("x.tar.gz", _tar({member: b"x"})), ("x.zip", _zip({member: b"x"}))]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match="outside"):
            extract([tmp_path / name], tmp_path / "out", progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_archive_groups():
    assert archive_groups(["a.tar.gz.partab", "a.tar.gz.partaa", "b.zip", "c.csv", "d/e.tar"]) == {
        "a.tar.gz": ["a.tar.gz.partaa", "a.tar.gz.partab"], "b.zip": ["b.zip"], "d/e.tar": ["d/e.tar"]}


def _eurosat_archive() -> bytes:
    """The sample world's EuroSAT-MS class folders under one top folder, as a tar.gz (a small real layout)."""
    world = ensure_sample_world("tiny", 0) / "EuroSAT-MS"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(world.rglob("*.tif")):
            tar.add(path, arcname=f"EuroSAT_MS/{path.relative_to(world)}")
    return buffer.getvalue()


def test_a_dataset_downloads_unpacks_into_the_readers_layout_and_checks(server, tmp_path):
    data = _eurosat_archive()
    half = len(data) // 2
    parts = {"/e/eurosat.tar.gz.partaa": data[:half], "/e/eurosat.tar.gz.partab": data[half:]}
    RangeHandler.files.update(parts)
    files = [{"url": f"{server}{url}", "path": url.rsplit("/", 1)[1], "size": len(body), "strip_components": 1,
              "md5": hashlib.md5(body).hexdigest(), "source": "test"} for url, body in parts.items()]
    entry = {"name": "Toy-EuroSAT", "licence": "MIT", "reader": "EuroSATMS", "check": [{"split": "train"}],
             "source": "test", "files": files}
    registry_folder = tmp_path / "registry"
    registry_folder.mkdir()
    (registry_folder / "toy.json").write_text(json.dumps(entry))
    root = tmp_path / "datasets" / "EuroSAT-MS"
    download("Toy-EuroSAT", root, directory=registry_folder, progress=False, keep_archives=False)
    assert (root / "Forest").is_dir() and not list(root.glob("*.part*"))  # unpacked, archives deleted
    reports = check_download("Toy-EuroSAT", root, directory=registry_folder, progress=False)
    expected = sum(1 for p in (ensure_sample_world("tiny", 0) / "EuroSAT-MS").rglob("*.tif"))
    assert reports[0]["failed"] == 0 and 0 < reports[0]["samples"] < expected  # the train split of all of them
    RangeHandler.requests.clear()
    download("Toy-EuroSAT", root, directory=registry_folder, progress=False, keep_archives=False)
    assert RangeHandler.requests == []  # verified and unpacked before: nothing fetched again
    assert json.loads((root / STATE).read_text())["extracted"] == ["eurosat.tar.gz"]


def test_the_cli_downloads_and_checks(server, tmp_path, monkeypatch, capsys):
    from eobook.__main__ import main
    from eobook.data import download as module

    body = _zip({"Forest/Forest_1.tif": b"not a tif"})
    RangeHandler.files["/cli/bad.zip"] = body
    entry = {"name": "Toy", "licence": "MIT", "reader": "EuroSATMS", "check": [{"split": "train"}], "source": "test",
             "files": [{"url": f"{server}/cli/bad.zip", "path": "bad.zip", "size": len(body), "source": "test",
                        "md5": hashlib.md5(body).hexdigest()}]}
    (tmp_path / "toy.json").write_text(json.dumps(entry))
    monkeypatch.setattr(module, "REGISTRY_DIR", tmp_path)
    monkeypatch.setenv("EOBOOK_DATASETS_DIR", str(tmp_path / "datasets"))
    status = main(["data", "download", "Toy"])
    out, err = capsys.readouterr()
    assert str(tmp_path / "datasets" / "Toy" / "bad.zip") in out and "data_root=" in err
    assert status in (1, 2) and "Forest" in out + err  # the check names what it could not read


# --------------------------------------------------------------------------------------------------
# The Hugging Face hub, offline: a prepared cache
# --------------------------------------------------------------------------------------------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(cache: Path, repo: str, repo_type: str, files: dict[str, bytes]) -> None:
    """The hub's cache layout: <type>s--owner--name/{refs/main, snapshots/<commit>/<file>}."""
    folder = cache / f"{repo_type}s--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        target = folder / "snapshots" / COMMIT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def test_hub_datasets_come_from_the_hub_cache_and_unpack(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    body = _zip({"dw_train/label_dw/a.txt": b"label"})
    cache = tmp_path / "hub"
    _hub_cache(cache, "owner/toy", "dataset", {"zips/toy.zip": body})
    entry = {"name": "HubToy", "licence": "CC-BY-4.0", "source": "test",
             "files": [{"hub": {"repo": "owner/toy", "type": "dataset", "file": "zips/toy.zip", "revision": "main"},
                        "path": "toy.zip", "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}]}
    (tmp_path / "hub.json").write_text(json.dumps(entry))
    root = tmp_path / "HubToy"
    download("HubToy", root, directory=tmp_path, progress=False, hub_cache=cache)
    assert (root / "toy.zip").read_bytes() == body and (root / "dw_train" / "label_dw" / "a.txt").is_file()
    entry["files"][0]["sha256"] = "0" * 64
    (tmp_path / "hub.json").write_text(json.dumps(entry))
    with pytest.raises(DataError, match="sha256"):
        download("HubToy", tmp_path / "other", directory=tmp_path, progress=False, hub_cache=cache)


def test_hub_weights_are_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = b"weights" * 100
    _hub_cache(tmp_path, "owner/model", "model", {"model.safetensors": weights})
    path = hub_file("owner/model", "model.safetensors", sha256=hashlib.sha256(weights).hexdigest(), cache_dir=tmp_path)
    assert path.read_bytes() == weights
    with pytest.raises(DataError, match="checksum"):
        hub_file("owner/model", "model.safetensors", md5="0" * 32, cache_dir=tmp_path)
    with pytest.raises(DataError, match="hf://owner/model/missing.bin"):
        hub_file("owner/model", "missing.bin", cache_dir=tmp_path)
