"""``make bench``: measured speeds of the input pipelines, side by side, in one run.

``make bench`` measures the whole data set's scale on the full-size generated set (``make-demo
--full``: 277,524 patches, made on first use): indexing, packing, reloading, memory, tf.data
images/s from PNG and from the pack, and CancerNet seconds per epoch, with and without the input
pipeline. ``make bench DATA_DIR=...`` compares the input pipelines on any folder, adding a PIL
loop; there each rate is the best of 2 passes after a warm-up pass (which also fills the OS file
cache, so every method reads from memory).

Figures are measured, never asserted in tests: a shared 2-core machine is noisy.
"""

from __future__ import annotations

import math
import os
import resource
import tempfile
import time
from pathlib import Path

BATCH, SEED = 64, 0  # CancerNet's batch in the notebooks; the seed of the generated set, split and model


def timed(fn) -> tuple:
    """(what ``fn()`` returns, the seconds it took)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def step_seconds(model, ds, steps: int) -> float:
    """Seconds per training step of ``model`` on ``ds`` (repeated), after a traced warm-up."""
    model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0, shuffle=False)
    return timed(lambda: model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False))[1] / steps


def _peak_gb() -> float:
    """This process's peak resident memory so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def table(data_dir=None, sample: int | None = None, train: bool = True, steps: int = 150,
          repeats: int = 3) -> list[tuple[str, str, str]]:
    """(measure, value, target or note) rows on the full-size generated set (or ``data_dir``, at
    most ``sample`` of its patches). ``train`` False: the input pipelines alone, with a PIL loop,
    each rate the best of 2 passes after a warm-up. TensorFlow is imported only after indexing and
    packing, which fork worker processes."""
    from ..config import full_demo_dir
    from ..data import pipeline
    from ..data.demo import FULL, full_demo
    from ..data.index import build_index
    from ..io import file_workers

    passes = 1 if train else 2

    def rate(fn, n) -> str:
        if passes > 1:
            fn()  # the warm-up pass
        return f"{n / min(timed(fn)[1] for _ in range(passes)):,.0f} img/s"

    rows = []
    if data_dir is None:
        data_dir = full_demo_dir()
        summary, took = timed(lambda: full_demo(data_dir, seed=SEED))
        made = "already there" if took < 30 else f"generated in {took / 60:.1f} min"
        rows.append(("data", f"{summary['patches']:,} patches, {summary['patients']} patients "
                     f"({summary['negatives']:,} negative, {summary['positives']:,} positive)",
                     f"generated (make-demo --full), {made}"))
    (df, report), seconds = timed(lambda: build_index(data_dir))
    rows.append(("index all files", f"{seconds:.1f} s ({report.files_seen / seconds:,.0f} files/s)",
                 f"< 60 s; every file read and decoded, {file_workers()} processes"))
    if data_dir == full_demo_dir() and len(df) != (full := FULL["negatives"] + FULL["positives"]):
        raise RuntimeError(f"{data_dir} holds {len(df)} patches, not the full set's {full}")
    if sample and sample < len(df):
        df = df.sample(sample, random_state=0).reset_index(drop=True)
    n = len(df)
    if not train:
        rows.append(("PIL loop into NumPy", rate(lambda: pipeline.load_arrays(df), n), f"{n:,} patches of {data_dir}"))

    # a full-size pack (~2 GB) goes beside the full-size set rather than into a small /tmp
    with tempfile.TemporaryDirectory(dir=Path(data_dir).parent if train else None) as tmp:
        seconds = timed(lambda: pipeline.pack(df, Path(tmp) / "full", progress=False))[1]
        rows.append(("pack into the array file", f"{seconds:.1f} s ({n / seconds:,.0f} img/s)",
                     f"PIL decode, {file_workers()} processes; peak memory so far {_peak_gb():.2f} GB"))
        (images, index), seconds = timed(lambda: pipeline.load_pack(Path(tmp) / "full", mmap=False))
        rows.append(("reload the pack into memory", f"{seconds:.1f} s", "< 10 s"))
    labels = index["label"].to_numpy()
    rows.append(("the whole set in memory (uint8)", f"{images.nbytes / 1e9:.2f} GB", "< 4 GB"))
    each = "one pass" if train else "best of 2"
    png = pipeline.make_dataset(df, batch_size=256)
    rows.append((f"tf.data from PNG, {each}", rate(lambda: [None for _ in png], n), "decode in parallel"))
    packed = pipeline.make_dataset(images=images, labels=labels, batch_size=256)
    rows.append((f"tf.data from the pack, {each}", rate(lambda: [None for _ in packed], n), ""))
    del png, packed
    return rows + _cancernet(images, labels, index, steps, repeats) if train else rows


