"""Read a folder of images into a table, with every unused file and its reason in a report: the Kaggle
"Breast Histopathology Images" layout, ``<root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png``,
here; the BreakHis and thyroid layouts use the same :func:`index_images`.

The archive nests a second copy of the tree under ``IDC_regular_ps50_idx5/``; both are read and merged
on the file name (which says patient, x, y and label).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
from collections import namedtuple
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from PIL import Image

from ..io import atomic_path, file_workers, process_map

NAME = re.compile(r"^(?P<patient>\d+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png$")
NESTED = "IDC_regular_ps50_idx5"
PATCH = 50
COLUMNS = ["path", "patient", "x", "y", "label", "width", "height"]
# Files beside the images that are not data: our markers, a data set's own papers (its licence, its
# checksums), BreakHis' fold list, a system's thumbnails.
NOT_DATA = {"GENERATED.txt", "generated.json", "README.txt", "README.md", "LICENSE", "SHA256SUMS", "manifest.json",
            "Folds.csv", "Thumbs.db"}

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


Skip = namedtuple("Skip", "reason detail", defaults=("",))  # a key of the layout's SKIP_REASONS; default text


@dataclass(frozen=True)
class Layout:
    """How a folder is read: ``name_file(path, folders)`` gives a file's fields (a dict) or a Skip."""

    what: str  # the folder, in messages
    expected: str  # the files it should hold, in messages
    name_file: Callable
    columns: list
    order: list
    formats: tuple = ("PNG",)  # as PIL names them
    missing: type = DataError  # raised for a folder that does not exist
    unique_names: bool = False  # a file name found twice counts once: the copy found first (top folders first)
    item: str = "image"  # what one file is, in messages


@dataclass
class Report:
    """What an index found: every skipped file with its reason and the copies merged; a layout's report
    adds its counts (:meth:`count`)."""

    REASONS = {}  # the reasons' texts
    LISTS = ("duplicate_files",)  # fields the summary shortens to a few examples and a total
    root: str
    files_seen: int = 0
    skipped: dict = field(default_factory=dict)
    skipped_files: list = field(default_factory=list)
    duplicates_merged: int = 0
    duplicate_files: list = field(default_factory=list)  # (kept, dropped copy)

    def skip(self, path, reason, detail=""):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skipped_files.append((str(path), reason, detail or self.REASONS[reason]))

    def count(self, df: pd.DataFrame):
        """Fill the layout's counts from the index table."""

    def summary(self, examples: int = 5) -> dict:
        """The JSON-ready summary; ``examples`` files per skipped category and per list."""
        out = asdict(self)
        out.pop("skipped_files")
        out["skipped_total"] = sum(self.skipped.values())
        found = out["skipped_examples"] = {reason: [] for _, reason, _ in self.skipped_files}
        for path, reason, detail in self.skipped_files:
            if len(found[reason]) < examples:
                found[reason].append({"path": path, "detail": detail})
        for key in self.LISTS:
            out[key] = getattr(self, key)[:examples]
            out[f"{key}_total"] = len(getattr(self, key))
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


def files(root: Path):
    """Yield (path, folders between root and the file) for every data file under root, sorted."""
    for dirpath, _, filenames in walk(root):
        folders = Path(dirpath).relative_to(root).parts
        for name in sorted(filenames):
            if not name.startswith(".") and name not in NOT_DATA:  # .DS_Store and friends
                yield Path(dirpath) / name, folders


