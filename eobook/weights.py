"""The authors' released weights: a registry, downloads, safe reading and strict loading into the book's models.

Three of the five papers published their pretrained encoders (DINO-MM, SoftCon, CromSS). Each paper's package
declares its files as :class:`Released` records (``eobook.methods.<paper>.weights``) together with the function
that maps the file's keys onto the chapter's own model; this module holds what they share:

* where a file lives (``$EOBOOK_WEIGHTS_DIR/<chapter>/<file>``, default ``~/.cache/eobook/weights``) and its
  download (:func:`download`: progress bar, resume, SHA-256 checked against the registry or, where the registry
  has none, against the hash the server publishes for the file, Hugging Face's ``X-Linked-Etag``);
* :func:`read_checkpoint`: ``torch.load(weights_only=True)``, so that loading never unpickles arbitrary objects.
  The metadata objects some checkpoints carry beside their tensors (DINO's ``argparse.Namespace`` of training
  arguments, Lightning's ``AttributeDict`` of hyper-parameters) are read into inert stand-ins named by the
  registry entry, never imported; any other pickled type is refused by name;
* :func:`flatten` and :class:`KeyMap`: a nested checkpoint becomes dotted tensor names, renamed by ordered regex
  rules into the book's names; keys the book does not need are skipped only with a stated reason;
* :func:`load_strict`: every missing or unexpected key and every shape mismatch is reported by name, nothing is
  loaded partially.

``init="authors:<name>"`` in a chapter's profile (:meth:`eobook.config.Chapter.pretrain`) puts a released file
into the chapter's pretraining module instead of training it, so that the chapter's own evaluation runs on it.
"""
from __future__ import annotations

import collections
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

#: The spelling of a released-weights initialisation in a profile's ``init`` field.
AUTHORS_PREFIX = "authors:"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class WeightsError(ValueError):
    """A released-weights file that cannot be found, read or mapped onto the book's model (one line, naming it)."""


@dataclass(frozen=True)
class Released:
    """One file of pretrained weights published by a paper's authors.

    Args:
        name: the book's name for it (``python -m eobook weights list``; ``init=authors:<name>``).
        chapter: the chapter whose model it loads into.
        url: where the authors publish it (a direct download).
        file: its file name on disk.
        licence: the licence of the authors' repository.
        encoder: what it holds, in the paper's words (``ViT-S/8, 14 bands``).
        bands: the input channels in the order the weights expect.
        input_px: the input side the authors trained at.
        normalisation: how the authors scaled the input (the book's readers do the same).
        reported: the paper's or README's numbers for these weights, by metric name.
        reported_source: where ``reported`` comes from.
        fields: the profile fields the weights fix (model shape, input bands); applied to the profile.
        metadata_types: pickled metadata classes the file holds beside its tensors (read as inert stand-ins).
        sha256: the file's SHA-256, "" where the registry has none (the server's published hash is used).
        notes: what a user should know (what the authors released and what they did not).
    """

    name: str
    chapter: str
    url: str
    file: str
    licence: str
    encoder: str
    bands: tuple[str, ...]
    input_px: int
    normalisation: str
    reported: dict[str, float]
    reported_source: str
    fields: dict[str, Any] = field(default_factory=dict)
    metadata_types: tuple[str, ...] = ()
    sha256: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.sha256 and not _SHA256.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        unknown = [t for t in self.metadata_types if t not in METADATA_STANDINS]
        if unknown:
            raise ValueError(f"{self.name}: metadata_types {unknown} have no stand-in; "
                             f"known: {sorted(METADATA_STANDINS)}")

    @property
    def init(self) -> str:
        """The profile value that evaluates these weights: ``authors:<name>``."""
        return AUTHORS_PREFIX + self.name


def released_name(init: str) -> str | None:
    """``"authors:<name>"`` -> ``<name>``; ``"pretrain"`` -> None."""
    return init[len(AUTHORS_PREFIX):] if init.startswith(AUTHORS_PREFIX) else None


def source_label(init: str) -> str:
    """What produced the evaluated encoder, as the results tables label it: "this run" (the chapter's own
    pretraining) or "authors' weights, this book's protocol"."""
    return "this run" if init == "pretrain" else "authors' weights, this book's protocol"


