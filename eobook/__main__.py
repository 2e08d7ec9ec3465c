"""``python -m eobook``: run chapters (Papermill), pretrain headless (torchrun), data, benchmarks, list.

Examples::

    python -m eobook list
    python -m eobook run dino_mm --profile tiny --out runs/demo
    python -m eobook run all --profile small --out runs/small --keep-going
    torchrun --nproc_per_node 4 -m eobook pretrain dino_mm --profile full --out runs/full/dino_mm
    python -m eobook data world --out data/sample/world-tiny-seed0 --size tiny
    python -m eobook bench train --chapter dino_mm
    python -m eobook weights list
    python -m eobook run softcon --profile full -p init=authors:softcon-vits14-ms --out runs/authors
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import shutil
import sys
from pathlib import Path

from .book import (NOTEBOOK_DIR, StaleChapterError, keep_notebook, overview_cards, run_record, seed_verdict,
                   small_runs_table)
from .chapters import chapter_names, get_chapter, get_profile
from .config import PROFILE_NAMES, ConfigError
from .runtime import REPO_ROOT, atomic_write_json
BENCHMARK_DIR = REPO_ROOT / "benchmarks" if REPO_ROOT is not None else None  # scripts of the checkout only


class CLIError(Exception):
    """A user mistake on the command line: printed as one line, exit status 2."""


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """``["epochs=3", "lr=1e-4"]`` -> ``{"epochs": "3", "lr": "1e-4"}`` (types are checked by the profile)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"-p {pair!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def expand_chapters(names: list[str]) -> list[str]:
    valid = chapter_names()
    if names == ["all"]:
        return valid
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise CLIError(f"unknown chapter(s) {unknown}; valid chapters: {valid} (or 'all')")
    return names


# --------------------------------------------------------------------------------------------------
# run: execute chapter notebooks through Papermill, one run folder each
# --------------------------------------------------------------------------------------------------
def run_status(folder: Path) -> str | None:
    """"complete", "failed", "running" (interrupted) or None (never started)."""
    metrics = folder / "metrics.json"
    if (folder / "FAILED").exists():
        return "failed"
    if not metrics.exists():
        return "running" if folder.exists() else None
    try:
        return json.loads(metrics.read_text()).get("status", "running")
    except json.JSONDecodeError:
        return "running"


def run_chapter(chapter: str, profile: str, folder: Path, overrides: dict[str, str], force: bool,
                kernel: str = "python3") -> bool:
    """Execute one chapter into ``folder``; True on success. A failed run keeps its executed notebook
    (error cell visible), writes ``FAILED`` and never leaves a ``metrics.json`` marked complete."""
    import papermill

    get_profile(chapter, profile, **overrides)  # refuse bad names/values before starting a kernel
    status = run_status(folder)
    if status == "complete" and not force:
        print(f"[{chapter}] {folder} is complete; skipping (use --force to run again)")
        return True
    if force and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "FAILED").unlink(missing_ok=True)
    notebook = NOTEBOOK_DIR / get_chapter(chapter).notebook
    executed = folder / notebook.name
    # The kernel runs in the run folder, given it as ".", so that no cell (not even the parameters cell that
    # Papermill injects) shows where the run folder lies on this machine.
    # The kernel inherits this environment: the command for its provenance record, and an inline
    # matplotlib backend so that figures land in the executed notebook (and the book) even where
    # MPLBACKEND names a non-interactive backend such as Agg, which draws nothing into cell outputs.
    # OpenMP threads that wait passively: spinning threads starve each other as soon as another process
    # shares the cores (a Fus-MAE small step took 10 s instead of 0.4 s beside one other job on 2 cores).
    kernel_env = {"EOBOOK_COMMAND": json.dumps(["python", "-m", "eobook", *sys.argv[1:]]),
                  "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                  "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                  "EOBOOK_PROGRESS": "0"}  # no progress bars in executed notebooks (they would be the book's)
    print(f"[{chapter}] profile={profile} -> {folder}")
    try:
        with environment(kernel_env):
            papermill.execute_notebook(str(notebook), str(executed), kernel_name=kernel, cwd=str(folder.resolve()),
                                       parameters={"profile": profile, "out_dir": ".", "overrides": overrides},
                                       progress_bar=False, log_output=False)
    except Exception as err:  # papermill raises PapermillExecutionError with the failing cell
        if executed.exists():
            forget_paths(executed, notebook.name)
        mark_failed(folder, err)
        print(f"[{chapter}] FAILED: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r}\n"
              f"[{chapter}] executed notebook with the error: {executed}", file=sys.stderr)
        return False
    forget_paths(executed, notebook.name)
    if run_status(folder) != "complete":
        mark_failed(folder, RuntimeError("the notebook ended without calling run.folder.finish()"))
        print(f"[{chapter}] FAILED: the notebook did not record complete metrics", file=sys.stderr)
        return False
    print(f"[{chapter}] done: {folder / 'metrics.json'}")
    return True


