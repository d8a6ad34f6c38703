"""What the BreakHis and thyroid tracks share: the report of an index of benign / malignant images
(``data.index.index_images`` reads the folder), a split by patient drawn per class, the generated
sets' marks, image grids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .config import is_generated
from .data.index import Report
from .data.splits import SPLITS, _check_fractions

CLASSES = ("benign", "malignant")


@dataclass
class TrackReport(Report):
    """What a track's index found: images by class, every skipped file with its reason."""

    images: int = 0
    benign: int = 0
    malignant: int = 0

    def count(self, df: pd.DataFrame):
        self.images = len(df)
        self.benign, self.malignant = class_counts(df["label"]).values()


def split_by_patient_label(df: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0,
                           by: str = "patient") -> pd.DataFrame:
    """The index with a ``split`` column (train/val/test) by whole patients (or the groups of column
    ``by``), drawn separately among benign and malignant ones (each has one label), so that every
    split has both classes when each class has at least three (with two, train and test have it).
    Fractions are of patients, not images, rounded, at least one per split and class where possible."""
    _check_fractions(val, test, f"{by}s", zero_allowed=True)
    labels = df.groupby(by)["label"].agg(["min", "max"])
    mixed = labels.index[labels["min"] != labels["max"]]
    if len(mixed):
        raise ValueError(f"{by}s with both labels, cannot stratify by {by}: {list(mixed[:5])}")

    rng = np.random.default_rng(seed)
    owner = {}
    for _, group in labels.groupby("min"):  # one class at a time, in label order: reproducible
        members = rng.permutation(np.asarray(group.index))
        n = len(members)
        n_test = max(round(n * test), int(n >= 2 and test > 0))
        n_val = max(round(n * val), int(n >= 3 and val > 0))
        while n_test + n_val >= n and n_test + n_val > 0:  # keep one for training
            n_val, n_test = (n_val - 1, n_test) if n_val >= n_test else (n_val, n_test - 1)
        for i, member in enumerate(members):
            owner[member] = SPLITS[2] if i < n_test else SPLITS[1] if i < n_test + n_val else SPLITS[0]
    return df.assign(split=df[by].map(owner))


def data_label(root, generated: str, real: str) -> str:
    """``generated`` for a generated set, else "<real>: <folder>", for titles and tables."""
    return generated if is_generated(root) else f"{real}: {Path(root).name}"


def load_rgb(path, draft=None) -> Image.Image:
    """The image at ``path`` in RGB, a JPEG decoded at a reduced scale (no less than ``draft``, several
    times faster). ValueError names the file."""
    try:
        with Image.open(path) as im:
            if draft:
                im.draft(None, draft)
            return im.convert("RGB")
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def load_images(df: pd.DataFrame, size: int) -> np.ndarray:
    """The images of ``df`` as uint8 (n, size, size, 3), squeezed to squares (as Keras' ``target_size``)."""
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    out = np.empty((len(df), size, size, 3), np.uint8)
    for i, path in enumerate(df["path"]):
        out[i] = np.asarray(load_rgb(path, (size, size)).resize((size, size), Image.Resampling.BILINEAR))
    return out


def class_counts(labels) -> dict:
    """{"benign": n, "malignant": n} of 0/1 labels."""
    n = np.bincount(np.asarray(labels, int), minlength=2)
    return {"benign": int(n[0]), "malignant": int(n[1])}


def image_grid(shape, figsize, title: str, panels, fontsize: int = 11):
    """A figure of ``shape`` (rows, cols) frameless image panels, and its axes: ``panels`` holds (row, col,
    image, title, colour or None), the image a path (shown as a thumbnail) or an array."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*shape, figsize=figsize, squeeze=False,
                             subplot_kw={"xticks": [], "yticks": [], "frame_on": False})
    for r, c, image, text, colour in panels:
        if isinstance(image, (str, Path)):
            image = load_rgb(image)
            image.thumbnail((240, 240), Image.Resampling.BOX)
        axes[r, c].imshow(np.asarray(image))
        axes[r, c].set_title(text, fontsize=8, color=colour or "black")
    fig.suptitle(title, fontsize=fontsize)
    return fig, axes
