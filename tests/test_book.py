"""The book a reader opens: chapters rendered from kept small-profile executions that match their notebooks,
self-contained HTML (no remote script or stylesheet, maths rendered offline), clean cells (no path of the
building machine, no library warnings), checked in a real headless browser."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eobook.book import SEEDS_TAG, StaleChapterError, code_sources, with_source_text
from eobook.chapters import CHAPTERS

REPO = Path(__file__).resolve().parent.parent
KEPT = REPO / "book" / "small"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
#: What must never appear in a kept chapter or a built page: this machine's paths, library warnings.
UNCLEAN = [str(REPO.parent), "site-packages", "/tmp/", "Warning:", "PosixPath("]


def markdown_cells(notebook: dict) -> list[str]:
    """The prose of a notebook, without the cell `collect` adds with every seed's verdict."""
    return ["".join(c["source"]) for c in notebook["cells"]
            if c["cell_type"] == "markdown" and SEEDS_TAG not in c["metadata"].get("tags", [])]


@pytest.mark.parametrize("name", list(CHAPTERS))
def test_kept_chapter_runs_the_code_of_its_notebook(name):
    """A stale kept chapter cannot be published: its code must be the notebook's, cell for cell, and its prose
    the notebook's too (prose alone is refreshed without re-executing: `python -m eobook refresh-text`)."""
    notebook = CHAPTERS[name].notebook
    source = json.loads((REPO / "notebooks" / notebook).read_text())
    kept = json.loads((KEPT / notebook).read_text())
    assert code_sources(kept) == code_sources(source), f"book/small/{notebook} is stale: run `make book-small CHAPTER={name}`"
    assert markdown_cells(kept) == markdown_cells(source), f"book/small/{notebook}: run `python -m eobook refresh-text`"
    record = json.loads((KEPT / f"{Path(notebook).stem}.run.json").read_text())
    assert record["profile"] == "small" and record["wall_seconds"] > 0 and record["git"]["sha"]


@pytest.mark.parametrize("name", list(CHAPTERS))
def test_chapter_prose_holds_no_text_that_renders_as_html(name):
    """Markdown passes `<word ...>` through as an HTML tag, which the page then hides: placeholders such as
    <name> belong in code spans."""
    source = json.loads((REPO / "notebooks" / CHAPTERS[name].notebook).read_text())
    for text in markdown_cells(source):
        prose = re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
        assert not re.findall(r"<[A-Za-z][^>]*>", prose), f"{name}: {re.findall(r'<[A-Za-z][^>]*>', prose)}"


def test_refreshing_the_prose_keeps_the_outputs_and_refuses_changed_code():
    source = {"cells": [{"cell_type": "markdown", "source": ["new text"], "metadata": {}},
                        {"cell_type": "code", "source": ["profile = 'tiny'"], "metadata": {"tags": ["parameters"]}},
                        {"cell_type": "markdown", "source": ["added"], "metadata": {}},
                        {"cell_type": "code", "source": ["print(1)"], "metadata": {}, "outputs": []}]}
    injected = {"cell_type": "code", "source": ["profile = 'small'"], "metadata": {"tags": ["injected-parameters"]}}
    executed = {"metadata": {"papermill": {}}, "cells": [
        {"cell_type": "markdown", "source": ["old text"], "metadata": {}}, source["cells"][1], injected,
        {"cell_type": "code", "source": ["print(1)"], "metadata": {}, "outputs": [{"text": "1"}]}]}
    refreshed = with_source_text(executed, source, "softcon")
    assert [c["source"] for c in refreshed["cells"]] == [["new text"], ["profile = 'tiny'"], ["profile = 'small'"],
                                                         ["added"], ["print(1)"]]
    assert refreshed["cells"][-1]["outputs"] == [{"text": "1"}] and refreshed["metadata"] == {"papermill": {}}
    source["cells"][-1]["source"] = ["print(2)"]
    with pytest.raises(StaleChapterError, match="softcon.*re-execute"):
        with_source_text(executed, source, "softcon")


