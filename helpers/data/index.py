"""Read the Kaggle "Breast Histopathology Images" layout,
``<root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png``, into a table.

The archive nests a second copy of the tree under ``IDC_regular_ps50_idx5/``; both are read and
merged on (patient, x, y, label). Nothing is dropped silently: the report lists every unused file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from ..io import atomic_path, file_workers, process_map

NAME = re.compile(r"^(?P<patient>\d+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png$")
NESTED = "IDC_regular_ps50_idx5"
PATCH = 50
COLUMNS = ["path", "patient", "x", "y", "label", "width", "height"]

# Why a file was not used. Keys are stable: tests and notebooks read them.
SKIP_REASONS = {
    "bad_name": "name does not match <patient>_idx5_x<X>_y<Y>_class<0|1>.png",
    "outside_layout": "not inside <patient>/<0|1>/",
    "patient_mismatch": "patient id in the name differs from its folder",
    "label_mismatch": "class in the name differs from its 0/1 folder",
    "empty_file": "zero bytes",
    "undecodable": "not a readable image (corrupt, truncated or another format)",
    "conflicting_duplicate": "same patient, x, y and label as another file, but different pixels",
}


class DataError(ValueError):
    """A data directory that cannot be used at all."""


@dataclass
class IndexReport:
    root: str
    files_seen: int = 0
    unique_patches: int = 0
    patients: int = 0
    positives: int = 0
    negatives: int = 0
    duplicates_merged: int = 0
    small_patches: int = 0
    large_patches: int = 0  # wider or taller than 50: the pipeline keeps their top-left 50x50
    skipped: dict = field(default_factory=dict)
    skipped_files: list = field(default_factory=list)
    empty_patient_folders: list = field(default_factory=list)

    def summary(self, examples: int = 5) -> dict:
        """The JSON-ready summary; ``examples`` skipped files are listed per category."""
        out = asdict(self)
        out.pop("skipped_files")
        out["skipped_total"] = sum(self.skipped.values())
        out["skipped_examples"] = {reason: [] for _, reason, _ in self.skipped_files}
        for path, reason, detail in self.skipped_files:
            if len(out["skipped_examples"][reason]) < examples:
                out["skipped_examples"][reason].append({"path": path, "detail": detail})
        return out

    def to_json(self) -> str:
        return json.dumps(self.summary(), indent=2)


def data_root(root, what: str = "data directory", missing=DataError) -> Path:
    """``root`` as a Path when it is a folder; else ``missing`` (absent) or DataError, naming ``what``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise missing(f"{what} {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{what} {root} is not a folder")
    return root


def skipper(report, reasons: dict):
    """``skip(path, reason, detail="")`` counts an unused file in ``report`` (detail: ``reasons[reason]``)."""

    def skip(path, reason, detail=""):
        report.skipped[reason] = report.skipped.get(reason, 0) + 1
        report.skipped_files.append((str(path), reason, detail or reasons[reason]))

    return skip


def _inspect(path: Path, formats=("PNG",)):
    """(width, height, digest, None) for a usable image in ``formats``, else (None, None, None, (reason, detail))."""
    try:
        if path.stat().st_size == 0:
            return None, None, None, ("empty_file", "0 bytes")
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in formats:
                return None, None, None, ("undecodable", f"format {im.format}, expected {' or '.join(formats)}")
            width, height = im.size
            im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))  # JPEG: at 1/8 scale, every byte read
            im.load()  # full decode: catches truncated files, which open() alone does not
        if im.format == "PNG":
            # PIL decodes a PNG with no IEND chunk or a wrong chunk checksum, which TensorFlow's
            # decoder refuses: verify checks every chunk's CRC and the end
            with Image.open(io.BytesIO(data)) as again:
                again.verify()
    except Exception as exc:  # PIL raises many types for bad files
        return None, None, None, ("undecodable", f"{type(exc).__name__}: {exc}")
    return width, height, hashlib.blake2b(data, digest_size=16).hexdigest(), None


