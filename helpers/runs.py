"""The one run cache of every cached step (``train.fit``, studies, recipes, folds, pretraining, searches):
a finished run's record is saved with a fingerprint of its settings (data included), so a rerun with
the same settings reads it back and a run with other settings never takes it for its own."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from filelock import FileLock, Timeout

from .io import write_text


def fingerprint(*parts, length: int = 12) -> str:
    """A short sha1 of ``parts``: each as canonical JSON (keys sorted; what JSON cannot show, as
    its ``str``), a numpy array by its bytes."""
    h = hashlib.sha1()
    for part in parts:
        h.update(part.tobytes() if hasattr(part, "tobytes") else
                 json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:length]


def read_record(path, key: str) -> dict | None:
    """The record saved at ``path`` (JSON) if it was saved with ``key``; else None."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    same = isinstance(saved, dict) and saved.get("key") == key
    return {k: v for k, v in saved.items() if k != "key"} if same else None


def write_record(path, key: str, record: dict, default=float) -> None:
    """Save ``record`` with ``key`` at ``path``, atomically (``default``: see ``json.dumps``)."""
    write_text(path, json.dumps({**record, "key": key}, indent=2, default=default))


@contextlib.contextmanager
def claimed(folder):
    """Hold ``folder`` for one training process: a second process that tries to train the same run
    folder meanwhile (and would resume it under the first one's feet) stops with an error naming it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / "training.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RuntimeError(f"{folder} is being trained by another process; wait for it to finish "
                           f"(this one is process {os.getpid()})") from None
    try:
        yield folder
    finally:
        lock.release()
