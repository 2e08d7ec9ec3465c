"""Downloads of the datasets in the registry (``eobook/data/registry/*.json``): progress, checksums, resume,
extraction into the layout the readers expect, then ``data check``.

A registry file describes one dataset::

    {"name": "BigEarthNet-MM", "citation": "...", "licence": "SPDX id or a sentence", "reader": "BigEarthNetMM",
     "check": [{"split": "train"}, ...], "source": "where the facts come from", "note": "...",
     "files": [{"url": "https://...", "path": "relative/name.tar.gz", "size": 123, "md5": "...", "sha256": "...",
                "source": "where this file's checksum/size come from"},
               {"hub": {"repo": "owner/name", "type": "dataset", "file": "in/the/repo.zip", "revision": "main"},
                "path": "repo.zip", ...}]}

``path`` is relative to the dataset's folder (``<data root>/<name>``, the folder ``data check --root`` takes and
the readers open). A file comes from ``url`` (HTTP with ``Range`` resume) or from a Hugging Face ``hub`` repository
(``hf_hub_download``: its cache, its resume, its token; the cache lies in the dataset folder, and the file is
hard-linked into place, so it takes no second copy). ``md5`` (what Zenodo and torchgeo publish) and/or ``sha256``
(Hugging Face LFS) are checked in one pass; ``size`` is in bytes; unknown values are ``null``. A URL that could
not be confirmed says ``"verified_url": false`` with a ``url_note``.

:func:`fetch` downloads ``url`` into ``<path>.part`` with a progress bar (size, rate), resumes an interrupted
``.part`` with an HTTP ``Range`` request and renames it into place only after the size and every recorded
checksum match; a mismatch raises :class:`DataError` naming the file, the algorithm, the expected and the actual
value, and removes the bad download.

:func:`download` then unpacks the archives (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``, ``.zip``,
and split archives ``<archive>.partaa``, ``.partab``, ... read in order as one stream, as SSL4EO-S12 ships
them) into the folder that holds them, dropping ``strip_components`` leading folders of every member, refusing
members that would land outside the dataset folder. What is verified and unpacked is recorded in
``.eobook-download.json`` in the dataset folder, so a second run skips it, even after ``keep_archives=False``
deleted the archives. :func:`check_download` runs ``data check`` on the result, once per entry of ``check``.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Iterable

from ..resources import registry_dir
from ..runtime import atomic_write_json, require_free_disk
from .base import DataError

REGISTRY_DIR = registry_dir()
CHUNK = 1 << 20
#: Checksum algorithms a registry file may carry, with the length of their hex digest.
ALGORITHMS = {"md5": 32, "sha256": 64}
_HEX = re.compile(r"[0-9a-f]+")
#: Archive suffixes and how they are read.
ARCHIVES = {".tar": "tar", ".tar.gz": "tar", ".tgz": "tar", ".tar.bz2": "tar", ".tbz2": "tar", ".tar.xz": "tar",
            ".txz": "tar", ".zip": "zip"}
#: ``<archive>.partaa``: one piece of a split archive (``split -b``), pieces read in name order.
PART = re.compile(r"^(?P<archive>.+)\.part(?P<piece>[a-z]{2,})$")
STATE = ".eobook-download.json"
HUB_TYPES = ("dataset", "model", "space")


def _progress_default() -> bool:
    return os.environ.get("EOBOOK_PROGRESS", "1") != "0"


def _bar(total: int | None, desc: str, progress: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=not progress, dynamic_ncols=True, leave=True)


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------
def check_entry(entry: dict, where: str | os.PathLike = "registry") -> dict:
    """Raise :class:`DataError` unless ``entry`` is a well-formed registry entry; return it."""
    from .readers import READERS

    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise DataError(where, "a registry entry needs a string 'name'")
    files = entry.get("files")
    if not isinstance(files, list) or not files:
        raise DataError(where, f"{entry['name']}: 'files' must be a non-empty list")
    if entry.get("reader") is not None and entry["reader"] not in READERS:
        raise DataError(where, f"{entry['name']}: 'reader' must be one of {sorted(READERS)}, not {entry['reader']!r}")
    for spec in entry.get("check", []):
        if not isinstance(spec, dict) or set(spec) - {"split", "task"}:
            raise DataError(where, f"{entry['name']}: each 'check' entry is an object with 'split' and/or 'task'")
    for i, f in enumerate(files):
        label = f"{entry['name']} file {i} ({f.get('path') if isinstance(f, dict) else f!r})"
        if not isinstance(f, dict):
            raise DataError(where, f"{label}: not an object")
        if not isinstance(f.get("path"), str) or not f["path"]:
            raise DataError(where, f"{label}: 'path' must be a non-empty string")
        if ("url" in f) == ("hub" in f):
            raise DataError(where, f"{label}: needs exactly one of 'url' and 'hub'")
        if "url" in f and (not isinstance(f["url"], str) or not f["url"]):
            raise DataError(where, f"{label}: 'url' must be a non-empty string")
        if "hub" in f:
            hub = f["hub"]
            if not isinstance(hub, dict) or not all(isinstance(hub.get(k), str) and hub[k] for k in ("repo", "file")) \
                    or hub.get("type", "dataset") not in HUB_TYPES or set(hub) - {"repo", "file", "type", "revision"}:
                raise DataError(where, f"{label}: 'hub' must be {{'repo', 'file', optional 'type' (one of "
                                       f"{HUB_TYPES}) and 'revision'}}, not {hub!r}")
        if Path(f["path"]).is_absolute() or ".." in Path(f["path"]).parts:
            raise DataError(where, f"{label}: 'path' must stay inside the download root")
        size = f.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise DataError(where, f"{label}: 'size' must be a positive integer (bytes) or null, not {size!r}")
        strip = f.get("strip_components", 0)
        if isinstance(strip, bool) or not isinstance(strip, int) or strip < 0:
            raise DataError(where, f"{label}: 'strip_components' must be a non-negative integer, not {strip!r}")
        for algorithm, length in ALGORITHMS.items():
            value = f.get(algorithm)
            if value is not None and not (isinstance(value, str) and len(value) == length
                                          and _HEX.fullmatch(value)):
                raise DataError(where, f"{label}: '{algorithm}' must be {length} lower-case hex digits or null, "
                                       f"not {value!r}")
    return entry


def registry(directory: Path | None = None) -> dict[str, dict]:
    """All registry entries by name (each checked with :func:`check_entry`), from ``directory`` (default: the
    registry shipped with the package, :data:`REGISTRY_DIR`)."""
    entries = {}
    for path in sorted(Path(directory or REGISTRY_DIR).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(path, f"not valid JSON: {err}") from None
        entries[entry.get("name")] = check_entry(entry, path)
    return entries


# --------------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------------
def digests_of(path: Path, algorithms=("sha256",), progress: bool = False) -> dict[str, str]:
    """Hex digests of ``path`` for every algorithm in ``algorithms``, in one pass over the file."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    path = Path(path)
    with path.open("rb") as f, _bar(path.stat().st_size, f"verify {path.name}", progress) as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            for h in hashers.values():
                h.update(block)
            bar.update(len(block))
    return {name: h.hexdigest() for name, h in hashers.items()}