def index_images(root, layout: Layout, report_type: type) -> tuple[pd.DataFrame, Report]:
    """The table of every usable image under ``root`` and a ``report_type`` of the folder. Raises
    ``layout.missing`` if root does not exist, DataError if it holds no usable image, naming it."""
    root = data_root(root, layout.what, layout.missing)
    report = report_type(root=str(root))
    named = []
    for path, folders in files(root):
        report.files_seen += 1
        info = layout.name_file(path, folders)
        if isinstance(info, Skip):
            report.skip(path, *info)
        else:
            named.append((path, info))
    if report.files_seen == 0:
        raise DataError(f"{layout.what} {root} holds no files")
    # PNG decoding holds the GIL, so threads do not help; processes do. process_map decodes here
    # once TensorFlow is up (a fork can deadlock): index before importing TensorFlow.
    paths = [path for path, _ in named]
    inspected = process_map(functools.partial(_inspect, formats=layout.formats), paths,
                            file_workers() if len(paths) > 500 else 1, chunksize=256)
    rows, kept = [], {}  # kept: file name -> (path, digest) of its first copy, with unique_names
    for (path, info), (width, height, digest, problem) in zip(named, inspected):
        first = kept.get(path.name)
        if problem:
            report.skip(path, *problem)
        elif first and first[1] != digest:
            report.skip(path, "conflicting_duplicate", f"differs from {first[0]}")
        elif first:
            report.duplicate_files.append((str(first[0]), str(path)))
        else:
            if layout.unique_names:
                kept[path.name] = (path, digest)
            rows.append({**info, "path": str(path), "width": width, "height": height})
    if not rows:
        raise DataError(f"{layout.what} {root} holds {report.files_seen} files but no usable {layout.item} "
                        f"(expected {layout.expected}); skipped: {report.skipped}")
    df = pd.DataFrame(rows)[layout.columns].sort_values(layout.order, kind="stable").reset_index(drop=True)
    df["label"] = df["label"].astype("int8")
    report.duplicates_merged = len(report.duplicate_files)
    report.count(df)
    return df, report


def _name_file(path, folders):
    """The patient, x, y and label of a patch from its name, or a Skip: outside ``<patient>/<0|1>/``
    (of the top tree or the nested one), a bad name, or a name its folders contradict."""
    if folders[:1] == (NESTED,):
        folders = folders[1:]
    if len(folders) != 2 or folders[1] not in ("0", "1"):
        return Skip("outside_layout")
    match = NAME.match(path.name)
    if not match:
        return Skip("bad_name")
    if match["patient"] != folders[0]:
        return Skip("patient_mismatch", f"name says {match['patient']}, folder {folders[0]}")
    if match["label"] != folders[1]:
        return Skip("label_mismatch", f"name says class {match['label']}, folder {folders[1]}")
    return {"patient": match["patient"], "x": int(match["x"]), "y": int(match["y"]), "label": int(match["label"])}


# The nested tree sorts after the patients' numbered folders: the top-level copy is the one kept.
LAYOUT = Layout("data directory", "<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png", _name_file, COLUMNS,
                ["patient", "y", "x"], unique_names=True, item="patch")


@dataclass
class IndexReport(Report):
    REASONS = SKIP_REASONS
    unique_patches: int = 0
    patients: int = 0
    positives: int = 0
    negatives: int = 0
    small_patches: int = 0
    large_patches: int = 0  # wider or taller than 50: the pipeline keeps their top-left 50x50
    empty_patient_folders: list = field(default_factory=list)

    def count(self, df):
        self.unique_patches = len(df)
        self.patients = int(df["patient"].nunique())
        self.positives = int(df["label"].sum())
        self.negatives = self.unique_patches - self.positives
        self.small_patches = int(((df["width"] < PATCH) | (df["height"] < PATCH)).sum())
        self.large_patches = int(((df["width"] > PATCH) | (df["height"] > PATCH)).sum())
        root = Path(self.root)
        self.empty_patient_folders = [str(d) for base in (root, root / NESTED) if base.is_dir()
                                      for d in sorted(base.iterdir()) if d.is_dir() and d.name != NESTED
                                      and not any(p.is_file() for p in d.rglob("*"))]


def build_index(root) -> tuple[pd.DataFrame, IndexReport]:
    """Index every patch under ``root``: the table (``COLUMNS``, one row per unique patch, sorted by
    patient, y, x) and an :class:`IndexReport`. :class:`DataError` if ``root`` has no usable patch."""
    return index_images(root, LAYOUT, IndexReport)


def save_index(df: pd.DataFrame, path) -> Path:
    """Write the index as CSV atomically."""
    with atomic_path(Path(path)) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)
