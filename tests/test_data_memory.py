"""Data loading stays within its memory budget: readers hold no sample data between reads, HDF5 files are
opened lazily once per process (a reader sent to a DataLoader worker carries no open handle), and reading
a whole split grows the resident memory by less than the budget stated in data/README.md."""
import pickle

import torch

from eobook.data import MMEarth, SSL4EOS12, ensure_sample_world

BUDGET_MB = 64  # growth of resident memory allowed while streaming a split (data/README.md)


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


def test_hdf5_reader_travels_to_workers_without_an_open_file():
    h5 = next((ensure_sample_world("tiny", 0) / "MMEarth").glob("*.h5"))
    reader = MMEarth(h5, split="train")
    reader[0]                                    # opens the file in this process
    clone = pickle.loads(pickle.dumps(reader))   # what a DataLoader worker receives
    assert clone._file is None                   # it opens its own handle on first read
    loader = torch.utils.data.DataLoader(reader, batch_size=8, num_workers=2)
    batch = next(iter(loader))
    torch.testing.assert_close(batch["rgb"][0], reader[0]["rgb"])


def test_streaming_a_split_stays_within_the_budget():
    root = ensure_sample_world("tiny", 0) / "SSL4EO-S12"
    reader = SSL4EOS12(root, modalities=("s1", "s2c"), seasons="all", dw_labels=True)
    for i in range(len(reader)):                 # one warm pass (imports, GDAL caches)
        reader[i]
    before = resident_mb()
    for i in range(len(reader)):                 # a second epoch may not accumulate anything
        reader[i]
    assert resident_mb() - before < BUDGET_MB
