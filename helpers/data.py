"""The index of a notebook's data directory, built once and reused.

Indexing decodes every file (to catch corrupt ones), about a minute on the full
277,524-patch set; notebooks after 00 reuse the saved table instead.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from .index import IndexReport, build_index, load_index, save_index
from .io import write_text


def _slug(data_dir: Path) -> str:
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"{data_dir.name}-{digest}"


def cached_index(cfg, force: bool = False) -> tuple[pd.DataFrame, dict]:
    """(index, summary) for ``cfg.data_dir``, from ``outputs/index/`` when saved there.

    ``force`` rebuilds it; so does a data directory that changed since (its
    modification time, or the first-level folder count, differs).
    """
    data_dir = Path(cfg.data_dir)
    base = Path(cfg.output_dir) / "index" / _slug(data_dir)
    table, meta = base.with_suffix(".csv"), base.with_suffix(".json")
    stamp = {"mtime": data_dir.stat().st_mtime if data_dir.exists() else None,
             "folders": sum(1 for _ in data_dir.iterdir()) if data_dir.is_dir() else None}
    if not force and table.is_file() and meta.is_file():
        saved = json.loads(meta.read_text())
        if saved.get("stamp") == stamp:
            return load_index(table), saved["summary"]
    df, report = build_index(data_dir)
    save_index(df, table)
    summary = report.summary()
    write_text(meta, json.dumps({"stamp": stamp, "summary": summary}, indent=2))
    return df, summary


__all__ = ["cached_index", "IndexReport"]
