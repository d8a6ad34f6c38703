"""``make bench``: measured speeds of the input pipelines, side by side, in one run.

``full()`` (``make bench``) measures the whole data set's scale on the full-size generated
set (``make-demo --full``: 277,524 patches, made on first use): indexing, packing, reloading,
memory, tf.data images/s from PNG and from the pack, and CancerNet seconds per epoch, with
and without the input pipeline. ``measure()`` (``make bench DATA_DIR=...``) compares the
input pipelines on any folder.

Figures are measured, never asserted in tests: a shared 2-core machine is noisy.
In ``measure`` each rate is the best of ``repeats`` full passes after one warm-up pass (the
warm-up also fills the OS file cache, so every method reads from memory).
"""

from __future__ import annotations

import math
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from ..config import SAMPLE_DIR


def _best_rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(data_dir, sample: int | None = None, batch_size: int = 256, repeats: int = 2) -> list[tuple[str, str]]:
    from ..data.index import build_index
    from ..data.pipeline import load_arrays, load_pack, make_dataset, pack

    rows = []
    start = time.perf_counter()
    df, report = build_index(data_dir)
    rows.append(("index (files/s)", f"{report.files_seen / (time.perf_counter() - start):,.0f}"))
    if sample and sample < len(df):
        df = df.sample(sample, random_state=0).reset_index(drop=True)
    n = len(df)
    rows.insert(0, ("patches", f"{n:,} from {data_dir}"))

    rows.append(("PIL loop into NumPy (img/s)", f"{_best_rate(lambda: load_arrays(df), n, repeats):,.0f}"))

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


