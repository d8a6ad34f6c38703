"""Thyroid ultrasound (notebooks 16-17): a folder of benign / malignant nodule images as a table, split
by nodule. The seed project's data: JPG exports named ``B_001-0002-1.0.jpg`` (benign) or ``M_...``
(malignant), in ``train`` and ``test`` folders, in two versions side by side: the "uncropped" scanner
frame (with on-screen text, depth ruler and calliper marks) and the same set "cropped" to the nodule::

    <root>/[cropped|uncropped/][train|test/][benign|malignant/]<B|M>_<nodule>-<image>-<n>.jpg

every bracketed level optional and folder names read case-insensitively; the label comes from the
``B_``/``M_`` prefix or the class folder (both must agree when both are there). ``group`` is the
nodule: its class letter and the number in the name, ``B_001`` for ``B_001-0002-1.0.jpg``; the
seed's sets number benign and malignant nodules separately, so ``B_001`` and ``M_001`` are two.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import imagesets
from ..config import is_generated  # noqa: F401  (notebook 17, the tests and the track call them here)
from ..data.index import SKIP_REASONS as IDC_SKIP_REASONS
from ..data.index import Layout, Skip, index_images
from ..imagesets import CLASSES, TrackReport, class_counts, image_grid, load_rgb, split_by_patient_label
from ..imagesets import load_images  # noqa: F401  (as is_generated)

COLUMNS = ["path", "label", "variant", "subset", "group", "width", "height"]
VARIANTS = ("cropped", "uncropped")
SUBSETS = ("train", "test")
EXTENSIONS = (".jpg", ".jpeg", ".png")
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
GENERATED_LABEL = "generated thyroid demo data"


def parse_name(name) -> tuple[int | None, str]:
    """(label from the ``B_``/``M_`` prefix or None, nodule number) of a file name: the leading number
    after the prefix (``B_001-0002-1.0.jpg`` -> ``"001"``); a name without one is its own nodule,
    named by its stem less the prefix (``B_scan.jpg`` -> ``"scan"``)."""
    stem = Path(name).stem
    m = PREFIX.match(stem)
    label, rest = (int(m["cls"].upper() == "M"), m["rest"]) if m else (None, stem)
    g = GROUP.match(rest)
    return label, g["id"] if g else rest


def group_id(label: int, nodule: str) -> str:
    """The nodule's id: class letter and number, ``group_id(1, "001") == "M_001"``."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (benign) or 1 (malignant), not {label!r}")
    return f"{'BM'[label]}_{nodule}"


def _name_file(path, folders):
    """The label, variant, subset and group of a file from its name and the folders above it, or a Skip."""
    if path.suffix.lower() not in EXTENSIONS:
        return Skip("unsupported_extension", f"extension {path.suffix or '(none)'!r}")
    said = {}  # label, variant and subset, as the folders say them
    for part in map(str.lower, folders):
        if part in CLASS_FOLDERS:
            key, value = "label", CLASS_FOLDERS[part]
        elif m := SUBSET_FOLDER.fullmatch(part):
            key, value = "subset", m["subset"]
        elif m := VARIANT_FOLDER.fullmatch(part):
            key, value = "variant", VARIANTS[bool(m["un"])]
        else:
            continue
        if said.setdefault(key, value) != value:
            return Skip("folder_conflict", f"{key}: {said[key]} and then {value} ({'/'.join(folders)})")
    named, nodule = parse_name(path.name)
    label = said.get("label", named)
    if named is not None and named != label:
        return Skip("label_mismatch", f"name says {CLASSES[named]}, folder {CLASSES[label]}")
    if label is None:
        return Skip("no_label")
    return {"label": label, "variant": said.get("variant", ""), "subset": said.get("subset", ""),
            "group": group_id(label, nodule)}


# MPO: some cameras' JPEGs
LAYOUT = Layout("thyroid data directory", f"JPG/PNG named {PATTERN} or in benign/malignant folders", _name_file,
                COLUMNS, ["variant", "subset", "path"], formats=("JPEG", "MPO", "PNG"))


