"""What the BreakHis and thyroid tracks share: the report of an index of benign / malignant images
(``data.index.index_images`` reads the folder), a split by patient drawn per class, the generators'
noise and workers, the generated sets' marks, image grids."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from .data.index import Report
from .data.splits import SPLITS, _check_fractions
from .io import process_map

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


@functools.lru_cache(maxsize=256)
def _spread(n, sigma):
    """(n, m) Gaussian weights from m samples spaced sigma apart (reaching 3 sigma beyond both ends) to
    n pixels: white noise on the samples becomes noise smoothed at sigma."""
    samples = np.arange(-3 * sigma, n + 3 * sigma, sigma)
    return np.exp(-0.5 * ((np.arange(n)[:, None] - samples[None]) / sigma) ** 2).astype(np.float32)


def smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Smooth noise (zero mean, unit std) with features of ~``sigma`` px (one, or one per axis). From
    4 px on, as two small products with coarse white noise (a Gaussian filter costs in proportion to
    sigma); by einsum, as BLAS would start threads that only spin on small matrices."""
    sy, sx = np.broadcast_to(sigma, 2)
    if min(sy, sx) < 4:
        a = ndimage.gaussian_filter(rng.random(shape, dtype=np.float32), (sy, sx), mode="wrap")
    else:
        wy, wx = _spread(shape[0], round(float(sy), 1)), _spread(shape[1], round(float(sx), 1))
        a = rng.standard_normal((wy.shape[1], wx.shape[1]), dtype=np.float32)
        a = np.einsum("ik,jk->ij", np.einsum("ij,jk->ik", wy, a), wx)
    return (a - a.mean()) / (a.std() + 1e-6)


def draw_all(draw, tmp: Path, items, params: dict, workers: int | None = None, progress: bool = False) -> list:
    """``draw((tmp, i, item, params))`` for every item (a patient, a nodule), results concatenated in
    order, in processes for more than a few items: ``draw`` seeds by ``params["seed"]`` and ``i``."""
    jobs = [(tmp, i, item, params) for i, item in enumerate(items)]
    n = (workers or os.cpu_count() or 1) if len(jobs) > 8 else 1
    done = tqdm(process_map(draw, jobs, n, chunksize=4), total=len(jobs), desc="demo", disable=not progress)
    return [d for part in done for d in part]


def is_generated(root) -> bool:
    """True for a generated set, or a folder of it (``<set>/cropped``, ``<set>/cropped/train``)."""
    root = Path(root)
    return any((p / "GENERATED.txt").is_file() for p in (root, *list(root.parents)[:2]))


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
