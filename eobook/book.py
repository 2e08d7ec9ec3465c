"""The book's kept chapters: executed `small` notebooks in ``book/small/`` with what produced them.

``python -m eobook collect`` keeps a run's executed notebook with the prose of its source notebook (code must
match cell for cell: a stale chapter cannot be published), a record of the run (:func:`run_record`) and every
seed's verdict (:func:`seed_verdict`), shown in a cell under the chapter's opening box (:func:`with_seeds`).
``book-assets`` writes the intro's cards (:func:`overview_cards`) and the Reproducibility page's table
(:func:`small_runs_table`) from those records.
"""
from __future__ import annotations

import json
from pathlib import Path

from .chapters import chapter_names, get_chapter
from .evaluate import beats_baseline
from .resources import notebook_dir
from .runtime import atomic_write_bytes

NOTEBOOK_DIR = notebook_dir()  # shipped in the wheel; the checkout's notebooks/ in an editable install


class StaleChapterError(Exception):
    """A kept chapter's code differs from its notebook's: it must be executed again."""


def is_injected(cell: dict) -> bool:
    """The cell Papermill adds with a run's parameters."""
    return "injected-parameters" in cell.get("metadata", {}).get("tags", [])


def code_sources(notebook: dict) -> list[str]:
    """The code a notebook runs, cell by cell, without the cell Papermill injects."""
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code" and not is_injected(c)]


def with_source_text(executed: dict, source: dict, name: str) -> dict:
    """``executed`` with the prose of ``source``: its markdown cells, in the source's order, around the executed
    code cells (outputs kept). Prose can be corrected without running the chapter again; code cannot: the code
    cells must be the source's, cell for cell, or the chapter has to be re-executed."""
    if code_sources(executed) != code_sources(source):
        raise StaleChapterError(f"chapter {name!r}: the executed notebook's code differs from notebooks/"
                                f"{get_chapter(name).notebook}; re-execute it (`make book-small CHAPTER={name}`)")
    executed_code = iter(c for c in executed["cells"] if c["cell_type"] == "code" and not is_injected(c))
    injected = [c for c in executed["cells"] if is_injected(c)]
    cells = []
    for cell in source["cells"]:
        cells.append(next(executed_code) if cell["cell_type"] == "code" else cell)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cells += injected
    return {**executed, "cells": cells}


#: Tag of the cell ``collect`` adds to a kept chapter under its opening box: every seed's verdict.
SEEDS_TAG = "small-seeds"


def seeds_cell(record: dict) -> dict:
    """A markdown cell saying which seed the page shows and what every seed's run found against random init."""
    lines = [f"* seed {s['seed']}: {'beats' if beats(s['verdict']) else 'does not beat'} it, higher in "
             f"{s['verdict']['wins']} of {s['verdict']['columns']} columns, mean gain {s['verdict']['mean_gain']:+.1f} "
             f"points" for s in record.get("seeds", []) if s.get("verdict")]
    if len(lines) == 1:
        text = (f"**Every seed.** This page is the one kept run of the `small` profile (seed {record.get('seed')}). "
                f"Against random init, over the columns of the verdict line under this chapter's results:\n\n"
                + lines[0])
    else:
        text = (f"**Every seed.** This page is the run with seed {record.get('seed')}; the `small` profile ran with "
                f"{len(lines)} seeds. Each seed's pretrained encoder against random init, over the columns of the "
                f"verdict line under this chapter's results:\n\n" + "\n".join(lines))
    return {"cell_type": "markdown", "id": SEEDS_TAG, "metadata": {"tags": [SEEDS_TAG]},
            "source": text.splitlines(keepends=True)}


def with_seeds(notebook: dict, record: dict) -> dict:
    """``notebook`` with :func:`seeds_cell` after the cell that shows the run's opening box (``run.banner()``)."""
    cells = [c for c in notebook["cells"] if SEEDS_TAG not in c.get("metadata", {}).get("tags", [])]
    if not any(s.get("verdict") for s in record.get("seeds", [])):
        return {**notebook, "cells": cells}
    shows_banner = [c["cell_type"] == "code" and "run.banner()" in "".join(c["source"]) for c in cells]
    at = shows_banner.index(True) + 1 if any(shows_banner) else len(cells)
    return {**notebook, "cells": cells[:at] + [seeds_cell(record)] + cells[at:]}


