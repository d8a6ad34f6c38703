"""The results registry: ``outputs/results.csv``, one row per run of any notebook (the union of
their columns), replaced atomically at every write so that a crash never truncates it."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pandas as pd
from filelock import FileLock

from .io import atomic_path

FIRST = ["time", "notebook", "run", "profile", "data", "generated", "split"]


def registry_path(output_dir) -> Path:
    return Path(output_dir) / "results.csv"


def record(cfg, notebook: str, rows: list[dict], split: str) -> pd.DataFrame:
    """Append ``rows`` (one dict per run) for ``notebook``; return the whole registry. ``split`` names
    the split they were measured on (e.g. "test, by patient, seed 42"): no number is read without it."""
    if not rows:
        raise ValueError(f"{notebook}: no result rows to record")
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    new = pd.DataFrame([
        {"time": stamp, "notebook": notebook, "profile": cfg.profile, "data": str(cfg.data_dir),
         "generated": cfg.generated, "split": split, **row}
        for row in rows
    ])
    path = registry_path(cfg.output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Read-modify-write under a lock: two runs appending at once both keep their rows.
    with FileLock(str(path) + ".lock", timeout=120):
        old = _load_or_set_aside(path)
        table = pd.concat([old, new], ignore_index=True) if len(old) else new
        table = table[[c for c in FIRST if c in table] + [c for c in table if c not in FIRST]]
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    return table


def load(path) -> pd.DataFrame:
    """The registry at ``path`` (a file, or the output folder holding it); empty if there is none."""
    path = registry_path(path) if Path(path).is_dir() else Path(path)
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=FIRST)


def _load_or_set_aside(path) -> pd.DataFrame:
    """The registry, or, when it does not parse, an empty one: the old file is moved aside (with a
    warning naming both) so that it blocks no later run and its rows can be recovered by hand."""
    try:
        return load(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.stem}.corrupt-{stamp}{path.suffix}")
        path.replace(aside)
        warnings.warn(f"{path} could not be read ({type(exc).__name__}: {str(exc).strip()[:120]}); "
                      f"moved aside to {aside.name}, a new registry starts", stacklevel=3)
        return pd.DataFrame(columns=FIRST)
