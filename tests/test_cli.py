"""`python -m eobook`: argument errors, and Papermill runs that fail, keep going, skip and force."""
import json
import os
import subprocess
import sys

import nbformat
import pytest

from eobook.__main__ import main
from eobook import chapters as registry
from eobook.config import Chapter, ChapterConfig

# The kernel is another process where the test chapters are not registered: it applies overrides itself.
CHAPTER_CODE = """
from eobook.config import ChapterConfig, apply_overrides
from eobook.runtime import RunFolder
cfg = apply_overrides(ChapterConfig(), overrides)
folder = RunFolder(out_dir)
folder.log_metrics(epochs=cfg.epochs)
import matplotlib.pyplot as plt
plt.plot([0, 1], [1, 0])
plt.show()
{fail}
folder.finish()
"""


def write_notebook(path, name, fail):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "tiny"\nout_dir = None\noverrides = {}')
    params.metadata["tags"] = ["parameters"]
    body = CHAPTER_CODE.format(fail='raise RuntimeError("boom in the training cell")' if fail else "")
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def no_pretraining(cfg: ChapterConfig):
    raise NotImplementedError


@pytest.fixture
def chapters(tmp_path, monkeypatch):
    """Two throw-away chapters, one of which fails, registered for this test only."""
    for name, fail in (("good", False), ("bad", True)):
        nb = write_notebook(tmp_path / f"{name}.ipynb", name, fail)
        cfg = ChapterConfig()
        chapter = Chapter(name, 90 if name == "bad" else 91, name, str(nb), ChapterConfig,
                          {"tiny": cfg, "small": cfg, "full": cfg}, no_pretraining)
        monkeypatch.setitem(registry.CHAPTERS, name, chapter)
    return tmp_path


def status(folder):
    return json.loads((folder / "metrics.json").read_text())["status"]


def test_failing_chapter_keeps_its_notebook_and_never_looks_complete(chapters, capsys):
    out = chapters / "runs"
    assert main(["run", "bad", "good", "--out", str(out), "--keep-going"]) == 1
    bad, good = out / "bad", out / "good"
    assert (bad / "FAILED").exists() and status(bad) == "failed"
    executed = (bad / "bad.ipynb").read_text()
    assert "boom in the training cell" in executed            # the error cell is visible
    assert status(good) == "complete" and json.loads((good / "metrics.json").read_text())["epochs"] == 1
    # figures render inline into the executed notebook (the book shows them) even with MPLBACKEND=Agg set
    assert '"image/png"' in (good / "good.ipynb").read_text()
    assert os.environ["MPLBACKEND"] == "Agg"  # restored for the rest of this process (conftest's value)
    assert "failed: ['bad']" in capsys.readouterr().err


def test_without_keep_going_the_batch_stops_at_the_failure(chapters):
    out = chapters / "runs"
    assert main(["run", "bad", "good", "--out", str(out)]) == 1
    assert not (out / "good").exists()


def test_complete_runs_are_skipped_unless_forced(chapters, capsys):
    out = chapters / "runs"
    assert main(["run", "good", "--out", str(out), "-p", "epochs=4"]) == 0
    marker = out / "good" / "marker"
    marker.write_text("x")
    assert main(["run", "good", "--out", str(out)]) == 0
    assert "complete; skipping" in capsys.readouterr().out and marker.exists()
    assert main(["run", "good", "--out", str(out), "--force"]) == 0
    assert not marker.exists() and status(out / "good") == "complete"


def test_an_executed_notebook_shows_no_path_of_this_machine(chapters):
    out = chapters / "runs"
    assert main(["run", "good", "--out", str(out)]) == 0
    executed = (out / "good" / "good.ipynb").read_text()
    assert 'out_dir = \\".\\"' in executed                       # the injected parameters cell
    assert str(chapters) not in executed and "PosixPath" not in executed
    assert (out / "good" / "metrics.json").is_file()           # written inside the run folder all the same


@pytest.mark.parametrize("argv, message", [
    (["run", "nochapter", "--out", "x"], "unknown chapter(s) ['nochapter']; valid chapters:"),
    (["run", "good", "--out", "x", "--profile", "huge"], "unknown profile 'huge'; valid profiles: ['tiny', 'small', 'full']"),
    (["run", "good", "--out", "x", "-p", "epoch=3"], "unknown parameter(s) ['epoch']; valid parameters:"),
    (["run", "good", "--out", "x", "-p", "epochs"], "-p 'epochs': expected key=value"),
    (["run", "good", "--out", "x", "-p", "epochs=-1"], "epochs: expected a value > 0, got -1"),
    (["bench", "nothing"], "unknown benchmark 'nothing'"),
])
def test_user_errors_are_one_line_with_exit_status_2(chapters, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (chapters / "x").exists()


def test_module_entry_point_lists_every_registered_chapter():
    out = subprocess.run([sys.executable, "-m", "eobook", "list"], capture_output=True, text=True, check=True).stdout
    for chapter in registry.CHAPTERS.values():
        assert f"{chapter.number}. {chapter.name}" in out
    assert "tiny" in out and "full" in out
