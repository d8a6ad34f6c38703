"""Thyroid ultrasound (notebooks 16-17): read a folder of benign / malignant nodule images into a
table, split it by nodule, turn the images into model inputs. The *generated* demo set is drawn
in :mod:`helpers.thyroid.generator`.

The seed project's data: JPG exports of thyroid ultrasound, named ``B_001-0002-1.0.jpg`` (benign)
or ``M_...`` (malignant), in ``train`` and ``test`` folders, in two versions side by side: the
"uncropped" scanner frame (with on-screen text, depth ruler and calliper marks) and the same set
"cropped" to the nodule. Accepted here::

    <root>/[cropped|uncropped/][train|test/][benign|malignant/]<B|M>_<nodule>-<image>-<n>.jpg

every bracketed level optional and folder names read case-insensitively; the label comes from the
``B_``/``M_`` prefix or the class folder (both must agree when both are there). ``group`` is the
nodule: its class letter and the number in the name, ``B_001`` for ``B_001-0002-1.0.jpg``. The class
is part of it because the seed's sets number benign and malignant nodules separately: ``B_001`` and
``M_001`` are two nodules. Every image of a group goes to one side of a split, also when the given
``train`` and ``test`` folders both hold images of it (:func:`split`).

As in :mod:`helpers.data.index`, nothing is dropped silently: every file that cannot be used is counted
by category in the report, with a few examples.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..breakhis.index import _files, _inspect_all
from ..breakhis.index import split_by_patient_label as _split_groups
from ..data.index import DataError, IndexReport, data_root, skipper
from ..data.index import SKIP_REASONS as IDC_SKIP_REASONS

COLUMNS = ["path", "label", "variant", "subset", "group", "width", "height"]
CLASSES = ("benign", "malignant")
VARIANTS = ("cropped", "uncropped")
SUBSETS = ("train", "test")
EXTENSIONS = (".jpg", ".jpeg", ".png")
FORMATS = ("JPEG", "MPO", "PNG")  # what PIL calls the decoded files (MPO: some cameras' JPEGs)
NOT_DATA = {"GENERATED.txt", "generated.json", "README.txt", "README.md", "LICENSE", "Thumbs.db"}
PATTERN = "<B|M>_<nodule>-<image>-<n>.jpg"

PREFIX = re.compile(r"^(?P<cls>[BbMm])[_-](?P<rest>.+)$")  # B_... benign, M_... malignant
GROUP = re.compile(r"^(?P<id>\d+)(?:[-_.]|$)")  # the leading number: 001 of 001-0002-1.0
# Folder names, lower-cased: the seed's cropped set has "Train2" and "Test2".
CLASS_FOLDERS = {"benign": 0, "malignant": 1, "cancer": 1}
SUBSET_FOLDER = re.compile(r"(?P<subset>train|test)(?:ing)?[-_ ]?\d*")
VARIANT_FOLDER = re.compile(r"(?P<un>un|non[-_ ]?)?crop(?:ped)?")

# Why a file was not used. Keys are stable: tests and notebooks read them.
SKIP_REASONS = {
    "unsupported_extension": f"not {', '.join(EXTENSIONS)}",
    "no_label": "no B_/M_ prefix in the name and no benign/malignant folder above it",
    "label_mismatch": "the B_/M_ prefix differs from its benign/malignant folder",
    "folder_conflict": "two folders on its path say different things (e.g. benign/.../malignant/)",
    **{k: IDC_SKIP_REASONS[k] for k in ("empty_file", "undecodable")},
}


# ---------------------------------------------------------------- names and folders


def parse_name(name) -> tuple[int | None, str]:
    """(label from the ``B_``/``M_`` prefix or None, nodule number) of a file name. The number is the
    leading one after the prefix (``B_001-0002-1.0.jpg`` -> ``"001"``); a name without one is its
    own nodule, named by its stem less the prefix (``B_scan.jpg`` -> ``"scan"``). The number alone
    is not a nodule: see :func:`group_id`."""
    stem = Path(name).stem
    m = PREFIX.match(stem)
    label, rest = (int(m["cls"].upper() == "M"), m["rest"]) if m else (None, stem)
    g = GROUP.match(rest)
    return label, g["id"] if g else rest


def group_id(label: int, nodule: str) -> str:
    """The nodule's id: class letter and number, ``group_id(1, "001") == "M_001"`` (benign and
    malignant nodules are numbered separately, so the number alone would join two nodules)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (benign) or 1 (malignant), not {label!r}")
    return f"{'BM'[label]}_{nodule}"