def sha256_of(path: Path) -> str:
    return digests_of(path, ("sha256",))["sha256"]


def _mismatches(path: Path, expected: dict[str, str], progress: bool = False) -> list[tuple[str, str, str]]:
    """(algorithm, expected, actual) for every recorded checksum that ``path`` does not match."""
    actual = digests_of(path, tuple(expected), progress)
    return [(name, want, actual[name]) for name, want in expected.items() if actual[name] != want.lower()]


def _expected(md5: str | None, sha256: str | None) -> dict[str, str]:
    return {name: value for name, value in (("md5", md5), ("sha256", sha256)) if value is not None}


def _verify_and_place(part: Path, target: Path, size: int | None, expected: dict[str, str], origin: str,
                      progress: bool) -> Path:
    got = part.stat().st_size
    if size is not None and got != size:
        raise DataError(part, f"size {got} bytes, the registry says {size} ({origin}); "
                              "run the download again to resume")
    bad = _mismatches(part, expected, progress) if expected else []
    if bad:
        part.unlink()
        detail = "; ".join(f"{name} {actual}, the registry says {want}" for name, want, actual in bad)
        raise DataError(target, f"checksum mismatch: {detail} ({origin}); the download was removed")
    os.replace(part, target)
    return target


def _already_there(target: Path, size: int | None, expected: dict[str, str], progress: bool) -> bool:
    return target.is_file() and (size is None or target.stat().st_size == size) \
        and (not expected or not _mismatches(target, expected, progress))


