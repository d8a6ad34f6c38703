"""Small file-system helpers: outputs (files, and the generated data sets' folders) are written
atomically, so an interrupted run never leaves a half-written file where a finished one is expected."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import sys
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def json_safe(value):
    """``value`` with NaN and infinities as None and NumPy scalars as Python numbers: a score that
    is undefined (ROC-AUC of one class) is null in JSON, never the invalid ``NaN``."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def file_workers() -> int:
    """Processes for reading and decoding many small image files: three per core, as the reads
    wait on the disk as long as the decoding takes (277,524 patches, 2 cores, cold cache: the
    index took 57 s with 2 processes and 40 s with 6; the pack 63 s and 38 s)."""
    return min(8, 3 * (os.cpu_count() or 1))


def process_map(fn, jobs, workers: int, spawn_under_tensorflow: bool = False, chunksize: int = 1):
    """``fn`` over ``jobs``, results in order, in ``workers`` processes when there are several
    jobs (handed out ``chunksize`` at a time). Forking a process whose TensorFlow runtime is up can hang: then the workers are
    spawned (slower to start) or, unless ``spawn_under_tensorflow``, the jobs run here."""
    jobs = list(jobs)
    tensorflow_up = "tensorflow" in sys.modules
    if workers <= 1 or len(jobs) < 2 or (tensorflow_up and not spawn_under_tensorflow):
        yield from map(fn, jobs)
        return
    context = multiprocessing.get_context("spawn" if tensorflow_up else "fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(fn, jobs, chunksize=chunksize)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    The temporary name keeps the suffix, so libraries that choose a format by
    extension (``np.save``, ``model.save``, ``savefig``) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file 0600; a finished output gets the mode a plain open() would give it
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask: read from /proc where there is one (setting it to read it would
    briefly change it for every thread of the process)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def staged_dir(root):
    """Yield a temporary sibling folder that replaces the (absent or empty) folder ``root`` on
    success; an interrupted run leaves no half-written folder where a finished one is expected."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        yield tmp
        if root.exists():
            root.rmdir()  # empty, as checked: os.replace cannot replace a directory everywhere
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def stored_summary(root, params) -> dict | None:
    """The summary of a generated set at ``root`` made with these parameters, else None."""
    root = Path(root)
    try:
        stored = json.loads((root / "generated.json").read_text())
    except (OSError, ValueError):
        return None
    same = isinstance(stored, dict) and stored.get("params") == params and (root / "GENERATED.txt").is_file()
    return {**stored["summary"], "root": str(root)} if same else None


def generated_set(root, params: dict, what: str, write) -> dict:
    """Write a generated data set at ``root`` and return its summary: ``write(tmp)`` draws it into a
    staging folder and returns ``(summary, description)``; then ``generated.json`` (parameters and
    summary) and ``GENERATED.txt`` (the description, parameters and summary) are added and the
    folder is renamed to ``root`` (:func:`staged_dir`). A ``root`` already holding a set made with
    the same ``params`` is returned as is; any other non-empty ``root`` raises ValueError naming it
    (``what`` says what was expected, e.g. "a thyroid demo set"); when a parallel run (another
    notebook) finishes the same set first, its set is taken."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        found = stored_summary(root, params)
        if found is None:
            raise ValueError(f"{root} exists and is not empty, and is not {what} made with {params}: "
                             "choose another folder or remove it")
        return found
    try:
        with staged_dir(root) as tmp:
            summary, description = write(tmp)
            (tmp / "generated.json").write_text(json.dumps({"params": params, "summary": summary}, indent=1))
            (tmp / "GENERATED.txt").write_text(
                f"{description}Parameters: {json.dumps(params)}\n"
                f"Summary: {json.dumps({k: v for k, v in summary.items() if k != 'root'})}\n")
    except OSError:
        found = stored_summary(root, params)
        if found is None:
            raise
        return found
    return summary


def replace_stale(root, make):
    """``make(root)``, where ``make`` refuses (ValueError) a non-empty folder it did not make with the
    same parameters: a *generated* set there (GENERATED.txt: an older generator, another seed) is
    removed and made anew; any other folder is never touched."""
    root = Path(root)
    try:
        return make(root)
    except ValueError:
        if not (root / "GENERATED.txt").is_file():
            raise
        shutil.rmtree(root)
        return make(root)


def given_or_generated(given, profile: str, sizes: dict, where, make, what: str, missing=FileNotFoundError) -> Path:
    """``given`` as a Path (it must be a folder, else ``missing`` naming it and ``what``); None or "":
    the generated set of the profile's size: ``sizes[profile]`` (a tuple whose first number names the
    folder ``where(n)``) made there on first use by ``make(root, *size)``, a stale generated set
    there replaced (:func:`replace_stale`)."""
    if given not in (None, ""):
        path = Path(given).expanduser()
        if not path.is_dir():
            raise missing(f"{what} {path} does not exist (None: the generated set)")
        return path
    if profile not in sizes:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(sizes)}")
    root = where(sizes[profile][0])
    replace_stale(root, lambda r: make(r, *sizes[profile]))
    return root
