"""``python -m eobook data {world,prepare,download,list}``: argparse subcommands of the data layer."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_data_subcommands(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` with its subcommands to an argparse ``subparsers`` object; returns the parser."""
    data = subparsers.add_parser("data", help="make, download, pack and list datasets")
    sub = data.add_subparsers(dest="data_command", required=True)

    world = sub.add_parser("world", help="write the synthetic sample world")
    world.add_argument("--out", type=Path, help="folder (default: $EOBOOK_DATA_DIR or data/sample)")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--size", choices=("tiny", "small"), default="tiny")
    world.set_defaults(func=_world)

    prepare = sub.add_parser("prepare", help="pack a dataset into a chunked zarr store")
    prepare.add_argument("dataset", help="reader name, e.g. BigEarthNetMM, SSL4EOS12, GeoBench")
    prepare.add_argument("--root", type=Path, required=True, help="the dataset's folder (or HDF5 for MMEarth)")
    prepare.add_argument("--out", type=Path, required=True, help="the store to create")
    prepare.add_argument("--task", help="GEO-Bench task name, or NoLDO-S12 task (dw, osm)")
    prepare.add_argument("--split", help="NoLDO-S12 split (train, test): one store per task and split")
    prepare.set_defaults(func=_prepare)

    download = sub.add_parser("download", help="download a dataset listed in data/registry (resumable)")
    download.add_argument("dataset")
    download.add_argument("--root", type=Path, required=True)
    download.set_defaults(func=_download)

    check = sub.add_parser("check", help="read every sample of a split as the chapters do; one JSON line of counts")
    check.add_argument("dataset", help="reader name, e.g. SEN12MS, DFC2020, BigEarthNetMM, GeoBench, NoLDOS12")
    check.add_argument("--root", type=Path, required=True, help="the dataset's folder (or HDF5 for MMEarth)")
    check.add_argument("--split", help="the split to read (default: the reader's)")
    check.add_argument("--task", help="GEO-Bench task (m-eurosat, ...) or NoLDO-S12 task (dw, osm)")
    check.set_defaults(func=_check)

    listing = sub.add_parser("list", help="list the registry's datasets and the readers")
    listing.set_defaults(func=_list)
    return data


def _world(args) -> int:
    from .world import ensure_sample_world, write_world

    if args.out is None:
        print(ensure_sample_world(args.size, args.seed))
    else:
        print(json.dumps(write_world(args.out, args.size, args.seed), indent=2))
    return 0


def _prepare(args) -> int:
    from .pack import prepare

    print(prepare(args.dataset, args.root, args.out, task=args.task, split=args.split))
    return 0


def _check(args) -> int:
    """One JSON line on stdout; the failures (up to 10) on stderr; exit 1 if any sample failed, 2 for a root in
    another layout (one line on stderr)."""
    import os
    import sys

    from .check import LayoutError, check

    try:
        report = check(args.dataset, args.root, args.split, args.task,
                       progress=os.environ.get("EOBOOK_PROGRESS", "1") != "0")
    except LayoutError as err:
        print(f"error: data check {args.dataset}: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: data check: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    if report["failed"]:
        print(f"{report['failed']} of {report['samples']} samples failed"
              + (f"; the first {len(report['errors'])}:" if report["failed"] > len(report["errors"]) else ":"),
              file=sys.stderr)
        for line in report["errors"]:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _download(args) -> int:
    from .download import download

    for path in download(args.dataset, args.root):
        print(path)
    return 0


def _list(args) -> int:
    from .download import registry
    from .readers import READERS

    for name, entry in registry().items():
        sizes = [f.get("size") for f in entry["files"]]
        size = f"{sum(sizes) / 2**30:8.1f} GiB" if None not in sizes else "size unknown"
        print(f"{name:<22} {size:>12}  {entry.get('citation', '')}")
    print("readers:", ", ".join(READERS))
    return 0