def _folder_roles(folders) -> tuple[dict, str | None]:
    """What the folders between root and a file say: {"label", "variant", "subset"} (absent when no
    folder says it), and a conflict message when two folders say different things."""
    said = {}
    for part in folders:
        low = part.lower()
        found = {}
        if low in CLASS_FOLDERS:
            found["label"] = CLASS_FOLDERS[low]
        elif m := SUBSET_FOLDER.fullmatch(low):
            found["subset"] = m["subset"]
        elif m := VARIANT_FOLDER.fullmatch(low):
            found["variant"] = VARIANTS[bool(m["un"])]
        for key, value in found.items():
            if said.get(key, value) != value:
                return said, f"{key}: {said[key]} and then {value} ({'/'.join(folders)})"
            said[key] = value
    return said, None


# ---------------------------------------------------------------- index


@dataclass
class ThyroidReport:
    """What build_index found: counts per variant, subset and class, groups, and every skipped file
    with its reason."""

    root: str
    files_seen: int = 0
    images: int = 0
    groups: int = 0
    benign: int = 0
    malignant: int = 0
    variants: list = field(default_factory=list)
    subsets: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # "cropped/train" -> {"benign": n, "malignant": n}
    width_range: list = field(default_factory=list)  # [min, max]
    height_range: list = field(default_factory=list)
    # Nodule numbers that both a B_ and an M_ nodule use: two nodules each, kept apart by group_id.
    numbers_in_both_classes: list = field(default_factory=list)
    # Nodules with images in both the given train and test folders (in any variant), and how many
    # of their images, outside the test folder, split() moves to the test split.
    groups_in_train_and_test: list = field(default_factory=list)
    moved_to_test: int = 0
    skipped: dict = field(default_factory=dict)
    skipped_files: list = field(default_factory=list)

    def summary(self, examples: int = 5) -> dict:
        """The JSON-ready summary, as the IDC report's; ``examples`` files per category and groups."""
        out = IndexReport.summary(self, examples)
        for key in ("numbers_in_both_classes", "groups_in_train_and_test"):
            out[key] = getattr(self, key)[:examples]
            out[f"{key}_total"] = len(getattr(self, key))
        return out

    to_json = IndexReport.to_json


def _count_key(variant, subset) -> str:
    return "/".join(p for p in (variant, subset) if p) or "all"


def build_index(root, workers: int | None = None) -> tuple[pd.DataFrame, ThyroidReport]:
    """Index every thyroid ultrasound image under ``root``: the folder holding ``cropped/`` and
    ``uncropped/``, one of them, or any folder of images (see the module's docstring).

    Returns the table (``COLUMNS``: ``label`` 0 benign / 1 malignant; ``variant`` "cropped",
    "uncropped" or "" and ``subset`` "train", "test" or "" from the folders *below* root; ``group``
    from the name) sorted by variant, subset and path, and a :class:`ThyroidReport`. Raises
    :class:`~helpers.data.index.DataError` if ``root`` is missing, not a folder, empty, or holds no usable
    image.
    """
    root = data_root(root, "thyroid data directory")
    report = ThyroidReport(root=str(root))
    skip = skipper(report, SKIP_REASONS)

    named = []
    for path, folders in _files(root, NOT_DATA):
        report.files_seen += 1
        if path.suffix.lower() not in EXTENSIONS:
            skip(path, "unsupported_extension", f"extension {path.suffix or '(none)'!r}")
            continue
        said, conflict = _folder_roles(folders)
        if conflict:
            skip(path, "folder_conflict", conflict)
            continue
        label, nodule = parse_name(path.name)
        folder_label = said.get("label")
        if label is not None and folder_label is not None and label != folder_label:
            skip(path, "label_mismatch", f"name says {CLASSES[label]}, folder {CLASSES[folder_label]}")
            continue
        label = folder_label if label is None else label
        if label is None:
            skip(path, "no_label")
            continue
        named.append((path, label, said.get("variant", ""), said.get("subset", ""), group_id(label, nodule)))
    if report.files_seen == 0:
        raise DataError(f"thyroid data directory {root} holds no files")

    rows, inspected = [], _inspect_all([n[0] for n in named], workers, FORMATS)
    for (path, *info), (width, height, _, problem) in zip(named, inspected):
        if problem:
            skip(path, *problem)
        else:
            rows.append((str(path), *info, width, height))
    if not rows:
        raise DataError(f"thyroid data directory {root} holds {report.files_seen} files but no usable image "
                        f"(expected JPG/PNG named {PATTERN} or in benign/malignant folders); "
                        f"skipped: {report.skipped}")
    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df.sort_values(["variant", "subset", "path"], kind="stable").reset_index(drop=True)
    df["label"] = df["label"].astype("int8")
    _count(report, df)
    return df, report


