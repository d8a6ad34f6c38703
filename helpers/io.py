"""Small file-system helpers. Outputs are written atomically: an interrupted run never leaves a
half-written file (or generated set) where a finished one is expected."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def json_safe(value):
    """``value`` with NaN and infinities as None and NumPy scalars as Python numbers: an undefined
    score (ROC-AUC of one class) is null in JSON, never the invalid ``NaN``."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def file_workers() -> int:
    """Processes for decoding many small image files: three per core, as the reads wait on the disk
    as long as the decoding takes (277,524 patches, 2 cores, cold cache: the index took 57 s with 2
    processes and 40 s with 6)."""
    return min(8, 3 * (os.cpu_count() or 1))


def process_map(fn, jobs, workers: int, spawn_under_tensorflow: bool = False, chunksize: int = 1):
    """``fn`` over ``jobs``, results in order, in ``workers`` processes. Forking a process whose
    TensorFlow runtime is up can hang: then the workers are spawned (slower to start) or, unless
    ``spawn_under_tensorflow``, the jobs run here."""
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
    """Yield a temporary path beside ``path`` that replaces it on success. It keeps the suffix, for
    libraries that choose a format by extension (``np.save``, ``model.save``, ``savefig``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name only: the writer creates the file, so it gets the mode a plain open() gives
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


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
    """Write a generated data set at ``root`` and return its summary.

    ``write(tmp)`` draws it into a staging folder and returns ``(summary, description)``; then
    ``generated.json`` and ``GENERATED.txt`` are added and the folder renamed to ``root``. A ``root``
    holding a set made with the same ``params`` is returned as is (also when a parallel run finishes
    it first); any other non-empty ``root`` raises ValueError naming ``what`` was expected.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        found = stored_summary(root, params)
        if found is None:
            raise ValueError(f"{root} exists and is not empty, and is not {what} made with {params}: "
                             "choose another folder or remove it")
        return found
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        summary, description = write(tmp)
        (tmp / "generated.json").write_text(json.dumps({"params": params, "summary": summary}, indent=1))
        (tmp / "GENERATED.txt").write_text(
            f"{description}Parameters: {json.dumps(params)}\n"
            f"Summary: {json.dumps({k: v for k, v in summary.items() if k != 'root'})}\n")
        if root.exists():
            root.rmdir()  # empty, as checked: os.replace cannot replace a directory everywhere
        os.replace(tmp, root)
    except OSError:
        found = stored_summary(root, params)
        if found is None:
            raise
        return found
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def replace_stale(root, make):
    """``make(root)``; when ``make`` refuses (ValueError) a non-empty folder, a *generated* set there
    (GENERATED.txt: an older generator, another seed) is removed and made anew; any other folder is
    never touched."""
    root = Path(root)
    try:
        return make(root)
    except ValueError:
        if not (root / "GENERATED.txt").is_file():
            raise
        shutil.rmtree(root)
        return make(root)


def given_or_generated(given, profile: str, sizes: dict, where, make, what: str, missing=FileNotFoundError) -> Path:
    """``given`` as a Path (it must be a folder, else ``missing`` naming ``what``); None or "": the
    generated set ``sizes[profile]`` at ``where(sizes[profile][0])``, made by ``make(root, *size)``
    on first use (:func:`replace_stale`)."""
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