@pytest.mark.parametrize("name", list(CHAPTERS))
def test_kept_chapter_cells_are_clean(name):
    kept = json.loads((KEPT / CHAPTERS[name].notebook).read_text())
    outputs = [json.dumps(o) for c in kept["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if '"output_type": "error"' in o]
    for text in UNCLEAN:
        assert not [o[:200] for o in outputs if text in o], f"{text!r} in the outputs of {name}"
    stderr = [o for c in kept["cells"] for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert stderr == [], "no library warnings or progress bars in a kept chapter"
    assert all("id" in c for c in kept["cells"]), "every cell has an id (nbformat 4.5; the book's build warns otherwise)"


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """The book built as `make book` builds it, into a temporary folder."""
    out = tmp_path_factory.mktemp("book")
    book = out / "book"
    shutil.copytree(REPO / "book", book, ignore=shutil.ignore_patterns("_extra", "_build"))
    subprocess.run([sys.executable, "-m", "eobook", "book-assets", "--book", str(book)], check=True,
                   capture_output=True)
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    done = subprocess.run([str(jupyter_book), "build", str(book), "--config", str(REPO / "_config.yml"), "-W", "-n",
                           "--keep-going", "--path-output", str(out)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return out / "_build" / "html"


def chapter_pages(html: Path) -> list[Path]:
    return [html / "small" / f"{Path(c.notebook).stem}.html" for c in CHAPTERS.values()]


@pytest.mark.slow
def test_the_book_is_self_contained_and_clean(built_book):
    pages = [built_book / "index.html", built_book / "package.html", *chapter_pages(built_book)]
    for page in pages:
        html = page.read_text()
        remote = re.findall(r'<(?:script|link)[^>]*(?:src|href)="(https?://[^"]+)"', html)
        assert remote == [], f"{page.name} loads {remote}"
        for text in UNCLEAN:
            assert text not in html, f"{text!r} in {page.name}"
        for image in re.findall(r'<img[^>]*src="([^"]+)"', html):
            assert (page.parent / image).is_file(), f"{page.name}: missing image {image}"


#: Appended to a copy of a page: once the page has loaded, the body records how many images decoded.
IMAGE_PROBE = """<script>window.addEventListener("load", () => document.body.setAttribute("data-images",
  [...document.images].filter(i => i.complete && i.naturalWidth > 0).length + "/" + document.images.length));</script>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to open the book in (apt-get install chromium)")
def test_a_chapter_renders_its_maths_and_figures_in_a_browser(built_book, tmp_path):
    page = built_book / "small" / f"{Path(CHAPTERS['fus_mae'].notebook).stem}.html"
    probe = page.with_name(f"probe-{page.name}")      # beside the page, so that its relative links resolve
    probe.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000"]
    dom = subprocess.run([*args, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="MathJax"') + dom.count('class="MathJax_Display"') > 5, "the equations did not render"
    loaded, total = map(int, re.search(r'data-images="(\d+)/(\d+)"', dom).groups())
    assert total >= 3 and loaded == total, f"{loaded} of {total} images loaded"
    shot = tmp_path / "chapter.png"
    subprocess.run([*args, "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    from PIL import Image

    assert len(Image.open(shot).convert("L").getcolors(256)) > 50, "the page rendered blank"


def fake_complete_run(folder: Path, name: str, seed: int, wins: int) -> None:
    """A complete run folder of chapter ``name`` as `python -m eobook run` leaves it (notebook, records, figure)."""
    chapter = CHAPTERS[name]
    (folder / "figures").mkdir(parents=True)
    (folder / chapter.notebook).write_text((REPO / "notebooks" / chapter.notebook).read_text())
    if chapter.showcase:
        (folder / "figures" / f"{chapter.showcase}.png").write_bytes(b"\x89PNG")
    verdict = {"columns": 3, "wins": wins, "mean_gain": wins - 1.5, "sentence": "..."}
    (folder / "metrics.json").write_text(json.dumps({"status": "complete", "profile": "small", "wall_seconds": 60.0,
                                                     "verdict": verdict}))
    (folder / "provenance.json").write_text(json.dumps({"parameters": {"seed": seed}, "created": "2026-12-04T10:00",
                                                        "git": {"sha": "abc", "dirty": False}, "device": "cpu"}))


def test_collect_keeps_the_chapters_and_the_overview_reports_every_seed(tmp_path):
    """`collect` keeps seed 0's notebook with every seed's verdict; the intro's cards and the reproducibility
    table count them, and a chapter whose small world cannot show its claim says why on its card."""
    from eobook.__main__ import main
    from eobook.book import overview_cards, small_runs_table

    for seed, wins in ((0, 3), (1, 1)):
        for name in CHAPTERS:
            fake_complete_run(tmp_path / f"seed{seed}" / name, name, seed, wins)
    assert main(["collect", "--runs", str(tmp_path / "seed0"), "--seed-runs", str(tmp_path / "seed1"),
                 "--dest", str(tmp_path / "kept")]) == 0
    for chapter in CHAPTERS.values():
        stem = Path(chapter.notebook).stem
        record = json.loads((tmp_path / "kept" / f"{stem}.run.json").read_text())
        assert [s["seed"] for s in record["seeds"]] == [0, 1] and record["git"]["sha"] == "abc"
        cells = json.loads((tmp_path / "kept" / chapter.notebook).read_text())["cells"]
        at = [i for i, c in enumerate(cells) if SEEDS_TAG in c["metadata"].get("tags", [])]
        assert len(at) == 1 and "run.banner()" in "".join(cells[at[0] - 1]["source"]), chapter.name
        assert "".join(cells[at[0]]["source"]).count("* seed ") == 2
    assert main(["refresh-text", "--dest", str(tmp_path / "kept")]) == 0     # idempotent: still one seeds cell
    cells = json.loads((tmp_path / "kept" / CHAPTERS["softcon"].notebook).read_text())["cells"]
    assert sum(SEEDS_TAG in c["metadata"].get("tags", []) for c in cells) == 1
    cards = overview_cards(tmp_path / "kept")
    assert cards.count("pretraining beats random init in 1 of 2 seeds (columns won 3/3, 1/3") == len(CHAPTERS)
    limited = [c for c in CHAPTERS.values() if c.small_limits]
    assert [c.name for c in limited] == ["softcon", "side_by_side"] and all(c.small_limits in cards for c in limited)
    assert small_runs_table(tmp_path / "kept").count("| 0: 3/3, +1.5; 1: 1/3, -0.5 |") == len(CHAPTERS)