@dataclass
class ThyroidReport(TrackReport):
    REASONS = SKIP_REASONS
    LISTS = ("numbers_in_both_classes", "groups_in_train_and_test")
    groups: int = 0
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

    def count(self, df):
        super().count(df)
        self.groups = int(df["group"].nunique())
        self.variants, self.subsets = sorted(set(df["variant"])), sorted(set(df["subset"]))
        for (variant, subset), part in df.groupby(["variant", "subset"]):
            self.counts["/".join(p for p in (variant, subset) if p) or "all"] = class_counts(part["label"])
        self.width_range, self.height_range = ([int(df[c].min()), int(df[c].max())] for c in ("width", "height"))
        numbers = df["group"].str[2:].groupby(df["label"]).agg(set)
        self.numbers_in_both_classes = sorted(numbers.get(0, set()) & numbers.get(1, set()))
        moved = _moved_to_test(df)
        self.groups_in_train_and_test = sorted(set(df.loc[moved, "group"]))
        self.moved_to_test = int(moved.sum())


def build_index(root) -> tuple[pd.DataFrame, ThyroidReport]:
    """The table (``COLUMNS``; ``variant`` and ``subset`` from the folders *below* root, "" where none
    says it) of every thyroid ultrasound image under ``root``, and a :class:`ThyroidReport`."""
    return index_images(root, LAYOUT, ThyroidReport)


def _moved_to_test(df: pd.DataFrame) -> pd.Series:
    """True for an image outside the given test folder whose nodule has an image in it (in any variant)."""
    given = df["subset"].eq("test")
    return df["group"].isin(set(df.loc[given, "group"])) & ~given


def split(df: pd.DataFrame, val: float = 0.15, test: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """The index with a ``split`` column (train/val/test), by group: every image of a nodule on one side,
    the same in every variant, groups drawn per class. When the index has a ``test`` subset, every nodule
    with an image in it is a test nodule, whole (``test`` is then unused): its images from the training
    folder join the test split, marked in the column ``moved_to_test``; ``val`` is the share of the other
    groups drawn for validation (the seed's ``validation_split``). Otherwise both are shares of all groups."""
    given = df["subset"].eq("test")
    moved = _moved_to_test(df)
    rest = df[~(given | moved)]
    if rest.empty:
        raise ValueError("split: every nodule has an image in the test folder, none left to train on")
    drawn = split_by_patient_label(rest, val=val, test=0.0 if given.any() else test, seed=seed, by="group")
    return df.assign(split=drawn["split"].reindex(df.index, fill_value="test"), moved_to_test=moved)


data_label = functools.partial(imagesets.data_label, generated=GENERATED_LABEL, real="real data")


def counts_table(df: pd.DataFrame) -> pd.DataFrame:
    """Images per variant and subset by class, with groups and the malignant share ("-": no such folder)."""
    rows = [{"variant": variant or "-", "subset": subset or "-", **class_counts(part["label"]),
             "images": len(part), "groups": part["group"].nunique()}
            for (variant, subset), part in df.groupby(["variant", "subset"], sort=True)]
    table = pd.DataFrame(rows)
    table["malignant %"] = (100 * table["malignant"] / table["images"]).round(1)
    return table.set_index(["variant", "subset"])


def example_grid(df: pd.DataFrame, n: int = 4):
    """``n`` benign (top) and ``n`` malignant (bottom) examples, each of another group; where the
    index has both variants, each example's cropped version beside its uncropped one (same subset
    and file name)."""
    from ..plots import CLASS_COLOURS

    if df.empty:
        raise ValueError("example_grid got an empty table")
    table = df.assign(name=df["path"].map(lambda p: Path(p).name))
    both = table[table["variant"] == "cropped"].merge(table[table["variant"] == "uncropped"],
                                                      on=["subset", "name"], suffixes=("", "_uncropped"))
    paired = len(both) > 0
    table, per = (both, 2) if paired else (table, 1)
    rng, panels = np.random.default_rng(0), []
    for label in (0, 1):
        part = table[table["label"] == label]
        first = part.groupby("group").nth(0) if len(part) else part
        for k, (_, row) in enumerate(first.iloc[rng.permutation(len(first))[:n]].iterrows()):
            paths = [(row["path"], "cropped"), (row["path_uncropped"], "uncropped")] if paired else \
                [(row["path"], row["variant"])]
            for j, (path, what) in enumerate(paths):
                title = f"{CLASSES[label]} {row['group']}" + (f"\n{what}" if what else "")
                panels.append((label, k * per + j, np.asarray(load_rgb(path)), title, CLASS_COLOURS[label]))
    source = data_label(os.path.commonpath(list(df["path"])))
    fig, _ = image_grid((2, n * per), (1.9 * n * per + 0.6, 4.8), "Thyroid ultrasound: benign (top) and "
                           f"malignant (bottom) nodules\n({source})", panels)
    fig.set_layout_engine("constrained")  # panels of other shapes: tight_layout let titles overlap images
    return fig