def encoder_name(method: str, init: str) -> str:
    """``method`` ("DINO-MM"), or ``"DINO-MM, authors' weights (<name>)"`` for a released file."""
    return method if init == "pretrain" else f"{method}, authors' weights ({released_name(init)})"


# --------------------------------------------------------------------------------------------------
# Where the files live, and their download
# --------------------------------------------------------------------------------------------------
def weights_dir() -> Path:
    """``$EOBOOK_WEIGHTS_DIR``, or ``~/.cache/eobook/weights``."""
    env = os.environ.get("EOBOOK_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eobook" / "weights"


def local_path(entry: Released) -> Path:
    return weights_dir() / entry.chapter / entry.file


def offline() -> bool:
    """True where downloads are switched off (``HF_HUB_OFFLINE=1``, as in tests and smoke runs)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the redirect's own headers are wanted, not those of the storage it points to


def published_sha256(url: str, timeout: float = 60) -> str | None:
    """The SHA-256 the server publishes for ``url`` without sending the file: Hugging Face answers a HEAD
    request on ``resolve/`` with a redirect to its storage carrying ``X-Linked-Etag`` (the hash of the Git LFS
    file), so the redirect is not followed; a plain ``ETag`` of 64 hex digits counts too."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as response:
            headers = response.headers
    except urllib.error.HTTPError as err:
        if not 300 <= err.code < 400:
            raise WeightsError(f"{url}: HTTP {err.code} {err.reason}") from None
        headers = err.headers
    except (urllib.error.URLError, OSError) as err:
        raise WeightsError(f"{url}: cannot reach the server ({err})") from None
    for name in ("X-Linked-Etag", "ETag"):
        value = (headers.get(name) or "").strip().strip('"').removeprefix("W/").strip('"').lower()
        if _SHA256.match(value):
            return value
    return None


def download(entry: Released, progress: bool | None = None) -> Path:
    """Download ``entry`` to :func:`local_path` (progress bar, resumable ``.part``), verified against its SHA-256:
    the registry's, or the one the server publishes. A file without either is refused (nothing unverified is
    kept). Returns the path; a file already there and verified is not downloaded again."""
    from .data.base import DataError
    from .data.download import fetch

    target = local_path(entry)
    if offline():
        raise WeightsError(f"{entry.name}: downloads are off (HF_HUB_OFFLINE=1); place {entry.file} at {target} "
                           f"or run `python -m eobook weights download {entry.name}` online")
    sha256 = entry.sha256 or published_sha256(entry.url)
    if not sha256:
        raise WeightsError(f"{entry.name}: {entry.url} publishes no SHA-256 and the registry records none; "
                           "refusing an unverified file")
    try:
        path = fetch(entry.url, target, sha256=sha256, progress=progress)
    except DataError as err:
        raise WeightsError(str(err)) from None
    target.with_name(target.name + ".sha256").write_text(f"{sha256}  {entry.file}\n")
    return path


def checkpoint_file(entry: Released, allow_download: bool) -> Path:
    """The local file of ``entry``, downloading it where allowed (never in smoke runs or offline)."""
    path = local_path(entry)
    if path.is_file():
        return path
    if not allow_download or offline():
        raise WeightsError(f"{entry.name}: {path} is not there and this run downloads nothing; run "
                           f"`python -m eobook weights download {entry.name}` (or set EOBOOK_WEIGHTS_DIR)")
    return download(entry)


# --------------------------------------------------------------------------------------------------
# Reading: tensors only, metadata as inert stand-ins
# --------------------------------------------------------------------------------------------------
class Metadata:
    """Inert stand-in for a pickled metadata object (e.g. ``argparse.Namespace``): keeps its state as data,
    runs none of its code."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"Metadata({getattr(self, 'state', None)!r})"


#: Pickled metadata classes that checkpoints carry, and what reads them. Dict subclasses become ordered dicts
#: (the restricted unpickler fills only real dicts); anything else becomes :class:`Metadata`.
METADATA_STANDINS: dict[str, type] = {
    "argparse.Namespace": Metadata,
    "lightning_fabric.utilities.data.AttributeDict": collections.OrderedDict,
    "pytorch_lightning.utilities.parsing.AttributeDict": collections.OrderedDict,
}


def read_checkpoint(path: str | os.PathLike, metadata_types: tuple[str, ...] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` with the pickled ``metadata_types`` read as inert stand-ins.

    Raises:
        WeightsError: the file is missing, not a torch file, or pickles a type outside tensors, containers and
            ``metadata_types`` (named in the message; such a file is never unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # not a zip-format torch file
        raise WeightsError(f"{path}: not a PyTorch checkpoint ({type(err).__name__}: {err})") from None
    refused = sorted(set(unsafe) - set(metadata_types))
    if refused:
        raise WeightsError(f"{path}: pickles {refused}, which the book does not load (only tensors, containers and "
                           f"the registry's metadata types {list(metadata_types)})")
    standins = [(METADATA_STANDINS[name], name) for name in metadata_types]
    try:
        with torch.serialization.safe_globals(standins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{path}: cannot be read with weights_only=True ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''})") from None


def flatten(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A nested checkpoint as dotted names: ``({name: tensor}, {name: other leaf})``.

    ``{"teacher": {"backbone.cls_token": t}, "epoch": 100}`` -> ``({"teacher.backbone.cls_token": t},
    {"epoch": 100})``. Lists are indexed (``optimizer_states.0...``).
    """
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, Any] = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else None
    if items is None:
        (tensors if isinstance(obj, torch.Tensor) else other)[prefix] = obj
        return tensors, other
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        t, o = flatten(value, name)
        tensors.update(t)
        other.update(o)
    return tensors, other


