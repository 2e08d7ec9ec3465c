"""The commands the README, the Reproducibility page and the chapters' text show are real: every `python -m eobook ...` and
`torchrun ... -m eobook ...` line of their code blocks parses with the CLI's own parser (torchrun's with
torchrun's), names real chapters, profiles, datasets and benchmarks, and overrides (`-p key=value`) real fields
with valid values."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from eobook.__main__ import build_parser, parse_assignments, released_weights
from eobook.chapters import chapter_names, get_profile
from eobook.config import PROFILE_NAMES
from eobook.data.download import registry
from eobook.data.readers import READERS

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "book" / "reproducibility.md"]


def doc_text(doc: Path) -> str:
    """A markdown file's text, or a notebook's markdown cells one after another."""
    if doc.suffix != ".ipynb":
        return doc.read_text()
    cells = json.loads(doc.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def commands(doc: Path) -> list[tuple[int, str]]:
    """(line number, command) for each eobook command of the fenced code blocks of ``doc``: continuation lines
    joined, comments dropped, ``a && b`` split."""
    found, block, pending, start = [], False, "", 0
    for number, line in enumerate(doc_text(doc).splitlines(), 1):
        if line.lstrip().startswith("```"):
            block = not block
            continue
        if not block:
            continue
        if not pending:
            start = number
        pending += " " + line.rstrip().removesuffix("\\")
        if line.rstrip().endswith("\\"):
            continue
        logical, pending = pending, ""
        logical = re.sub(r"\s#\s.*$", "", logical).strip()  # a trailing comment
        for part in re.split(r"\s*(?:&&|;)\s*", logical):
            if part.startswith(("python -m eobook", "torchrun ")):
                found.append((start, part))
    return found


CHAPTER_DOCS = sorted((REPO / "notebooks").glob("*.ipynb"))
ALL = [(doc, number, command) for doc in DOCS + CHAPTER_DOCS for number, command in commands(doc)]


def test_the_docs_show_commands():
    shown = {doc.name: sum(1 for d, _, _ in ALL if d == doc) for doc in DOCS}
    assert all(n >= 5 for n in shown.values()), shown
    assert any("--nnodes" in c for d, _, c in ALL if d.name == "reproducibility.md")  # multi-node documented


def eobook_arguments(command: str) -> list[str]:
    tokens = shlex.split(command)
    if tokens[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(tokens[1:])  # torchrun's own options must be real too
        assert args.module and args.training_script == "eobook", command
        return list(args.training_script_args)
    assert tokens[:3] == ["python", "-m", "eobook"], command
    return tokens[3:]


@pytest.mark.parametrize("doc, number, command", ALL, ids=[f"{d.name}:{n}" for d, n, _ in ALL])
def test_a_documented_command_is_real(doc, number, command):
    parser = build_parser()
    try:
        args = parser.parse_args(eobook_arguments(command))
    except SystemExit:
        pytest.fail(f"{doc.name}:{number}: `{command}` does not parse (python -m eobook's parser, or torchrun's)")
    where = f"{doc.name}:{number}: `{command}`"
    if args.command in ("run", "pretrain"):
        chapters = args.chapters if args.command == "run" else [args.chapter]
        assert args.profile in PROFILE_NAMES, where
        names = chapter_names() if chapters == ["all"] else chapters
        assert set(names) <= set(chapter_names()), where
        overrides = parse_assignments(args.param)
        if getattr(args, "smoke", False):
            overrides["smoke"] = "true"
        for name in names:
            get_profile(name, args.profile, **overrides)  # unknown fields and bad values raise ConfigError
    elif args.command == "data":
        if args.data_command in ("check", "prepare"):
            assert args.dataset in READERS, where
            assert args.root is not None and (args.dataset != "GeoBench" or args.task), where
        elif args.data_command == "download":
            entry = registry().get(args.dataset)
            assert entry is not None, where
            assert args.root is None or args.root.name == args.dataset, f"{where}: --root is the dataset's folder"
    elif args.command == "bench":
        assert (REPO / "benchmarks" / f"bench_{args.name}.py").is_file(), where
    elif args.command == "weights" and args.weights_command == "download":
        assert set(args.names) <= set(released_weights()), where


def test_data_roots_hold_the_datasets_by_name():
    """`-p data_root=` is the folder holding the datasets (the readers append the dataset's name)."""
    for doc, number, command in ALL:
        for value in re.findall(r"data_root=(\S+)", command):
            assert Path(value).name not in {"BigEarthNet-MM", "SSL4EO-S12", "MMEarth", "GEO-Bench", "SEN12MS",
                                            "DFC2020", "EuroSAT-MS", "NoLDO-S12", "fMoW-Sentinel"}, \
                f"{doc.name}:{number}: data_root names a dataset's own folder"
