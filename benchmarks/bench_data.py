"""Samples/s of folder (native GeoTIFF) vs packed (zarr) reading of BigEarthNet-MM and SSL4EO-S12.

Run: ``python benchmarks/bench_data.py [--size tiny|small]``. Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from eobook.data import BigEarthNetMM, SSL4EOS12, ensure_sample_world
from eobook.data.store import prepare


def samples_per_second(dataset, limit: int = 200) -> float:
    n = min(limit, len(dataset))
    start = time.perf_counter()
    for i in range(n):
        dataset[i]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="tiny", choices=("tiny", "small"))
    args = parser.parse_args()
    world = ensure_sample_world(args.size, 0)
    with tempfile.TemporaryDirectory() as tmp:
        cases = (("BigEarthNetMM", "BigEarthNet-MM", lambda root: BigEarthNetMM(root, split=None)),
                 ("SSL4EOS12", "SSL4EO-S12", lambda root: SSL4EOS12(root, modalities=("s1", "s2c"), seasons="all")))
        for name, folder, make in cases:
            store = prepare(name, world / folder, Path(tmp) / f"{name}.zarr")
            folder_rate, packed_rate = samples_per_second(make(world / folder)), samples_per_second(make(store))
            print(f"{name:<14} folder {folder_rate:8.1f} samples/s   packed {packed_rate:8.1f} samples/s   "
                  f"speed-up {packed_rate / folder_rate:5.1f}x  (synthetic {args.size} world)")


if __name__ == "__main__":
    main()