# --------------------------------------------------------------------------------------------------
# Mapping names, strict loading
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyMap:
    """How a checkpoint's dotted tensor names become the book's state-dict names.

    Args:
        skip: ``(regex, reason)``: checkpoint tensors the book does not load, and why (a key that matches
            neither ``skip`` nor ``rename`` is an error).
        rename: ``(regex, replacement)`` applied in order with :func:`re.sub` to every key not skipped; a key
            is loaded only if some rule matched it.
    """

    skip: tuple[tuple[str, str], ...] = ()
    rename: tuple[tuple[str, str], ...] = ()

    def apply(self, tensors: dict[str, torch.Tensor]
              ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], list[str]]:
        """``(renamed tensors, {reason: skipped keys}, keys no rule matched)``."""
        mapped: dict[str, torch.Tensor] = {}
        skipped: dict[str, list[str]] = {}
        unmatched: list[str] = []
        for key, value in tensors.items():
            reason = next((why for pattern, why in self.skip if re.search(pattern, key)), None)
            if reason is not None:
                skipped.setdefault(reason, []).append(key)
                continue
            new, hit = key, False
            for pattern, replacement in self.rename:
                new, n = re.subn(pattern, replacement, new)
                hit = hit or n > 0
            if hit:
                mapped[new] = value
            else:
                unmatched.append(key)
        return mapped, skipped, unmatched


@dataclass
class LoadReport:
    """What :func:`load_strict` did: tensors loaded, keys adapted (and how), checkpoint keys skipped by reason,
    the checkpoint's other entries (epoch, metadata)."""

    source: str
    loaded: int
    adapted: dict[str, str]
    skipped: dict[str, list[str]]
    other: list[str]

    def summary(self) -> str:
        parts = [f"{self.source}: {self.loaded} tensors loaded, 0 missing, 0 unexpected"]
        parts += [f"adapted {key} ({how})" for key, how in self.adapted.items()]
        parts += [f"skipped {len(keys)} ({why})" for why, keys in self.skipped.items()]
        if self.other:
            parts.append(f"other entries: {', '.join(self.other[:8])}{' ...' if len(self.other) > 8 else ''}")
        return "; ".join(parts)