def walk(root):
    """``os.walk`` in sorted order, following linked folders (a patient folder linked in is data too)
    and walking each real folder once (a link back up the tree ends there)."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        yield dirpath, dirnames, filenames


# What a data folder may hold beside its patients: what it is, its licence, its checksums.
DOCUMENTS = ("GENERATED.txt", "generated.json", "README.md", "LICENSE", "SHA256SUMS", "manifest.json")


def _candidates(root: Path):
    """Yield (path, folder_patient, folder_label, reason) for every file under root."""
    for dirpath, dirnames, filenames in walk(root):
        rel = Path(dirpath).relative_to(root).parts
        if rel and rel[0] == NESTED:
            rel = rel[1:]
        for name in sorted(filenames):
            if name.startswith("."):
                continue  # .DS_Store and friends are not data
            path = Path(dirpath) / name
            if name in DOCUMENTS and not rel:  # a data set's own papers, at its top level
                continue
            if len(rel) != 2 or rel[1] not in ("0", "1"):
                yield path, None, None, "outside_layout"
            else:
                yield path, rel[0], int(rel[1]), None


def build_index(root, workers: int | None = None) -> tuple[pd.DataFrame, IndexReport]:
    """Index every patch under ``root``: the table (``COLUMNS``, one row per unique patch, sorted by
    patient, y, x) and an :class:`IndexReport`. Raises :class:`DataError` if ``root`` is missing, not a
    folder, or holds no usable patch."""
    root = data_root(root)
    report = IndexReport(root=str(root))
    patient_dirs = [d for base in (root, root / NESTED) if base.is_dir() for d in sorted(base.iterdir())
                    if d.is_dir() and d.name != NESTED]
    report.empty_patient_folders = [str(d) for d in patient_dirs if not any(p.is_file() for p in d.rglob("*"))]
    skip = skipper(report, SKIP_REASONS)

    named = []
    for path, folder_patient, folder_label, reason in _candidates(root):
        report.files_seen += 1
        if reason:
            skip(path, reason)
            continue
        match = NAME.match(path.name)
        if not match:
            skip(path, "bad_name")
            continue
        if match["patient"] != folder_patient:
            skip(path, "patient_mismatch", f"name says {match['patient']}, folder {folder_patient}")
            continue
        if int(match["label"]) != folder_label:
            skip(path, "label_mismatch", f"name says class {match['label']}, folder {folder_label}")
            continue
        named.append((path, match))

    if report.files_seen == 0:
        raise DataError(f"data directory {root} holds no files")

    # PNG decoding holds the GIL, so threads do not help; processes do. process_map decodes
    # here once TensorFlow is up (a fork can deadlock): index before importing TensorFlow.
    workers = (workers or file_workers()) if len(named) > 4000 else 1
    inspected = list(process_map(_inspect, [p for p, _ in named], workers, chunksize=512))

    rows, digests = [], []
    for (path, match), (width, height, digest, problem) in zip(named, inspected):
        if problem:
            skip(path, *problem)
            continue
        rows.append((str(path), match["patient"], int(match["x"]), int(match["y"]),
                     int(match["label"]), width, height))
        digests.append(digest)

    df = pd.DataFrame(rows, columns=COLUMNS)
    df["digest"] = digests
    # Top-level files come before the nested tree, so the top-level copy is kept.
    df["nested"] = df["path"].str.contains(f"{os.sep}{NESTED}{os.sep}", regex=False)
    df = df.sort_values(["nested", "path"], kind="stable")
    key = ["patient", "x", "y", "label"]
    dup = df.duplicated(key, keep="first")
    same = df["digest"] == df.groupby(key, sort=False)["digest"].transform("first")
    report.duplicates_merged = int((dup & same).sum())
    for path in df.loc[dup & ~same, "path"]:
        skip(path, "conflicting_duplicate")

    df = df[~dup].drop(columns=["digest", "nested"])
    if df.empty:
        raise DataError(
            f"data directory {root} holds {report.files_seen} files but no usable patch "
            f"(expected <patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png); "
            f"skipped: {report.skipped}"
        )
    df = df.sort_values(["patient", "y", "x"], kind="stable").reset_index(drop=True)
    df["label"] = df["label"].astype("int8")

    report.unique_patches = len(df)
    report.patients = int(df["patient"].nunique())
    report.positives = int(df["label"].sum())
    report.negatives = report.unique_patches - report.positives
    report.small_patches = int(((df["width"] < PATCH) | (df["height"] < PATCH)).sum())
    report.large_patches = int(((df["width"] > PATCH) | (df["height"] > PATCH)).sum())
    return df, report


def save_index(df: pd.DataFrame, path) -> Path:
    """Write the index as CSV atomically (patient ids stay strings)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path

