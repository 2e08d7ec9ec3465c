"""Resumable, verified downloads of the datasets listed in ``data/registry/*.json``.

A registry file describes one dataset::

    {"name": "...", "citation": "...", "licence": "...", "source": "where the facts come from",
     "files": [{"url": "https://...", "path": "relative/name.zip", "size": 123,
                "md5": "...", "sha256": "...", "source": "where this file's checksum/size come from"}]}

Each file carries whichever checksums its provider publishes: ``md5`` (Zenodo, torchgeo) and/or
``sha256`` (Hugging Face LFS); ``size`` is in bytes. Unknown values are ``null``. A file whose URL
could not be confirmed in an official source says ``"verified_url": false`` with a ``url_note``.

``download(name, root)`` fetches each file into ``root/<path>`` through ``<path>.part``: an interrupted
download resumes with an HTTP ``Range`` request, and the file is renamed into place only after its
size and every recorded checksum match the registry (all checksums are computed in one pass over the
file). A mismatch raises :class:`DataError` naming the file, the algorithm, the expected and the actual
value, and removes the bad download, so nothing corrupt is kept under the final name.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from ..runtime import require_free_disk
from .base import DataError

REGISTRY_DIR = Path(__file__).resolve().parents[2] / "data" / "registry"
CHUNK = 1 << 20
#: Checksum algorithms a registry file may carry, with the length of their hex digest.
ALGORITHMS = {"md5": 32, "sha256": 64}
_HEX = re.compile(r"[0-9a-f]+")


def check_entry(entry: dict, where: str | os.PathLike = "registry") -> dict:
    """Raise :class:`DataError` unless ``entry`` is a well-formed registry entry; return it."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise DataError(where, "a registry entry needs a string 'name'")
    files = entry.get("files")
    if not isinstance(files, list) or not files:
        raise DataError(where, f"{entry['name']}: 'files' must be a non-empty list")
    for i, f in enumerate(files):
        label = f"{entry['name']} file {i} ({f.get('path') if isinstance(f, dict) else f!r})"
        if not isinstance(f, dict):
            raise DataError(where, f"{label}: not an object")
        for key in ("url", "path"):
            if not isinstance(f.get(key), str) or not f[key]:
                raise DataError(where, f"{label}: '{key}' must be a non-empty string")
        if Path(f["path"]).is_absolute() or ".." in Path(f["path"]).parts:
            raise DataError(where, f"{label}: 'path' must stay inside the download root")
        size = f.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise DataError(where, f"{label}: 'size' must be a positive integer (bytes) or null, not {size!r}")
        for algorithm, length in ALGORITHMS.items():
            value = f.get(algorithm)
            if value is not None and not (isinstance(value, str) and len(value) == length
                                          and _HEX.fullmatch(value)):
                raise DataError(where, f"{label}: '{algorithm}' must be {length} lower-case hex digits or null, "
                                       f"not {value!r}")
    return entry


def registry(directory: Path = REGISTRY_DIR) -> dict[str, dict]:
    """All registry entries by name (each checked with :func:`check_entry`)."""
    entries = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(path, f"not valid JSON: {err}") from None
        entries[entry.get("name")] = check_entry(entry, path)
    return entries


def digests_of(path: Path, algorithms=("sha256",)) -> dict[str, str]:
    """Hex digests of ``path`` for every algorithm in ``algorithms``, in one pass over the file."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for h in hashers.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashers.items()}


def sha256_of(path: Path) -> str:
    return digests_of(path, ("sha256",))["sha256"]


def _mismatches(path: Path, expected: dict[str, str]) -> list[tuple[str, str, str]]:
    """(algorithm, expected, actual) for every recorded checksum that ``path`` does not match."""
    actual = digests_of(path, tuple(expected))
    return [(name, want, actual[name]) for name, want in expected.items() if actual[name] != want.lower()]


def fetch(url: str, target: Path, size: int | None = None, sha256: str | None = None,
          timeout: float = 60, md5: str | None = None) -> Path:
    """Download ``url`` to ``target`` resuming ``target.part``; verify size and checksums, then rename.

    Every checksum given (``sha256``, ``md5``) must match; a file that matches one but not the other is
    refused like any other mismatch.
    """
    target = Path(target)
    expected = {name: value for name, value in (("md5", md5), ("sha256", sha256)) if value is not None}
    if target.is_file() and (size is None or target.stat().st_size == size) \
            and (not expected or not _mismatches(target, expected)):
        return target
    part = target.with_name(target.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:  # longer than the real file: cannot be a prefix of it
        part.unlink()
        have = 0
    if size is not None:
        require_free_disk(part.parent, size - have)
    if size is None or have < size:
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status != 206:  # the server ignored Range: start over
                    have = 0
                with part.open("ab" if have else "wb") as f:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
        except urllib.error.HTTPError as err:
            if not (err.code == 416 and have):  # 416 on a resume: the .part is already complete
                raise DataError(target, f"HTTP {err.code} {err.reason} from {url}") from None
    got = part.stat().st_size
    if size is not None and got != size:
        raise DataError(part, f"size {got} bytes, the registry says {size} ({url}); "
                              "run the download again to resume")
    bad = _mismatches(part, expected) if expected else []
    if bad:
        part.unlink()
        detail = "; ".join(f"{name} {actual}, the registry says {want}" for name, want, actual in bad)
        raise DataError(target, f"checksum mismatch: {detail} ({url}); the download was removed")
    os.replace(part, target)
    return target


def download(name: str, root: Path, directory: Path = REGISTRY_DIR) -> list[Path]:
    """Fetch every file of registry entry ``name`` into ``root``."""
    entries = registry(directory)
    if name not in entries:
        raise DataError(directory, f"no dataset {name!r} in the registry; it has {sorted(entries)}")
    return [fetch(f["url"], Path(root) / f["path"], f.get("size"), f.get("sha256"), md5=f.get("md5"))
            for f in entries[name]["files"]]