def _count(report: ThyroidReport, df: pd.DataFrame):
    """Fill the report's totals from the index."""
    report.images, report.groups = len(df), int(df["group"].nunique())
    report.malignant = int(df["label"].sum())
    report.benign = report.images - report.malignant
    report.variants = sorted(set(df["variant"]))
    report.subsets = sorted(set(df["subset"]))
    for (variant, subset), part in df.groupby(["variant", "subset"]):
        n = np.bincount(part["label"], minlength=2)
        report.counts[_count_key(variant, subset)] = {"benign": int(n[0]), "malignant": int(n[1])}
    report.width_range = [int(df["width"].min()), int(df["width"].max())]
    report.height_range = [int(df["height"].min()), int(df["height"].max())]
    numbers = df["group"].str[2:].groupby(df["label"]).agg(set)
    report.numbers_in_both_classes = sorted(numbers.get(0, set()) & numbers.get(1, set()))
    moved = _moved_to_test(df)
    report.groups_in_train_and_test = sorted(set(df.loc[moved, "group"]))
    report.moved_to_test = int(moved.sum())


# ---------------------------------------------------------------- splits


def _moved_to_test(df: pd.DataFrame) -> pd.Series:
    """True for an image outside the given test folder whose nodule has an image in it (in any
    variant): :func:`split` puts these in the test split."""
    given = df["subset"].eq("test")
    return df["group"].isin(set(df.loc[given, "group"])) & ~given


