"""Downloads: resumable (HTTP Range) and verified (md5 and/or sha256), against a loopback HTTP server."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest

from eobook.data import DataError
from eobook.data.download import ALGORITHMS, REGISTRY_DIR, check_entry, digests_of, download, fetch, registry

PAYLOAD = bytes(range(256)) * 400  # 100 kB
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):
        RangeHandler.requests.append(self.headers.get("Range", ""))
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if start >= len(PAYLOAD):
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start:])

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
        assert isinstance(entry.get("note", ""), str) and entry.get("source")
        paths = [f["path"] for f in entry["files"]]
        assert len(set(paths)) == len(paths)
        for f in entry["files"]:
            assert f["url"].startswith("https://") and f["path"]
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