# --------------------------------------------------------------------------------------------------
# One file: HTTP or the Hugging Face hub
# --------------------------------------------------------------------------------------------------
def fetch(url: str, target: Path, size: int | None = None, sha256: str | None = None,
          timeout: float = 60, md5: str | None = None, progress: bool | None = None) -> Path:
    """Download ``url`` to ``target`` resuming ``target.part``; verify size and checksums, then rename.

    Every checksum given (``sha256``, ``md5``) must match; a file that matches one but not the other is
    refused like any other mismatch. ``progress`` (default: unless ``EOBOOK_PROGRESS=0``) shows a bar with the
    size and the rate on stderr.
    """
    progress = _progress_default() if progress is None else progress
    target = Path(target)
    expected = _expected(md5, sha256)
    if _already_there(target, size, expected, progress):
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
                length = response.headers.get("Content-Length")
                total = size if size is not None else (have + int(length) if length and length.isdigit() else None)
                with part.open("ab" if have else "wb") as f, _bar(total, target.name, progress, have) as bar:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as err:
            if not (err.code == 416 and have):  # 416 on a resume: the .part is already complete
                raise DataError(target, f"HTTP {err.code} {err.reason} from {url}") from None
        except (urllib.error.URLError, OSError) as err:
            raise DataError(target, f"download from {url} failed ({err}); run it again to resume") from None
    return _verify_and_place(part, target, size, expected, url, progress)


def hub_file(repo: str, filename: str, *, repo_type: str = "model", revision: str | None = None,
             sha256: str | None = None, md5: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """A file of a Hugging Face hub repository (weights, by default) in the hub's cache, verified against the
    checksums given. ``HF_HUB_OFFLINE=1`` reads the cache only; ``cache_dir`` defaults to the hub's own
    (``HF_HOME``)."""
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(repo_id=repo, filename=filename, repo_type=repo_type, revision=revision,
                                    cache_dir=None if cache_dir is None else str(cache_dir)))
    except Exception as err:  # the hub raises its own errors (offline, not found, gated): name the file
        raise DataError(f"hf://{repo}/{filename}", f"{type(err).__name__}: {err}") from None
    expected = _expected(md5, sha256)
    bad = _mismatches(path, expected) if expected else []
    if bad:
        detail = "; ".join(f"{name} {actual}, expected {want}" for name, want, actual in bad)
        raise DataError(path, f"checksum mismatch of hf://{repo}/{filename}: {detail}")
    return path


