"""``make bench``: measured speeds of the input pipelines, side by side, in one run.

Figures are measured, never asserted in tests: a shared 2-core machine is noisy.
Each rate is the best of ``repeats`` full passes after one warm-up pass (the
warm-up also fills the OS file cache, so every method reads from memory).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .config import ROOT

SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "idc-sample"


def _best_rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(data_dir, sample: int | None = None, batch_size: int = 256, repeats: int = 2) -> list[tuple[str, str]]:
    from .index import build_index
    from .pipeline import load_arrays, load_pack, make_dataset, pack

    rows = []
    start = time.perf_counter()
    df, report = build_index(data_dir)
    rows.append(("index (files/s)", f"{report.files_seen / (time.perf_counter() - start):,.0f}"))
    if sample and sample < len(df):
        df = df.sample(sample, random_state=0).reset_index(drop=True)
    n = len(df)
    rows.insert(0, ("patches", f"{n:,} from {data_dir}"))

    rows.append(("PIL loop into NumPy (img/s)", f"{_best_rate(lambda: load_arrays(df), n, repeats):,.0f}"))

    def drain(ds):
        for _ in ds:
            pass

    png = make_dataset(df, batch_size=batch_size)
    rows.append(("tf.data from PNG (img/s)", f"{_best_rate(lambda: drain(png), n, repeats):,.0f}"))

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pack(df, Path(tmp) / "bench", progress=False)
        rows.append(("pack (img/s)", f"{n / (time.perf_counter() - start):,.0f}"))
        start = time.perf_counter()
        images, table = load_pack(Path(tmp) / "bench", mmap=False)
        rows.append(("reload pack into memory (s)", f"{time.perf_counter() - start:.3f}"))
        rows.append(("pack size in memory (MB)", f"{images.nbytes / 1e6:,.1f}"))
        packed = make_dataset(images=images, labels=table["label"].to_numpy(), batch_size=batch_size)
        rows.append(("tf.data from packed array (img/s)", f"{_best_rate(lambda: drain(packed), n, repeats):,.0f}"))
    return rows


def main(data_dir=None, sample: int | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not data_dir:
        if SHARED_SAMPLE.is_dir():
            data_dir = SHARED_SAMPLE
        else:
            from .config import resolve

            data_dir = resolve("smoke").data_dir
    rows = measure(data_dir, sample=sample)
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print("-" * (width + 20))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(f"({os.cpu_count()} CPU cores; best of 2 passes after a warm-up)")
    return 0