def _cancernet(images, labels, index, steps: int, repeats: int, batch_size: int = BATCH) -> list:
    """One CancerNet training epoch over the training patients (70% by patient), extrapolated
    from ``steps`` steps: fed by the real input pipeline (shuffled pack), and by one batch held in
    memory, which is the model's own speed. Their gap is what the input costs. The best of
    ``repeats``, measured in turns (a burst of other load on a shared machine then slows one pass
    of each, not every pass of one)."""
    import tensorflow as tf

    from .. import hardware, models, train
    from ..data import pipeline
    from ..data.splits import split_by_patient

    training = int((split_by_patient(index, val=0.15, test=0.15, seed=SEED)["split"] == "train").sum())
    per_epoch = math.ceil(training / batch_size)
    model = models.build_model("cancernet", seed=SEED)
    train.compile_model(model, "adagrad", 0.0282)
    # all patches rather than a copy of the training rows: the speed is the same, the memory less
    fed = pipeline.make_dataset(images=images, labels=labels, batch_size=hardware.global_batch(batch_size),
                                shuffle=True, seed=SEED, one_hot=True).repeat()
    one = next(iter(pipeline.make_dataset(images=images[:batch_size], labels=labels[:batch_size],
                                          batch_size=batch_size, one_hot=True)))
    datasets = {"fed": fed, "alone": tf.data.Dataset.from_tensors(one).repeat()}
    best = {name: math.inf for name in datasets}
    for _ in range(repeats):
        for name, ds in datasets.items():
            best[name] = min(best[name], step_seconds(model, ds, steps))
    batches = iter(fed)
    supply = 1000 * batch_size / timed(lambda: [next(batches) for _ in range(1000)])[1]
    with_input, alone = best["fed"], best["alone"]
    return [("CancerNet epoch, fed by the pack",
             f"{with_input * per_epoch:,.0f} s ({batch_size / with_input:,.0f} img/s)",
             f"{per_epoch:,} steps of {batch_size} ({training:,} training patches); best of {repeats} x {steps} "
             "steps, in turns with the next row"),
            ("CancerNet epoch, model alone", f"{alone * per_epoch:,.0f} s ({batch_size / alone:,.0f} img/s)",
             "one batch held in memory: the model's own speed"),
            ("the same input pipeline, no model", f"{supply:,.0f} img/s",
             f"{supply / (batch_size / alone):,.0f}x what the model takes: never the bottleneck"
             if supply > 2 * batch_size / alone else "the bottleneck"),
            ("peak memory of this process", f"{_peak_gb():.2f} GB", "the set in memory, tf.data buffers, the model")]


def print_table(rows) -> None:
    header = ("measure", "value", "target / note")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, None, *rows]:
        print("-" * (sum(widths) + 2 * (len(widths) - 1)) if r is None
              else "  ".join(f"{str(v):<{w}}" for v, w in zip(r, widths)).rstrip())


def main(data_dir=None, sample: int | None = None, full_set: bool = False) -> int:
    """``full_set``: the full-size set's table (or ``data_dir``'s); else the input pipelines on
    ``data_dir`` (default: the shipped sample)."""
    import platform

    from .. import hardware
    from ..config import SAMPLE_DIR

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print_table(table(data_dir or (None if full_set else SAMPLE_DIR), sample=sample, train=full_set))
    print(f"({os.cpu_count()} CPU cores; {platform.processor() or platform.machine()}, {hardware.describe()})")
    return 0