def forget_paths(executed: Path, source_name: str) -> None:
    """Papermill records where its input and output notebooks lay on this machine: keep only their names."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    record = nb.metadata.get("papermill", {})
    record.update(input_path=f"notebooks/{source_name}", output_path=executed.name)
    nbformat.write(nb, executed)


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """Set environment variables for the duration of the block, then restore the old ones."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def mark_failed(folder: Path, err: BaseException) -> None:
    (folder / "FAILED").write_text(f"{type(err).__name__}: {err}\n")
    metrics = folder / "metrics.json"
    if metrics.exists():
        try:
            values = json.loads(metrics.read_text())
        except json.JSONDecodeError:
            values = {}
        values["status"] = "failed"
        atomic_write_json(metrics, values)


def cmd_run(args: argparse.Namespace) -> int:
    chapters = expand_chapters(args.chapters)
    overrides = parse_assignments(args.param)
    if args.smoke:
        overrides["smoke"] = "true"
    if args.profile not in PROFILE_NAMES:
        raise CLIError(f"unknown profile {args.profile!r}; valid profiles: {list(PROFILE_NAMES)}")
    for chapter in chapters:  # validate every chapter's parameters before running any
        get_profile(chapter, args.profile, **overrides)
    failed = []
    for chapter in chapters:
        ok = run_chapter(chapter, args.profile, Path(args.out) / chapter, overrides, args.force)
        if not ok:
            failed.append(chapter)
            if not args.keep_going:
                break
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------------
# pretrain: the chapter's pretraining alone (what torchrun launches on several GPUs)
# --------------------------------------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    from .runtime import setup_run

    chapter = get_chapter(args.chapter)
    cfg = chapter.profile(args.profile, **parse_assignments(args.param))
    run = setup_run(cfg, args.out, verbose=int(os.environ.get("RANK", 0)) == 0)
    _, result = chapter.pretrain(cfg, args.out)  # every rank resumes from the same checkpoints
    if run.dist.is_main:
        final = result.history[-1] if result.history else {}
        print(json.dumps({"steps": result.steps, "final": final, "samples_per_s": result.samples_per_second}))
    return 0


# --------------------------------------------------------------------------------------------------
# list, bench
# --------------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    for name in chapter_names():
        ch = get_chapter(name)
        print(f"{ch.number}. {name:<12} {ch.title}  [{ch.notebook}]")
        for pname, cfg in ch.profiles.items():
            print(f"     {pname:<6} epochs={cfg.epochs} batch_size={cfg.batch_size} lr={cfg.lr:g}")
    return 0


def released_weights() -> dict:
    """Every chapter's released weights by name, in chapter order."""
    return {entry.name: entry for name in chapter_names() for entry in get_chapter(name).released}