def keep_notebook(executed: Path, dest: Path, name: str, record: dict) -> None:
    """Write the executed chapter ``executed`` to ``dest`` with the prose of its source notebook and the verdict
    of every seed of ``record`` (see :func:`run_record`)."""
    source = json.loads((NOTEBOOK_DIR / get_chapter(name).notebook).read_text())
    notebook = with_seeds(with_source_text(json.loads(executed.read_text()), source, name), record)
    atomic_write_bytes(dest, (json.dumps(notebook, indent=1, ensure_ascii=False) + "\n").encode())


def seed_verdict(folder: Path) -> dict:
    """One run's seed, wall time and verdict (``metrics.json``'s ``verdict``: columns won against random init)."""
    provenance = json.loads((folder / "provenance.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"seed": provenance["parameters"].get("seed"), "wall_seconds": metrics.get("wall_seconds"),
            "verdict": metrics.get("verdict")}


def overview_cards(kept: Path) -> str:
    """The intro page's cards, one per chapter: the kept run's figure, the paper's claim, and what the small runs
    of every seed showed against random init (from the records ``collect`` keeps beside the chapters)."""
    cards = []
    for name in chapter_names():
        chapter = get_chapter(name)
        stem = Path(chapter.notebook).stem
        record_file = kept / f"{stem}.run.json"
        record = json.loads(record_file.read_text()) if record_file.is_file() else {"seeds": []}
        image = f":img-top: small/{stem}.png\n" if (kept / f"{stem}.png").is_file() else ""
        cards.append(f":::{{grid-item-card}} {chapter.number}. {chapter.title.split(':')[0]}\n{image}"
                     f":link: small/{stem}\n:link-type: doc\n\n{chapter.claim}\n\n```{{card-footer}}\n"
                     f"{seeds_sentence(record)}{' ' + chapter.small_limits if chapter.small_limits else ''}\n```\n:::")
    return "::::{grid} 1 2 2 3\n:gutter: 3\n\n" + "\n\n".join(cards) + "\n::::\n"


def small_runs_table(kept: Path) -> str:
    """The Reproducibility page's table: per chapter, when and where its kept run ran, its wall time, and every
    seed's verdict against random init."""
    lines = ["| chapter | run | wall time | seed: columns won, mean gain |", "|---|---|---:|---|"]
    for name in chapter_names():
        chapter = get_chapter(name)
        record_file = kept / f"{Path(chapter.notebook).stem}.run.json"
        if not record_file.is_file():
            lines.append(f"| {chapter.title.split(':')[0]} | not kept yet | | |")
            continue
        record = json.loads(record_file.read_text())
        seeds = "; ".join(f"{s['seed']}: {s['verdict']['wins']}/{s['verdict']['columns']}, "
                          f"{s['verdict']['mean_gain']:+.1f}" for s in record["seeds"] if s.get("verdict"))
        sha = (record.get("git", {}).get("sha") or "")[:10]
        when = f"{record.get('created', '')[:10]}, {sha}, {record.get('device', '')}"
        lines.append(f"| {chapter.title.split(':')[0]} | {when} | {record['wall_seconds'] / 60:.1f} min | {seeds} |")
    return "\n".join(lines) + "\n"


def beats(verdict: dict) -> bool:
    """Whether a kept verdict record (:func:`eobook.evaluate.verdict_record`) beats random init."""
    return beats_baseline(verdict["wins"], verdict["columns"], verdict["mean_gain"])


def seeds_sentence(record: dict) -> str:
    """What the small runs of every seed showed, in one sentence."""
    verdicts = [s["verdict"] for s in record.get("seeds", []) if s.get("verdict")]
    if not verdicts:
        return "Small runs: not kept yet (`make book-small`)."
    wins_seeds = sum(map(beats, verdicts))
    wins = ", ".join(f"{v['wins']}/{v['columns']}" for v in verdicts)
    gains = ", ".join(f"{v['mean_gain']:+.1f}" for v in verdicts)
    return (f"Small runs: pretraining beats random init in {wins_seeds} of {len(verdicts)} seeds "
            f"(columns won {wins}; mean gain {gains} points).")


def run_record(folder: Path, chapter: str) -> dict:
    """What produced a run folder's results: from its provenance.json and metrics.json."""
    provenance = json.loads((folder / "provenance.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    keep = ("created", "command", "git", "python", "platform", "device", "torch_threads", "packages")
    return {"chapter": chapter, "profile": metrics.get("profile"), "seed": provenance["parameters"].get("seed"),
            "wall_seconds": metrics.get("wall_seconds"), **{k: provenance[k] for k in keep if k in provenance}}