def _peak_gb() -> float:
    """This process's peak resident memory so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def drain(ds) -> None:
    for _ in ds:
        pass


def _drain_rate(ds, n: int) -> float:
    return n / _timed(lambda: drain(ds))


def _step_seconds(model, ds, steps: int) -> float:
    """Seconds per training step of ``model`` on ``ds`` (repeated), after a traced warm-up."""
    model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps


def _best_steps(model, datasets: dict, steps: int, repeats: int = 2) -> dict:
    """The best seconds per step on each dataset, measured in turns (a burst of other load on
    a shared machine then slows one pass of each, not every pass of one)."""
    best = {name: math.inf for name in datasets}
    for _ in range(repeats):
        for name, ds in datasets.items():
            best[name] = min(best[name], _step_seconds(model, ds, steps))
    return best


def full(data_dir=None, steps: int = 150, batch_size: int = 64, seed: int = 0,
         repeats: int = 3) -> list[tuple[str, str, str]]:
    """(measure, value, target or note) rows on the full-size generated set (or ``data_dir``).
    TensorFlow is imported only after indexing and packing, which fork worker processes."""
    from ..config import full_demo_dir
    from ..data import pipeline
    from ..data.demo import FULL, full_demo
    from ..data.index import build_index
    from ..data.splits import split_by_patient
    from ..io import file_workers

    rows = []
    if data_dir is None:
        data_dir = full_demo_dir()
        start = time.perf_counter()
        summary = full_demo(data_dir, seed=seed)
        took = time.perf_counter() - start
        made = "already there" if took < 30 else f"generated in {took / 60:.1f} min"
        rows.append(("data", f"{summary['patches']:,} patches, {summary['patients']} patients "
                     f"({summary['negatives']:,} negative, {summary['positives']:,} positive)",
                     f"generated (make-demo --full), {made}"))
    start = time.perf_counter()
    df, report = build_index(data_dir)
    seconds = time.perf_counter() - start
    n = len(df)
    rows.append(("index all files", f"{seconds:.1f} s ({report.files_seen / seconds:,.0f} files/s)",
                 f"< 60 s; every file read and decoded, {file_workers()} processes"))
    if data_dir == full_demo_dir() and n != FULL["negatives"] + FULL["positives"]:
        raise RuntimeError(f"{data_dir} holds {n} patches, not the full set's {FULL['negatives'] + FULL['positives']}")

    with tempfile.TemporaryDirectory(dir=Path(data_dir).parent) as tmp:
        start = time.perf_counter()
        pipeline.pack(df, Path(tmp) / "full", progress=False)
        seconds = time.perf_counter() - start
        rows.append(("pack into the array file", f"{seconds:.1f} s ({n / seconds:,.0f} img/s)",
                     f"PIL decode, {file_workers()} processes; peak memory so far {_peak_gb():.2f} GB"))
        start = time.perf_counter()
        images, table = pipeline.load_pack(Path(tmp) / "full", mmap=False)
        rows.append(("reload the pack into memory", f"{time.perf_counter() - start:.1f} s", "< 10 s"))
    labels = table["label"].to_numpy()
    rows.append(("the whole set in memory (uint8)", f"{images.nbytes / 1e9:.2f} GB", "< 4 GB"))
    from .. import hardware, models, train

    png = pipeline.make_dataset(df, batch_size=256)
    rows.append(("tf.data from PNG, one pass", f"{_drain_rate(png, n):,.0f} img/s", "decode in parallel"))
    del png
    packed = pipeline.make_dataset(images=images, labels=labels, batch_size=256)
    rows.append(("tf.data from the pack, one pass", f"{_drain_rate(packed, n):,.0f} img/s", ""))
    del packed

    # One CancerNet training epoch over the training patients (70% by patient), extrapolated
    # from ``steps`` steps: fed by the real input pipeline (shuffled pack), and by one batch
    # held in memory, which is the model's own speed. Their gap is what the input costs.
    split = split_by_patient(table, val=0.15, test=0.15, seed=seed)["split"].to_numpy()
    train_idx = np.flatnonzero(split == "train")
    per_epoch = math.ceil(len(train_idx) / batch_size)
    model = models.build_model("cancernet", seed=seed)
    train.compile_model(model, "adagrad", 0.0282)
    # all patches rather than a copy of the training rows: the speed is the same, the memory less
    fed = pipeline.make_dataset(images=images, labels=labels, batch_size=hardware.global_batch(batch_size),
                                shuffle=True, seed=seed, one_hot=True).repeat()
    import tensorflow as tf

    one = next(iter(pipeline.make_dataset(images=images[:batch_size], labels=labels[:batch_size],
                                          batch_size=batch_size, one_hot=True)))
    best = _best_steps(model, {"fed": fed, "alone": tf.data.Dataset.from_tensors(one).repeat()}, steps, repeats=repeats)
    with_input, alone = best["fed"], best["alone"]
    batches = iter(fed)
    start = time.perf_counter()
    for _ in range(1000):
        next(batches)
    supply = 1000 * batch_size / (time.perf_counter() - start)
    del fed, batches
    rows.append(("CancerNet epoch, fed by the pack",
                 f"{with_input * per_epoch:,.0f} s ({batch_size / with_input:,.0f} img/s)",
                 f"{per_epoch:,} steps of {batch_size} ({len(train_idx):,} training patches); best of {repeats} x {steps} steps, in turns with the next row"))
    rows.append(("CancerNet epoch, model alone", f"{alone * per_epoch:,.0f} s ({batch_size / alone:,.0f} img/s)",
                 "one batch held in memory: the model's own speed"))
    rows.append(("the same input pipeline, no model", f"{supply:,.0f} img/s",
                 f"{supply / (batch_size / alone):,.0f}x what the model takes: never the bottleneck"
                 if supply > 2 * batch_size / alone else "the bottleneck"))
    rows.append(("peak memory of this process", f"{_peak_gb():.2f} GB", "the set in memory, tf.data buffers, the model"))
    return rows


def print_table(rows, header=("measure", "value", "target / note")) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(f"{str(v):<{w}}" for v, w in zip(r, widths)).rstrip()  # noqa: E731
    print(line(header))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        print(line(r))


def main(data_dir=None, sample: int | None = None, full_set: bool = False) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not data_dir and not full_set:
        data_dir = SAMPLE_DIR
    if full_set:
        print_table(full(None if data_dir is None else data_dir))
        print(f"({os.cpu_count()} CPU cores; {_machine()})")
        return 0
    rows = measure(data_dir, sample=sample)
    print_table(rows, header=("measure", "value"))
    print(f"({os.cpu_count()} CPU cores; best of 2 passes after a warm-up)")
    return 0


def _machine() -> str:
    import platform

    from .. import hardware

    return f"{platform.processor() or platform.machine()}, {hardware.describe()}"