def cmd_weights_list(args: argparse.Namespace) -> int:
    from .weights import local_path

    for entry in released_weights().values():
        here = "downloaded" if local_path(entry).is_file() else "not downloaded"
        print(f"{entry.name}  [{get_chapter(entry.chapter).number}. {entry.chapter}; -p init={entry.init}; {here}]")
        print(f"    {entry.encoder}; {entry.input_px} px; bands {', '.join(entry.bands)}")
        print(f"    {entry.url}  ({entry.licence})")
        print(f"    reported ({entry.reported_source}): "
              + ", ".join(f"{metric} {value:.1f}" for metric, value in entry.reported.items()))
        if entry.notes:
            print(f"    note: {entry.notes}")
    return 0


def cmd_weights_download(args: argparse.Namespace) -> int:
    from .weights import WeightsError, download

    known = released_weights()
    unknown = [n for n in args.names if n not in known]
    if unknown:
        raise CLIError(f"unknown weights {unknown}; valid: {list(known)}")
    for name in args.names:
        try:
            path = download(known[name])
        except WeightsError as err:
            raise CLIError(str(err)) from None
        print(f"{name}: {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if BENCHMARK_DIR is None:
        raise CLIError("benchmarks are scripts of the source checkout (benchmarks/), not part of the installed package")
    scripts = sorted(p.stem.removeprefix("bench_") for p in BENCHMARK_DIR.glob("bench_*.py"))
    if args.name not in scripts:
        raise CLIError(f"unknown benchmark {args.name!r}; valid benchmarks: {scripts}")
    sys.argv = [f"bench_{args.name}.py", *args.rest]
    runpy.run_path(str(BENCHMARK_DIR / f"bench_{args.name}.py"), run_name="__main__")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    """Keep the executed notebooks of complete runs in the book's source folder, each with a record of what
    produced it (commit, command, profile, hardware, packages, wall time) and of the verdict of every seed's
    run (``--seed-runs``: the same chapters run with other seeds), in chapter order."""
    runs, dest = Path(args.runs), Path(args.dest)
    names = expand_chapters(args.chapters or ["all"])
    roots = [runs, *map(Path, args.seed_runs)]
    missing = [str(root / n) for root in roots for n in names if run_status(root / n) != "complete"
               or not (root / n / get_chapter(n).notebook).exists()]
    if missing:
        raise CLIError(f"no complete run in {missing}; run `python -m eobook run` first")
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        chapter = get_chapter(name)
        stem = Path(chapter.notebook).stem
        if chapter.showcase and (runs / name / "figures" / f"{chapter.showcase}.png").is_file():
            shutil.copyfile(runs / name / "figures" / f"{chapter.showcase}.png", dest / f"{stem}.png")
        record = run_record(runs / name, name)
        record["seeds"] = [seed_verdict(root / name) for root in roots]
        keep_notebook(runs / name / chapter.notebook, dest / chapter.notebook, name, record)
        atomic_write_json(dest / f"{stem}.run.json", record)
    print(f"kept {len(names)} executed chapter(s) in {dest}")
    return 0


def cmd_refresh_text(args: argparse.Namespace) -> int:
    """Give the kept chapters the prose of their source notebooks (their code and outputs stay)."""
    kept = Path(args.dest)
    for name in expand_chapters(args.chapters or ["all"]):
        path = kept / get_chapter(name).notebook
        if not path.is_file():
            raise CLIError(f"no kept chapter {path}; run `make book-small CHAPTER={name}` first")
        record_file = path.with_name(f"{path.stem}.run.json")
        keep_notebook(path, path, name, json.loads(record_file.read_text()) if record_file.is_file() else {})
    print(f"refreshed the prose of the kept chapters in {kept}")
    return 0


def cmd_book_assets(args: argparse.Namespace) -> int:
    """Write what the book renders besides the chapters: the package diagram and a local MathJax."""
    import jupyter_server_mathjax
    import matplotlib

    matplotlib.use("Agg")
    from .viz import package_diagram

    book = Path(args.book)
    (book / "figures").mkdir(parents=True, exist_ok=True)
    package_diagram().savefig(book / "figures" / "package_layout.png", dpi=110)
    mathjax = book / "_extra" / "mathjax"
    shutil.rmtree(mathjax, ignore_errors=True)
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", mathjax)
    (book / "overview.generated.md").write_text(overview_cards(book / "small"))
    (book / "small_runs.generated.md").write_text(small_runs_table(book / "small"))
    print(f"wrote {book / 'figures' / 'package_layout.png'}, {mathjax}, the overview and the small runs' table")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eobook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute chapter notebooks with Papermill into run folders")
    run.add_argument("chapters", nargs="+", help="chapter names (see `list`) or 'all'")
    run.add_argument("--profile", default="tiny", help=f"one of {list(PROFILE_NAMES)}")
    run.add_argument("--out", required=True, help="parent folder; each chapter runs in OUT/<chapter>")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override a profile field (repeatable)")
    run.add_argument("--keep-going", action="store_true", help="continue with the next chapter after a failure")
    run.add_argument("--force", action="store_true", help="re-run chapters whose run folder is complete")
    run.add_argument("--smoke", action="store_true",
                     help="every stage for 2 optimizer steps on a handful of samples (at the profile's model sizes)")
    run.set_defaults(func=cmd_run)

    pre = sub.add_parser("pretrain", help="a chapter's pretraining alone (works under torchrun)")
    pre.add_argument("chapter")
    pre.add_argument("--profile", default="tiny")
    pre.add_argument("--out", required=True, help="run folder (checkpoints in OUT/checkpoints)")
    pre.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    pre.set_defaults(func=cmd_pretrain)

    lst = sub.add_parser("list", help="chapters and their profiles")
    lst.set_defaults(func=cmd_list)

    weights = sub.add_parser("weights", help="the authors' released weights: list, download")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True)
    weights_sub.add_parser("list", help="every released file, its chapter, bands and reported numbers").set_defaults(
        func=cmd_weights_list)
    fetch = weights_sub.add_parser("download", help="download with progress, verified by SHA-256 "
                                                    "(into $EOBOOK_WEIGHTS_DIR, default ~/.cache/eobook/weights)")
    fetch.add_argument("names", nargs="+", help="names from `weights list`")
    fetch.set_defaults(func=cmd_weights_download)

    bench = sub.add_parser("bench", help="run a script of benchmarks/ (prints numbers)")
    bench.add_argument("name", help="benchmark name: benchmarks/bench_<name>.py")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(func=cmd_bench)

    collect = sub.add_parser("collect", help="keep executed chapters of complete runs in the book's source folder")
    collect.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    collect.add_argument("--runs", required=True, help="the --out folder of `run`")
    collect.add_argument("--dest", required=True, help="the book's folder of executed chapters (book/small)")
    collect.add_argument("--seed-runs", nargs="*", default=[], metavar="DIR",
                         help="the --out folders of the same chapters run with other seeds (their verdicts are kept)")
    collect.set_defaults(func=cmd_collect)

    refresh = sub.add_parser("refresh-text", help="give the kept chapters the prose (markdown) of their notebooks")
    refresh.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    refresh.add_argument("--dest", default="book/small", help="the book's folder of executed chapters")
    refresh.set_defaults(func=cmd_refresh_text)

    assets = sub.add_parser("book-assets", help="write the book's diagram and local MathJax (make book does)")
    assets.add_argument("--book", default="book", help="the book's source folder")
    assets.set_defaults(func=cmd_book_assets)

    try:
        from .data.cli import add_data_subcommands
    except ImportError:  # the data package is optional while it is being built
        pass
    else:
        add_data_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .data import DataError
    from .train import CheckpointError
    from .weights import WeightsError

    try:
        return args.func(args)
    except (CLIError, ConfigError, CheckpointError, DataError, StaleChapterError, WeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
