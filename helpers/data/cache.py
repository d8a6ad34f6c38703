"""The index of a notebook's data directory, built once (decoding every file takes about a minute on
the full set) and reused while no file under it changes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from ..config import ROOT
from ..io import write_text
from .index import build_index, save_index, walk


def _slug(data_dir: Path) -> str:
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"{data_dir.name}-{digest}"


def tree_stamp(root) -> str | None:
    """One digest of every file's relative path, size and modification time under ``root`` (None if it
    is not a folder): a stat per file, no reads."""
    root = Path(root)
    if not root.is_dir():
        return None
    digest = hashlib.sha1()
    for dirpath, _, filenames in walk(root):  # as the index walks
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                info = os.stat(path)
            except OSError:  # a dangling link: the index will count it
                info = None
            digest.update(f"{os.path.relpath(path, root)}|{info and info.st_size}|"
                          f"{info and info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached_index(data_dir, output_dir=None, force: bool = False) -> tuple[pd.DataFrame, dict]:
    """(index, summary) for ``data_dir``, from ``output_dir/index/`` (None: the project's outputs/)
    unless ``force`` or a file under it was added, removed, resized or modified since (:func:`tree_stamp`)."""
    data_dir = Path(data_dir)
    base = Path(output_dir or ROOT / "outputs").expanduser() / "index" / _slug(data_dir)
    table, meta = base.with_suffix(".csv"), base.with_suffix(".json")
    stamp = {"files": tree_stamp(data_dir)}
    if not force and table.is_file() and meta.is_file():
        saved = json.loads(meta.read_text())
        if saved.get("stamp") == stamp:
            return pd.read_csv(table, dtype={"patient": str}), saved["summary"]
    df, report = build_index(data_dir)
    save_index(df, table)
    summary = report.summary()
    write_text(meta, json.dumps({"stamp": stamp, "summary": summary}, indent=2))
    return df, summary