def fetch_hub(hub: dict, target: Path, size: int | None = None, sha256: str | None = None, md5: str | None = None,
              cache_dir: str | os.PathLike | None = None, progress: bool | None = None) -> Path:
    """A registry file from the Hugging Face hub, placed at ``target`` (hard-linked from the hub's cache in
    ``cache_dir``, copied where a link is impossible) after its size and checksums are verified."""
    progress = _progress_default() if progress is None else progress
    target = Path(target)
    expected = _expected(md5, sha256)
    if _already_there(target, size, expected, progress):
        return target
    cached = hub_file(hub["repo"], hub["file"], repo_type=hub.get("type", "dataset"), revision=hub.get("revision"),
                      cache_dir=cache_dir).resolve()
    part = target.with_name(target.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.unlink(missing_ok=True)
    try:
        os.link(cached, part)
    except OSError:
        shutil.copyfile(cached, part)
    origin = f"hf://{hub['repo']}/{hub['file']}@{hub.get('revision') or 'main'}"
    return _verify_and_place(part, target, size, expected, origin, progress)


# --------------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------------
def archive_kind(name: str) -> str | None:
    """"tar" or "zip" for an archive's file name (or a split archive's name without ``.partaa``), else None."""
    lower = name.lower()
    for suffix in sorted(ARCHIVES, key=len, reverse=True):
        if lower.endswith(suffix):
            return ARCHIVES[suffix]
    return None


class _Pieces(io.RawIOBase):
    """Several files read as one (the pieces of a split archive), seekable, counting what is read."""

    def __init__(self, paths: list[Path], bar=None):
        self.paths, self.bar = paths, bar
        self.sizes = [p.stat().st_size for p in paths]
        self.total, self.pos, self.handle, self.index = sum(self.sizes), 0, None, -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.total}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        if self.pos >= self.total:
            return 0
        start, index = 0, 0
        while start + self.sizes[index] <= self.pos:
            start += self.sizes[index]
            index += 1
        if index != self.index:
            if self.handle is not None:
                self.handle.close()
            self.handle, self.index = self.paths[index].open("rb"), index
        self.handle.seek(self.pos - start)
        n = self.handle.readinto(memoryview(buffer)[: min(len(buffer), start + self.sizes[index] - self.pos)])
        self.pos += n
        if self.bar is not None:
            self.bar.update(n)
        return n

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        super().close()


def _member_target(dest: Path, name: str, strip: int, archive: Path) -> Path | None:
    """Where an archive member goes (None for what ``strip`` removes); refuses names that leave ``dest``."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise DataError(archive, f"member {name!r} would be written outside {dest}; refused")
    parts = parts[strip:]
    return dest.joinpath(*parts) if parts else None


def extract(pieces: list[Path], dest: Path, strip_components: int = 0, progress: bool | None = None) -> Path:
    """Unpack an archive (or the pieces of a split archive, in order) into ``dest``; return ``dest``."""
    progress = _progress_default() if progress is None else progress
    name = PART.match(pieces[0].name)["archive"] if PART.match(pieces[0].name) else pieces[0].name
    kind = archive_kind(name)
    if kind is None:
        raise DataError(pieces[0], f"not an archive this downloader unpacks ({', '.join(ARCHIVES)})")
    dest.mkdir(parents=True, exist_ok=True)
    with _bar(sum(p.stat().st_size for p in pieces), f"unpack {name}", progress) as bar, \
            contextlib.closing(_Pieces(pieces, bar)) as raw:
        stream = io.BufferedReader(raw, CHUNK)
        try:
            if kind == "tar":
                _extract_tar(stream, dest, strip_components, pieces[0])
            else:
                _extract_zip(stream, dest, strip_components, pieces[0])
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
            raise DataError(pieces[0], f"cannot unpack {name}: {type(err).__name__}: {err}") from None
    return dest


def _extract_tar(stream, dest: Path, strip: int, archive: Path) -> None:
    with tarfile.open(fileobj=stream, mode="r|*") as tar:  # one pass, in order: no seeking over terabytes
        for member in tar:
            target = _member_target(dest, member.name, strip, archive)
            if target is None:
                continue
            if member.islnk():
                link = _member_target(dest, member.linkname, strip, archive)
                if link is None:
                    continue
                member.linkname = str(link.relative_to(dest))
            member.name = str(target.relative_to(dest))
            if hasattr(tarfile, "data_filter"):  # refuses absolute and escaping links, device files, setuid bits
                tar.extract(member, dest, filter="data")
            elif member.isfile() or member.isdir():
                tar.extract(member, dest)


def _extract_zip(stream, dest: Path, strip: int, archive: Path) -> None:
    with zipfile.ZipFile(stream) as zf:
        for info in zf.infolist():
            target = _member_target(dest, info.filename, strip, archive)
            if target is None:
                continue
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)


def archive_groups(paths: Iterable[str]) -> dict[str, list[str]]:
    """Registry paths that are archives, grouped: ``{archive path: [its pieces in order]}`` (a plain archive is
    its own single piece; ``x.tar.gz.partaa``, ``.partab`` are the pieces of ``x.tar.gz``)."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        folder, name = os.path.split(path)
        match = PART.match(name)
        key = os.path.join(folder, match["archive"]) if match else path
        if archive_kind(os.path.basename(key)) is not None:
            groups.setdefault(key, []).append(path)
    return {key: sorted(pieces) for key, pieces in groups.items()}