def split(df: pd.DataFrame, val: float = 0.15, test: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """The index with a ``split`` column (train/val/test), by group: every image of a nodule on one
    side, and the same side in every variant (a nodule's cropped and uncropped images together).

    When the index has a ``test`` subset, every nodule with an image in it is a test nodule: all
    its images are the test split (``test`` is then unused), and ``val`` is the share of the other
    groups drawn for validation (as the seed's ``validation_split`` of the train folder); otherwise
    ``test`` and ``val`` are shares of all groups. A nodule found in both given folders thus goes
    to test whole: the test folder stays whole, and its images from the training folder join it
    rather than being dropped. The column ``moved_to_test`` marks those images (the report of
    :func:`build_index` counts them). Groups are drawn per class, so each split keeps the malignant
    share of groups; shares are of groups, not images, rounded, at least one group per split and
    class where possible (:func:`helpers.breakhis.index.split_by_patient`); the same seed gives the same
    split.
    """
    for name, frac in (("val", val), ("test", test)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} fraction must be in [0, 1), got {frac}")
    if val + test >= 1:
        raise ValueError(f"val + test must leave groups for training, got {val} + {test}")
    out = df.copy()
    given = out["subset"].eq("test")
    moved = _moved_to_test(out)
    to_test = given | moved
    groups = out[~to_test].groupby("group")["label"].max().rename_axis("patient").reset_index()
    if groups.empty:
        raise ValueError("split: every nodule has an image in the test folder, none left to train on")
    drawn = _split_groups(groups, val=val, test=0.0 if given.any() else test, seed=seed)
    owner = dict(zip(drawn["patient"], drawn["split"]))
    out["split"] = out["group"].map(owner)
    out.loc[to_test, "split"] = "test"
    out["moved_to_test"] = moved
    return out


# ---------------------------------------------------------------- model inputs


def load_images(df: pd.DataFrame, size: int) -> np.ndarray:
    """The images of ``df`` as uint8 (n, size, size, 3): decoded, converted to RGB and resized to
    ``size`` x ``size`` (PIL, bilinear). The aspect ratio is NOT kept (as Keras'
    ``flow_from_directory`` with ``target_size``): a wide crop is squeezed. A JPEG much larger than
    ``size`` is decoded at a reduced scale first (libjpeg's DCT scaling, never below ``size``),
    several times faster. Raises ValueError naming a file that cannot be read."""
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    out = np.empty((len(df), size, size, 3), np.uint8)
    for i, path in enumerate(df["path"]):
        try:
            with Image.open(path) as im:
                im.draft(None, (size, size))
                out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        except OSError as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from exc
    return out


# ---------------------------------------------------------------- where the data are


def is_generated(root) -> bool:
    """True for the generated demo set, or a folder of it (``<set>/cropped``, ``<set>/cropped/train``)."""
    root = Path(root)
    return any((p / "GENERATED.txt").is_file() for p in (root, *list(root.parents)[:2]))


GENERATED_LABEL = "generated thyroid demo data"


def data_label(root) -> str:
    """``GENERATED_LABEL`` or "real data: <folder>", for titles and tables' ``data`` column."""
    return GENERATED_LABEL if is_generated(root) else f"real data: {Path(root).name}"


# ---------------------------------------------------------------- tables and figures


def counts_table(df: pd.DataFrame) -> pd.DataFrame:
    """Images per variant and subset by class, with groups and the malignant share, and a total row
    per variant when it has several subsets ("-": no such folder)."""
    rows = []
    for (variant, subset), part in df.groupby(["variant", "subset"], sort=True):
        n = np.bincount(part["label"], minlength=2)
        rows.append({"variant": variant or "-", "subset": subset or "-", "benign": int(n[0]),
                     "malignant": int(n[1]), "images": len(part), "groups": part["group"].nunique()})
    table = pd.DataFrame(rows)
    table["malignant %"] = (100 * table["malignant"] / table["images"]).round(1)
    return table.set_index(["variant", "subset"])


def example_grid(df: pd.DataFrame, n: int = 4, seed: int = 0, source: str | None = None):
    """``n`` benign (top) and ``n`` malignant (bottom) examples, each of another group; where the
    index has both variants, each example's cropped version beside its uncropped one (same subset
    and file name). Titled with ``source`` (default: :func:`data_label` of the images' folder)."""
    import matplotlib.pyplot as plt

    if df.empty:
        raise ValueError("example_grid got an empty table")
    if source is None:
        source = data_label(os.path.commonpath(list(df["path"])))
    table = df.assign(name=df["path"].map(lambda p: Path(p).name))
    paired = set(table["variant"]) >= set(VARIANTS)
    key = ["subset", "name"]
    if paired:
        both = table[table["variant"] == "cropped"].merge(table[table["variant"] == "uncropped"], on=key,
                                                          suffixes=("", "_uncropped"))
        table = both if len(both) else table
        paired = len(both) > 0
    rng = np.random.default_rng(seed)
    per = 2 if paired else 1
    fig, axes = plt.subplots(2, n * per, figsize=(1.9 * n * per + 0.6, 4.8), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for label in (0, 1):
        part = table[table["label"] == label]
        first = part.groupby("group").nth(0) if len(part) else part
        pick = first.iloc[rng.permutation(len(first))[:n]]
        for k, (_, row) in enumerate(pick.iterrows()):
            paths = [(row["path"], "cropped")]
            if paired:
                paths.append((row["path_uncropped"], "uncropped"))
            elif row["variant"]:
                paths = [(row["path"], row["variant"])]
            for j, (path, what) in enumerate(paths):
                ax = axes[label, k * per + j]
                with Image.open(path) as im:
                    ax.imshow(np.asarray(im.convert("RGB")))
                ax.set_title(f"{CLASSES[label]} {row['group']}\n{what}" if what else
                             f"{CLASSES[label]} {row['group']}", fontsize=8,
                             color="#c44e52" if label else "#4c72b0")
    fig.suptitle(f"Thyroid ultrasound: benign (top) and malignant (bottom) nodules\n({source})", fontsize=11)
    fig.tight_layout()
    return fig