#: ``(checkpoint tensor, the book's tensor) -> tensor of the book's shape`` for keys whose shape may differ.
Adapter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _names(keys: list[str], limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_strict(module: nn.Module, checkpoint: Any, keymap: KeyMap, source: str,
                adapters: dict[str, tuple[Adapter, str]] | None = None) -> LoadReport:
    """Load the tensors of ``checkpoint`` into ``module`` through ``keymap``, all of them or none.

    Args:
        adapters: ``{regex on the book's key: (function, what it does)}`` for tensors whose shape legitimately
            differs (a positional embedding of another grid); every other shape must match exactly.
    Raises:
        WeightsError: naming every checkpoint key no rule maps, every key of ``module`` the checkpoint does not
            fill, and every shape mismatch.
    """
    tensors, other = flatten(checkpoint)
    mapped, skipped, unmatched = keymap.apply(tensors)
    state = module.state_dict(keep_vars=True)
    target = {k: v.detach() for k, v in state.items()}
    tied = _fill_tied(state, mapped)
    adapted: dict[str, str] = {}
    for key, value in list(mapped.items()):
        if key in target and value.shape != target[key].shape:
            rule = next(((fn, how) for pattern, (fn, how) in (adapters or {}).items() if re.search(pattern, key)), None)
            if rule is not None:
                mapped[key] = rule[0](value, target[key])
                adapted[key] = f"{rule[1]}: {tuple(value.shape)} -> {tuple(target[key].shape)}"
    missing = sorted(set(target) - set(mapped))
    unexpected = sorted(set(mapped) - set(target))
    wrong = sorted(f"{k} {tuple(mapped[k].shape)} vs {tuple(target[k].shape)}" for k in set(mapped) & set(target)
                   if mapped[k].shape != target[k].shape)
    problems = [f"{label}: {_names(keys)}" for label, keys in (
        ("checkpoint keys no rule maps", unmatched), ("mapped keys the model lacks", unexpected),
        ("model keys the checkpoint does not fill", missing), ("shape mismatches", wrong)) if keys]
    if problems:
        raise WeightsError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict({k: v.to(target[k].dtype) for k, v in mapped.items()}, strict=True)
    top_level = sorted({key.split(".")[0] for key in other})
    return LoadReport(source, len(mapped) - len(tied), adapted, skipped, top_level)


def _fill_tied(state: dict[str, torch.Tensor], mapped: dict[str, torch.Tensor]) -> dict[str, str]:
    """A tensor shared by two submodules (one decoder serving two branches) is listed by ``state_dict`` (here
    ``state``, with ``keep_vars``) under each name: where ``mapped`` fills one of the names, give it the others
    too. Returns ``{filled: source}``."""
    names_of: dict[int, list[str]] = {}
    for key, value in state.items():
        names_of.setdefault(id(value), []).append(key)
    tied: dict[str, str] = {}
    for names in names_of.values():
        given = [n for n in names if n in mapped]
        for name in names:
            if given and name not in mapped:
                mapped[name], tied[name] = mapped[given[0]], given[0]
    return tied


def resample_pos_embed(prefix_tokens: int = 1) -> Adapter:
    """An adapter for ViT positional embeddings [1, prefix + g*g, D] of another square grid: the prefix tokens
    are kept and the grid is resampled bicubically (timm's ``resample_abs_pos_embed``, as the book's ViTs do for
    other input sizes)."""
    import timm

    def adapt(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        grid = int(round((like.shape[1] - prefix_tokens) ** 0.5))
        if grid * grid + prefix_tokens != like.shape[1] or value.shape[-1] != like.shape[-1]:
            return value  # not a square grid of the same width: left for the shape check to report
        return timm.layers.resample_abs_pos_embed(value, new_size=[grid, grid], num_prefix_tokens=prefix_tokens)

    return adapt


# --------------------------------------------------------------------------------------------------
# What a forward pass costs, for "how long does the evaluation take on one GPU"
# --------------------------------------------------------------------------------------------------
def forward_gflops(model: nn.Module, example: torch.Tensor) -> float:
    """GFLOP of one forward pass of ``model`` per sample of ``example`` (``torch.utils.flop_counter``; a
    multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example)
    return counter.get_total_flops() / 1e9 / example.shape[0]


def gpu_minutes(gflop_per_pass: float, passes: float, gpu_tflops: float = 989.0, mfu: float = 0.35) -> float:
    """Minutes one GPU needs for ``passes`` forward passes of ``gflop_per_pass`` at ``mfu`` of ``gpu_tflops``
    (default: an H100's dense bf16 peak at 35%). A backward pass costs about twice a forward: count it as 2."""
    return gflop_per_pass * 1e9 * passes / (gpu_tflops * 1e12 * mfu) / 60