# --------------------------------------------------------------------------------------------------
# A whole dataset
# --------------------------------------------------------------------------------------------------
def _load_state(root: Path) -> dict[str, Any]:
    try:
        state = json.loads((root / STATE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        state = {}
    state.setdefault("files", {})
    state.setdefault("extracted", [])
    return state


def download(name: str, root: str | os.PathLike, directory: Path | None = None, *, progress: bool | None = None,
             extract_archives: bool = True, keep_archives: bool = True,
             hub_cache: str | os.PathLike | None = None) -> list[Path]:
    """Fetch every file of registry entry ``name`` into ``root`` (the dataset's folder), verify it, unpack the
    archives into the readers' layout; returns the files fetched (an archive deleted after unpacking is still
    listed). ``hub_cache`` is where hub files are cached (default ``root/.cache/huggingface``, on the same disk,
    so that the files are hard-linked rather than copied)."""
    entries = registry(directory)
    if name not in entries:
        raise DataError(directory or REGISTRY_DIR, f"no dataset {name!r} in the registry; it has {sorted(entries)}")
    entry, root = entries[name], Path(root)
    root.mkdir(parents=True, exist_ok=True)
    state = _load_state(root)
    state["dataset"] = name
    hub_cache = Path(hub_cache) if hub_cache is not None else root / ".cache" / "huggingface"
    paths = []
    for f in entry["files"]:
        target = root / f["path"]
        record = {"size": f.get("size"), **_expected(f.get("md5"), f.get("sha256"))}
        known = state["files"].get(f["path"], {})
        done = {k: v for k, v in known.items() if k != "bytes"} == record
        group = next(iter(archive_groups([f["path"]])), None)
        if done and not target.exists() and group in state["extracted"]:
            paths.append(target)  # verified, unpacked and deleted by an earlier run
            continue
        if done and target.is_file() and target.stat().st_size == known.get("bytes"):
            paths.append(target)  # verified by an earlier run: not hashed again
            continue
        if "hub" in f:
            fetch_hub(f["hub"], target, f.get("size"), f.get("sha256"), f.get("md5"), hub_cache, progress)
        else:
            fetch(f["url"], target, f.get("size"), f.get("sha256"), md5=f.get("md5"), progress=progress)
        state["files"][f["path"]] = {**record, "bytes": target.stat().st_size}
        atomic_write_json(root / STATE, state)
        paths.append(target)
    if extract_archives:
        strip = {f["path"]: f.get("strip_components", 0) for f in entry["files"]}
        for archive, pieces in archive_groups(f["path"] for f in entry["files"]).items():
            if archive in state["extracted"]:
                continue
            extract([root / p for p in pieces], (root / archive).parent, strip[pieces[0]], progress)
            state["extracted"].append(archive)
            atomic_write_json(root / STATE, state)
            if not keep_archives:
                for piece in pieces:
                    (root / piece).unlink(missing_ok=True)
    return paths


def check_download(name: str, root: str | os.PathLike, directory: Path | None = None,
                   progress: bool | None = None) -> list[dict[str, Any]]:
    """``data check`` of a downloaded dataset, once per entry of its registry ``check`` list; the reports (a root
    in another layout gives ``{"error": ...}`` instead)."""
    from .check import LayoutError, check

    progress = _progress_default() if progress is None else progress
    entry = registry(directory)[name]
    if not entry.get("reader"):
        return []
    reports = []
    for spec in entry.get("check") or [{}]:
        try:
            reports.append(check(entry["reader"], Path(root), spec.get("split"), spec.get("task"), progress))
        except (LayoutError, ValueError) as err:
            reports.append({"dataset": entry["reader"], "root": str(root), **spec, "error": str(err)})
    return reports
