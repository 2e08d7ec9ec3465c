"""Downloads: resumable (HTTP Range) and verified, against a loopback HTTP server."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest

from eobook.data import DataError
from eobook.data.download import download, fetch, registry

PAYLOAD = bytes(range(256)) * 400  # 100 kB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):
        RangeHandler.requests.append(self.headers.get("Range", ""))
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
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
    fetch(f"{server}/x.bin", target, len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())
    assert target.read_bytes() == PAYLOAD and RangeHandler.requests == ["bytes=30000-"]


def test_checksum_mismatch_is_refused(server, tmp_path):
    with pytest.raises(DataError, match="sha256") as info:
        fetch(f"{server}/x.bin", tmp_path / "x.bin", len(PAYLOAD), "0" * 64)
    assert "x.bin" in str(info.value) and not (tmp_path / "x.bin").exists()
    with pytest.raises(DataError, match="size"):
        fetch(f"{server}/x.bin", tmp_path / "y.bin", len(PAYLOAD) + 1, None)


def test_registry_entry_download(server, tmp_path):
    entry = {"name": "toy", "files": [{"url": f"{server}/a.bin", "path": "toy/a.bin", "size": len(PAYLOAD),
                                       "sha256": hashlib.sha256(PAYLOAD).hexdigest()}]}
    (tmp_path / "toy.json").write_text(json.dumps(entry))
    paths = download("toy", tmp_path / "root", directory=tmp_path)
    assert paths[0].read_bytes() == PAYLOAD


def test_shipped_registry_is_complete():
    entries = registry()
    assert {"BigEarthNet-MM", "SSL4EO-S12", "MMEarth", "GEO-Bench", "SEN12MS", "EuroSAT-MS"} <= set(entries)
    for entry in entries.values():
        assert entry["files"] and all(f["url"].startswith("https://") for f in entry["files"])
