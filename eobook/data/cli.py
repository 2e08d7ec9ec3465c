"""``python -m eobook data {world,prepare,download,check,list}``: argparse subcommands of the data layer."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_data_subcommands(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` with its subcommands to an argparse ``subparsers`` object; returns the parser."""
    data = subparsers.add_parser("data", help="make, download, pack and list datasets")
    sub = data.add_subparsers(dest="data_command", required=True)

    world = sub.add_parser("world", help="write the synthetic sample world")
    world.add_argument("--out", type=Path, help="folder (default: $EOBOOK_DATA_DIR/world-<size>-seed<seed>, else the "
                                                "user data folder's sample/, e.g. ~/.local/share/eobook/sample)")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--size", choices=("tiny", "small"), default="tiny")
    world.set_defaults(func=_world)

    prepare = sub.add_parser("prepare", help="pack a dataset into a chunked zarr store")
    prepare.add_argument("dataset", help="reader name, e.g. BigEarthNetMM, SSL4EOS12, GeoBench")
    prepare.add_argument("--root", type=Path, required=True, help="the dataset's folder (or HDF5 for MMEarth)")
    prepare.add_argument("--out", type=Path, required=True, help="the store to create")
    prepare.add_argument("--task", help="GEO-Bench task name, or NoLDO-S12 task (dw, osm)")
    prepare.add_argument("--split", help="NoLDO-S12 split (train, test): one store per task and split")
    prepare.add_argument("--compression", choices=("none", "lz4"), default="none",
                         help="chunks as they are (fastest to read) or Blosc LZ4 (fewer bytes on disk, ~4x slower "
                              "to decode)")
    prepare.set_defaults(func=_prepare)

    download = sub.add_parser("download", help="download a registry dataset (see `data list`): progress, checksums, "
                                                "resume, unpacking into the readers' layout, then `data check`")
    download.add_argument("dataset", help="registry name, e.g. BigEarthNet-MM, SSL4EO-S12, EuroSAT-MS")
    download.add_argument("--root", type=Path, help="the dataset's folder (default: <EOBOOK_DATASETS_DIR or the "
                                                    "user data folder>/datasets/<dataset>); the chapters read it "
                                                    "with -p data_root=<its parent>")
    download.add_argument("--no-extract", action="store_true", help="keep the archives packed (and skip the check)")
    download.add_argument("--delete-archives", action="store_true", help="delete each archive once it is unpacked")
    download.add_argument("--no-check", action="store_true", help="skip `data check` of the result")
    download.set_defaults(func=_download)

    check = sub.add_parser("check", help="read every sample of a split as the chapters do; one JSON line of counts")
    check.add_argument("dataset", help="reader name, e.g. SEN12MS, DFC2020, BigEarthNetMM, GeoBench, NoLDOS12")
    check.add_argument("--root", type=Path, required=True, help="the dataset's folder (or HDF5 for MMEarth)")
    check.add_argument("--split", help="the split to read (default: the reader's)")
    check.add_argument("--task", help="GEO-Bench task (m-eurosat, ...) or NoLDO-S12 task (dw, osm)")
    check.set_defaults(func=_check)

    listing = sub.add_parser("list", help="list the registry's datasets (name, size, licence) and the readers")
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

    print(prepare(args.dataset, args.root, args.out, task=args.task, split=args.split, compression=args.compression))
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
    """The files on stdout, one a line; then one JSON line per ``data check`` of the registry entry. Exit 1 when a
    checked sample failed, 2 when a check found another layout."""
    import os
    import sys

    from ..resources import datasets_dir
    from .download import check_download, download

    root = args.root if args.root is not None else datasets_dir() / args.dataset
    for path in download(args.dataset, root, extract_archives=not args.no_extract,
                         keep_archives=not args.delete_archives):
        print(path)
    print(f"{args.dataset} is in {root}; the chapters read it with -p data_root={root.parent}", file=sys.stderr)
    if args.no_check or args.no_extract:
        return 0
    status = 0
    for report in check_download(args.dataset, root, progress=os.environ.get("EOBOOK_PROGRESS", "1") != "0"):
        print(json.dumps(report))
        if "error" in report:
            print(f"error: data check {report['dataset']}: {report['error']}", file=sys.stderr)
            status = 2
        elif report["failed"]:
            status = max(status, 1)
            print(f"{report['failed']} of {report['samples']} samples failed:", file=sys.stderr)
            for line in report["errors"]:
                print(f"  {line}", file=sys.stderr)
    return status


def _list(args) -> int:
    from .download import registry
    from .readers import READERS

    for name, entry in registry().items():
        sizes = [f.get("size") for f in entry["files"]]
        size = f"{sum(sizes) / 2**30:8.1f} GiB" if None not in sizes else "size unknown"
        print(f"{name:<22} {size:>12}  {entry.get('citation', '')}; licence: {entry.get('licence', 'unknown')}")
    print("readers:", ", ".join(READERS))
    return 0
