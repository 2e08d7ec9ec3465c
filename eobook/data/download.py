"""Resumable, verified downloads of the datasets listed in ``data/registry/*.json``.

A registry file describes one dataset::

    {"name": "...", "citation": "...", "licence": "...",
     "files": [{"url": "https://...", "path": "relative/name.zip", "size": 123, "sha256": "..."}]}

``download(name, root)`` fetches each file into ``root/<path>`` through ``<path>.part``: an interrupted
download resumes with an HTTP ``Range`` request, and the file is renamed into place only after its
size and sha256 match the registry. A mismatch raises :class:`DataError` naming the file, the expected
and the actual value, and keeps nothing corrupt under the final name.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

from ..runtime import require_free_disk
from .base import DataError

REGISTRY_DIR = Path(__file__).resolve().parents[2] / "data" / "registry"
CHUNK = 1 << 20


def registry(directory: Path = REGISTRY_DIR) -> dict[str, dict]:
    """All registry entries by name."""
    entries = {}
    for path in sorted(Path(directory).glob("*.json")):
        entry = json.loads(path.read_text())
        entries[entry["name"]] = entry
    return entries


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, size: int | None, sha256: str | None, timeout: float = 60) -> Path:
    """Download ``url`` to ``target`` resuming ``target.part``; verify size and sha256, then rename."""
    if target.is_file() and (sha256 is None or sha256_of(target) == sha256):
        return target
    part = target.with_name(target.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if size is not None:
        require_free_disk(part.parent, size - have)
    if size is None or have < size:
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status != 206:  # the server ignored Range: start over
                have = 0
            with part.open("ab" if have else "wb") as f:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
    got = part.stat().st_size
    if size is not None and got != size:
        raise DataError(part, f"size {got} bytes, the registry says {size} ({url})")
    digest = sha256_of(part)
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise DataError(target, f"sha256 {digest}, the registry says {sha256} ({url}); the download was removed")
    os.replace(part, target)
    return target


def download(name: str, root: Path, directory: Path = REGISTRY_DIR) -> list[Path]:
    """Fetch every file of registry entry ``name`` into ``root``."""
    entries = registry(directory)
    if name not in entries:
        raise DataError(directory, f"no dataset {name!r} in the registry; it has {sorted(entries)}")
    return [fetch(f["url"], Path(root) / f["path"], f.get("size"), f.get("sha256")) for f in entries[name]["files"]]
