"""BreakHis (Spanhol et al. 2016): read the archive into a table, split it by patient, turn its
images into inputs for the IDC models, and draw a *generated* BreakHis-like demo set; then (notebook
12, and notebook 11's Bayesian search) pretrain a model on it, saved for fine-tuning on IDC, and
compare the fine-tuned arms with the seed project's figures.

BreakHis holds 7,909 RGB PNG microscopy images (700x460) of breast tumour tissue from 82 patients,
at 40X, 100X, 200X and 400X, benign or malignant, in four subtypes each. Official layout::

    BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<subtype>/SOB_<B|M>_<code>_<patient>/<N>X/
        SOB_<B|M>_<code>-<year>-<slide>-<magnification>-<seq>.png

The patient id is ``<year>-<slide>`` (e.g. ``14-22549AB``). Labels are per patient (per slide), not
per region: an image of a malignant patient may show only stroma or fat.

As in :mod:`helpers.index`, nothing is dropped silently: every file that cannot be used is counted
by category in the report, with a few examples.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections import Counter, namedtuple
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from .demo import _E, _GLASS_OD, _H, _field
from .index import SKIP_REASONS as IDC_SKIP_REASONS
from .index import DataError, IndexReport, _inspect, data_root, skipper
from .io import generated_set, given_or_generated, process_map
from .splits import SPLITS

# code -> (full name, label); the folder of a subtype is its name with "_" for " ".
SUBTYPES = {
    "A": ("adenosis", 0), "F": ("fibroadenoma", 0), "PT": ("phyllodes tumor", 0),
    "TA": ("tubular adenoma", 0), "DC": ("ductal carcinoma", 1), "LC": ("lobular carcinoma", 1),
    "MC": ("mucinous carcinoma", 1), "PC": ("papillary carcinoma", 1),
}
SUBTYPE_FOLDERS = {name.replace(" ", "_"): code for code, (name, _) in SUBTYPES.items()}
CLASSES = ("benign", "malignant")
MAGNIFICATIONS = (40, 100, 200, 400)
PATTERN = "SOB_<B|M>_<code>-<year>-<slide>-<magnification>-<seq>.png"
NAME = re.compile(r"^SOB_(?P<cls>[BM])_(?P<code>[A-Z]+)-(?P<year>\d{2})-(?P<slide>[0-9A-Za-z]+)"
                  r"-(?P<mag>\d+)-(?P<seq>\d+)\.png$")
PATIENT_FOLDER = re.compile(r"^SOB_(?P<cls>[BM])_(?P<code>[A-Z]+)_(?P<patient>\d{2}-[0-9A-Za-z]+)$")
COLUMNS = ["path", "patient", "label", "class", "subtype", "magnification", "width", "height"]
OFFICIAL = Path("BreaKHis_v1", "histology_slides", "breast")
NOT_DATA = {"GENERATED.txt", "generated.json", "Folds.csv", "README.txt", "README.md", "LICENSE"}

# Why a file was not used. Keys are stable: tests and notebooks read them.
SKIP_REASONS = {
    "not_png": "not a .png file",
    "bad_name": f"name does not match {PATTERN}",
    "class_mismatch": "B/M in the name differs from its benign/malignant (or patient) folder",
    "subtype_mismatch": "subtype code in the name differs from its subtype (or patient) folder",
    "patient_mismatch": "patient id in the name differs from its patient folder",
    "magnification_mismatch": "magnification in the name differs from its <N>X folder",
    **{k: IDC_SKIP_REASONS[k] for k in ("empty_file", "undecodable")},
    "conflicting_duplicate": "same file name as another file, but different bytes",
}

# Scale. The images carry no pixel size; from structure sizes (nuclei ~7-10 um, fat cells ~50-150 um)
# a 700-px-wide image at 40X spans about 1.1 mm (an estimate), ~1.57 um per pixel, 10x less at 400X.
UM_PER_PX_40X = 1100 / 700
# IDC patches: 50x50 px of slides scanned at 40X and downsampled 16:1 to 2.5X, ~4 um per pixel,
# so one patch covers ~0.2 mm. The "tiles" mode of to_patches aims at this scale.
IDC_UM_PER_PX = 4.0


def um_per_px(magnification, width=700) -> float:
    """Approximate micrometres per pixel of a BreakHis image (or one resized to ``width`` px)."""
    return UM_PER_PX_40X * 40 / magnification * 700 / width


# ---------------------------------------------------------------- names


def parse_name(name) -> dict:
    """What a BreakHis file name says: label (0 benign / 1 malignant), class, subtype code and name,
    patient (``<year>-<slide>``), magnification and sequence number. Raises ValueError naming it."""
    name = Path(name).name
    m = NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} does not match {PATTERN}")
    code, label = m["code"], int(m["cls"] == "M")
    if code not in SUBTYPES:
        raise ValueError(f"{name!r}: unknown subtype code {code!r} (known: {', '.join(SUBTYPES)})")
    if SUBTYPES[code][1] != label:
        raise ValueError(f"{name!r}: subtype {code} ({SUBTYPES[code][0]}) is {CLASSES[SUBTYPES[code][1]]}, "
                         f"but the name says {m['cls']} ({CLASSES[label]})")
    if int(m["mag"]) not in MAGNIFICATIONS:
        raise ValueError(f"{name!r}: magnification {m['mag']} is not one of {MAGNIFICATIONS}")
    return {"label": label, "class": CLASSES[label], "subtype": code, "subtype_name": SUBTYPES[code][0],
            "patient": f"{m['year']}-{m['slide']}", "magnification": int(m["mag"]), "seq": int(m["seq"])}


def _file_name(info) -> str:
    """The official file name for parse_name's fields (the inverse of parse_name)."""
    year, slide = info["patient"].split("-", 1)
    cls, code, mag, seq = "BM"[info["label"]], info["subtype"], info["magnification"], info["seq"]
    return f"SOB_{cls}_{code}-{year}-{slide}-{mag}-{seq:03d}.png"


def _official_dir(info) -> Path:
    """The folder of an image in the official layout, relative to the archive's root."""
    folder = info["subtype_name"].replace(" ", "_")
    patient = f"SOB_{'BM'[info['label']]}_{info['subtype']}_{info['patient']}"
    return OFFICIAL / info["class"] / "SOB" / folder / patient / f"{info['magnification']}X"


def _folder_problem(info, folders) -> tuple[str, str] | None:
    """(reason, detail) if a folder on the file's path says something else than its name, else None.
    Only folders named like the official ones are checked, so a flat folder passes."""
    for part in folders:
        said = {}  # what this folder says, by the field of parse_name it speaks for
        if part.lower() in CLASSES:
            said["class"] = part.lower()
        if part.lower() in SUBTYPE_FOLDERS:
            said["subtype"] = SUBTYPE_FOLDERS[part.lower()]
        if m := PATIENT_FOLDER.match(part):
            said.update({"class": CLASSES[m["cls"] == "M"], "subtype": m["code"], "patient": m["patient"]})
        if m := re.fullmatch(r"(\d+)[xX]", part):
            said["magnification"] = int(m[1])
        for key, value in said.items():
            if value != info[key]:
                return f"{key}_mismatch", f"name says {info[key]}, folder {part}"
    return None


# ---------------------------------------------------------------- index


@dataclass
class BreakHisReport:
    """What build_index found: counts, merged duplicates, and every skipped file with its reason."""

    root: str
    files_seen: int = 0
    images: int = 0
    patients: int = 0
    benign: int = 0
    malignant: int = 0
    benign_patients: int = 0
    malignant_patients: int = 0
    by_magnification: dict = field(default_factory=dict)  # "40X" -> images
    by_subtype: dict = field(default_factory=dict)  # "DC" -> images
    sizes: dict = field(default_factory=dict)  # "700x460" -> images
    duplicates_merged: int = 0
    duplicate_files: list = field(default_factory=list)  # (kept, dropped copy)
    skipped: dict = field(default_factory=dict)
    skipped_files: list = field(default_factory=list)

    def summary(self, examples: int = 5) -> dict:
        """The JSON-ready summary, as the IDC report's; ``examples`` files per category and duplicates."""
        out = IndexReport.summary(self, examples)
        out["duplicate_examples"] = out.pop("duplicate_files")[:examples]
        return out

    to_json = IndexReport.to_json


def _files(root: Path, not_data=NOT_DATA):
    """Yield (path, folders between root and the file) for every data file under root, sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folders = Path(dirpath).relative_to(root).parts
        for name in sorted(filenames):
            if not name.startswith(".") and name not in not_data:  # .DS_Store, our markers, Folds.csv
                yield Path(dirpath) / name, folders


def _inspect_all(paths, workers, formats=("PNG",)):
    """index._inspect for every path; forked processes for big sets (PNG decoding holds the GIL;
    never after TensorFlow started, whose runtime can deadlock in a fork)."""
    inspect = functools.partial(_inspect, formats=formats)
    workers = workers or os.cpu_count() or 1
    return list(process_map(inspect, paths, workers if len(paths) > 500 else 1, chunksize=64))


def build_index(root, workers: int | None = None) -> tuple[pd.DataFrame, BreakHisReport]:
    """Index every BreakHis image under ``root``: the official tree, or any folder of files named in
    the BreakHis pattern. Returns the table (``COLUMNS``, one row per file name, sorted by patient,
    magnification and name) and a :class:`BreakHisReport`. A name found twice counts once: the first
    copy found is kept (top folders first), identical copies are listed in ``duplicate_files``,
    different ones skipped as ``conflicting_duplicate``. Raises FileNotFoundError if ``root`` is
    missing, :class:`~helpers.index.DataError` (a ValueError) if it is not a folder or holds no
    usable image."""
    root = data_root(root, "BreakHis directory", missing=FileNotFoundError)
    report = BreakHisReport(root=str(root))

    skip = skipper(report, SKIP_REASONS)

    named = []
    for path, folders in _files(root):
        report.files_seen += 1
        if path.suffix.lower() != ".png":
            skip(path, "not_png")
            continue
        try:
            info = parse_name(path.name)
        except ValueError as exc:
            skip(path, "bad_name", str(exc))
            continue
        problem = _folder_problem(info, folders)
        if problem:
            skip(path, *problem)
            continue
        named.append((path, info))
    if report.files_seen == 0:
        raise DataError(f"BreakHis directory {root} holds no files")

    rows, kept = [], {}  # kept: file name -> (path, digest) of the first copy
    inspected = _inspect_all([p for p, _ in named], workers)
    for (path, info), (width, height, digest, problem) in zip(named, inspected):
        if problem:
            skip(path, *problem)
        elif path.name in kept and kept[path.name][1] != digest:
            skip(path, "conflicting_duplicate", f"differs from {kept[path.name][0]}")
        elif path.name in kept:
            report.duplicates_merged += 1
            report.duplicate_files.append((str(kept[path.name][0]), str(path)))
        else:
            kept[path.name] = (path, digest)
            rows.append((str(path), info["patient"], info["label"], info["class"], info["subtype"],
                         info["magnification"], width, height, path.name))
    if not rows:
        raise DataError(f"BreakHis directory {root} holds {report.files_seen} files but no usable image "
                        f"(expected files named {PATTERN}); skipped: {report.skipped}")

    df = pd.DataFrame(rows, columns=COLUMNS + ["name"])
    df = df.sort_values(["patient", "magnification", "name"]).drop(columns="name").reset_index(drop=True)
    df["label"] = df["label"].astype("int8")
    _count(report, df)
    return df, report


def _count(report, df):
    """Fill the report's totals from the index."""
    per_patient = df.groupby("patient")["label"].first()
    report.images, report.patients = len(df), len(per_patient)
    report.malignant = int(df["label"].sum())
    report.benign = report.images - report.malignant
    report.malignant_patients = int(per_patient.sum())
    report.benign_patients = report.patients - report.malignant_patients
    counts = lambda col: df[col].value_counts().sort_index().items()  # noqa: E731
    report.by_magnification = {f"{m}X": int(n) for m, n in counts("magnification")}
    report.by_subtype = {c: int(n) for c, n in counts("subtype")}
    report.sizes = dict(Counter(f"{w}x{h}" for w, h in zip(df["width"], df["height"])))


# ---------------------------------------------------------------- splits


def split_by_patient(df: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0) -> pd.DataFrame:
    """The index with a ``split`` column (train/val/test): whole patients, drawn separately among
    benign and malignant patients (a patient has one label), so that every split has both classes
    when each class has at least three patients (with two, train and test have it). Fractions are of
    patients, rounded, at least one per split and class where possible; not of images (BreakHis
    patients have from ~20 to a few hundred images)."""
    for name, frac in (("val", val), ("test", test)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} fraction must be in [0, 1), got {frac}")
    if val + test >= 1:
        raise ValueError(f"val + test must leave patients for training, got {val} + {test}")
    labels = df.groupby("patient")["label"].agg(["min", "max"])
    mixed = labels.index[labels["min"] != labels["max"]]
    if len(mixed):
        raise ValueError(f"patients with both labels, cannot stratify by patient: {list(mixed[:5])}")

    rng = np.random.default_rng(seed)
    owner = {}
    for _, group in labels.groupby("min"):  # one class at a time, in label order: reproducible
        patients = rng.permutation(np.asarray(group.index))
        n = len(patients)
        n_test, n_val = _share(n, test, at_least=n >= 2), _share(n, val, at_least=n >= 3)
        while n_test + n_val >= n and n_test + n_val > 0:  # keep one patient for training
            n_val, n_test = (n_val - 1, n_test) if n_val >= n_test else (n_val, n_test - 1)
        for i, p in enumerate(patients):
            owner[p] = SPLITS[2] if i < n_test else SPLITS[1] if i < n_test + n_val else SPLITS[0]
    out = df.copy()
    out["split"] = out["patient"].map(owner)
    return out


def _share(n, frac, at_least):
    """round(n * frac) patients, at least one (when asked and frac > 0)."""
    return max(round(n * frac), int(at_least and frac > 0))


# ---------------------------------------------------------------- model inputs

Patches = namedtuple("Patches", "images labels patients source")
Patches.__doc__ = """to_patches' result: uint8 images (n, size, size, 3), labels, patient ids, and the
index label (in the given table) of the image each patch came from."""


def _load_rgb(path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def tile_downscale(magnification, width=700, height=460, size=50) -> float:
    """Default downscale factor of "tiles": bring the image to IDC's ~4 um per pixel (about 2.5 at 40X,
    6.4 at 100X), never upscale, and keep at least one ``size`` tile (at 200X and 400X a 700x460
    image spans less than 0.2 mm, so there a tile covers a smaller field than an IDC patch)."""
    return float(np.clip(IDC_UM_PER_PX / um_per_px(magnification, width), 1, min(width, height) / size))


def to_patches(df: pd.DataFrame, size: int = 50, mode: str = "resize", tiles_per_image: int = 4,
               downscale: float | None = None, seed: int = 0, progress: bool = False) -> Patches:
    """Turn indexed images into inputs for the IDC models: a :class:`Patches` of uint8 arrays.

    ``mode="resize"``: each whole image shrunk (area average) to ``size`` x ``size``; the aspect is
    NOT kept (700:460 squeezed to a square, structures look ~1.5x narrower), and a 40X image then has
    ~22 um per pixel, far coarser than IDC patches. ``mode="tiles"``: the image is first shrunk by
    ``downscale`` (default :func:`tile_downscale`, per magnification, towards IDC's scale; a given
    factor is likewise capped so that one tile fits), then ``tiles_per_image`` random ``size`` x
    ``size`` crops are cut, the same for the same ``seed``. ``source`` holds ``df``'s index label of
    each patch's image, so splits stay by patient.
    """
    if mode not in ("resize", "tiles"):
        raise ValueError(f"mode must be 'resize' or 'tiles', not {mode!r}")
    if size < 1 or tiles_per_image < 1 or (downscale is not None and downscale <= 0):
        raise ValueError(f"size, tiles_per_image and downscale must be positive, not {size}, "
                         f"{tiles_per_image}, {downscale}")
    if df.empty:
        raise ValueError("to_patches got an empty table")
    per = 1 if mode == "resize" else tiles_per_image
    images = np.empty((len(df) * per, size, size, 3), np.uint8)
    rows = enumerate(zip(df["path"], df["magnification"]))
    for i, (path, mag) in tqdm(rows, total=len(df), desc="images", disable=not progress):
        im = _load_rgb(path)
        if mode == "resize":
            images[i] = np.asarray(im.resize((size, size), Image.Resampling.BOX))
            continue
        if min(im.size) < size:
            raise ValueError(f"image {path} ({im.width}x{im.height}) is smaller than a {size}-px tile")
        factor = tile_downscale(mag, *im.size, size) if downscale is None else \
            float(np.clip(downscale, 1, min(im.size) / size))
        small = im.resize((max(size, round(im.width / factor)), max(size, round(im.height / factor))),
                          Image.Resampling.BOX)
        a = np.asarray(small)
        rng = np.random.default_rng([seed, i])  # per image: a row's tiles do not depend on the others
        ys = rng.integers(0, a.shape[0] - size + 1, per)
        xs = rng.integers(0, a.shape[1] - size + 1, per)
        for t, (y, x) in enumerate(zip(ys, xs)):
            images[i * per + t] = a[y : y + size, x : x + size]
    repeat = lambda col: np.repeat(np.asarray(col), per)  # noqa: E731
    return Patches(images, repeat(df["label"]).astype(np.int8), repeat(df["patient"]), repeat(df.index))


# ---------------------------------------------------------------- generated demo set

VERSION = 1  # part of the stored parameters: bump it when the pictures change
DEMO_YEAR = "99"  # real BreakHis patients are from 2013-14: a generated id never looks real
FIRST_SLIDE = 90001
# Roughly the share of BreakHis patients per subtype; the benign share of patients (24/82) is about
# the benign share of images (2,480/7,909 = 31%).
PATIENT_WEIGHTS = {"A": 4, "F": 10, "PT": 3, "TA": 7, "DC": 38, "LC": 5, "MC": 9, "PC": 6}
BENIGN_SHARE = 0.31

# How each subtype looks, in micrometres (converted to pixels per magnification):
# glands per mm2, gland radius and elongation, stromal cells per mm2 (x look's cellularity),
# tumour share of the field, tumour nests' size, tumour cells' layout.
LOOKS = {
    "A": dict(glands=(70, 120), radius=(12, 28), elong=(1.0, 1.6), stroma_cells=900),
    "F": dict(glands=(20, 45), radius=(15, 45), elong=(2.0, 4.5), stroma_cells=1400),
    "PT": dict(glands=(8, 25), radius=(15, 40), elong=(2.5, 5.0), stroma_cells=2500),
    "TA": dict(glands=(90, 150), radius=(12, 22), elong=(1.0, 1.4), stroma_cells=700),
    "DC": dict(tumour=(0.25, 0.8), nest=40, layout="nests", lumens=0.06),
    "LC": dict(tumour=(0.3, 0.8), nest=60, layout="single"),
    "MC": dict(tumour=(0.3, 0.9), nest=25, layout="mucin"),
    "PC": dict(tumour=(0.3, 0.85), nest=50, layout="nests", lumens=0.15),
}


def _plan(n_patients, seed):
    """Subtype codes of the patients: ~31% benign, every subtype once when there are enough patients,
    the rest by the BreakHis shares (largest remainder), in a seeded order."""
    n_benign = min(n_patients - 1, max(1, round(BENIGN_SHARE * n_patients)))
    codes = []
    for label, n in ((0, n_benign), (1, n_patients - n_benign)):
        names = [c for c in SUBTYPES if SUBTYPES[c][1] == label]
        base = np.ones(len(names), int) if n >= len(names) else np.zeros(len(names), int)
        w = np.array([PATIENT_WEIGHTS[c] for c in names], float)
        want = (n - base.sum()) * w / w.sum()
        counts = base + np.floor(want).astype(int)
        counts[np.argsort(-(want - np.floor(want)), kind="stable")[: n - counts.sum()]] += 1
        codes += [c for c, k in zip(names, counts) for _ in range(k)]
    return list(np.random.default_rng([seed, 777]).permutation(codes))


@functools.lru_cache(maxsize=256)
def _spread(n, sigma):
    """(n, m) Gaussian weights from m samples spaced sigma apart (reaching 3 sigma beyond both ends) to
    n pixels: white noise on the samples becomes noise smoothed at sigma."""
    samples = np.arange(-3 * sigma, n + 3 * sigma, sigma)
    return np.exp(-0.5 * ((np.arange(n)[:, None] - samples[None]) / sigma) ** 2).astype(np.float32)


def _noise(rng, shape, sigma):
    """Smooth noise (zero mean, unit std) with features of ~sigma px. From 4 px on, as two small
    products with coarse white noise (a Gaussian filter costs in proportion to sigma); by einsum,
    as BLAS would start threads that only spin on small matrices."""
    if sigma < 4:
        return _field(rng, shape, sigma)
    sy, sx = _spread(shape[0], round(sigma, 1)), _spread(shape[1], round(sigma, 1))
    a = rng.standard_normal((sy.shape[1], sx.shape[1]), dtype=np.float32)
    a = np.einsum("ik,jk->ij", np.einsum("ij,jk->ik", sy, a), sx)
    return (a - a.mean()) / (a.std() + 1e-6)


def _ellipses(shape, cy, cx, a, b, angle, irregular, rng, pad=1.0, dark=None):
    """Ellipses with bumpy outlines, all at once: each is a small stamp computed in one array and
    combined into the image by a per-pixel maximum. Without ``dark``: how many px a pixel lies inside
    the nearest outline (negative outside, -inf beyond ``pad`` px); with it: soft discs of that
    darkness (overlapping nuclei do not add up)."""
    out = np.full(shape, -np.inf if dark is None else 0, np.float32)
    if len(cy) == 0:
        return out
    r = int(np.ceil(1.2 * max(a.max(), b.max()) + pad))
    off = np.arange(-r, r + 1)
    iy, ix = np.floor(cy).astype(int), np.floor(cx).astype(int)
    dy = (off[None, :, None] - (cy - iy)[:, None, None]).astype(np.float32)
    dx = (off[None, None, :] - (cx - ix)[:, None, None]).astype(np.float32)
    col = lambda v: np.asarray(v, np.float32)[:, None, None]  # noqa: E731
    c, s = col(np.cos(angle)), col(np.sin(angle))
    u, v = dx * c + dy * s, dy * c - dx * s
    rho = np.hypot(u / col(a), v / col(b))
    # The outline's bumps: cos(2t + p2) and cos(3t + p3) of the polar angle t, from cos t and sin t
    # (several times faster than arctan2 and cos on every stamp pixel).
    length = np.hypot(u, v) + np.float32(1e-6)
    ct, st = u / length, v / length
    c2, s2 = ct * ct - st * st, 2 * ct * st
    c3, s3 = ct * (4 * ct * ct - 3), st * (3 - 4 * st * st)
    p = rng.uniform(0, 2 * np.pi, (4, len(cy)))
    p = [col(np.cos(p[0])), col(np.sin(p[0])), col(np.cos(p[1])), col(np.sin(p[1]))]
    bump = 1 + col(irregular) * (0.6 * (c2 * p[0] - s2 * p[1]) + 0.8 * (c3 * p[2] - s3 * p[3]))
    val = (1 - rho / bump) * col(b)  # ~px inside the outline
    if dark is not None:
        val = np.clip(val / 0.8 + 0.5, 0, 1) * col(dark)  # a soft rim of ~1 px
    yy = np.broadcast_to(iy[:, None, None] + off[None, :, None], val.shape)
    xx = np.broadcast_to(ix[:, None, None] + off[None, None, :], val.shape)
    ok = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1]) & ((val > 0) if dark is not None else True)
    np.maximum.at(out, (yy[ok], xx[ok]), val[ok])
    return out


def _look(rng, code):
    """Everything drawn once per patient: stain, colour cast, fat, stromal cellularity, grade."""
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    look = dict(code=code, label=SUBTYPES[code][1], **LOOKS[code])
    look["hv"] = unit(_H + rng.normal(0, 0.05, 3)) * rng.uniform(0.75, 1.3)
    look["ev"] = unit(_E + rng.normal(0, 0.05, 3)) * rng.uniform(0.6, 1.6)
    look["cast"] = _GLASS_OD + rng.uniform(0, 0.08, 3)  # lamp and white balance differ between sessions
    look["fat"] = rng.uniform(0.0, 0.35)
    look["cellular"] = rng.uniform(0.5, 1.5)
    look["grade"] = rng.uniform(0, 1)  # malignant only: nuclei larger, darker, more irregular with grade
    look["normal_glands"] = rng.uniform(0, 30)  # malignant fields may hold residual benign ducts
    return look


def _draw(rng, look, magnification, width, height) -> np.ndarray:
    """One field of view as uint8 (height, width, 3): stroma, fat, glands or tumour, nuclei, stain."""
    f = _Canvas(rng, (height, width), um_per_px(magnification, width))
    theta = _stroma(f)
    _fat(f, look)
    _stromal_cells(f, look, theta)
    _glands(f, look)
    if look["label"] == 1:
        _tumour(f, look)
    return _stain(f, look)


class _Canvas:
    """One image being drawn: haematoxylin and eosin densities, the nuclei to add, and the scale.
    Sizes are given in micrometres, so that everything grows with the magnification."""

    def __init__(self, rng, shape, um):
        self.rng, self.shape, self.um = rng, shape, um
        self.area_mm2 = shape[0] * shape[1] * (um / 1000) ** 2
        self.yy, self.xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        self.H = np.full(shape, 0.04, np.float32)
        self.E = np.full(shape, 0.5, np.float32)
        self.soft = np.ones(shape, bool)  # tissue that can hold cells (not fat, not a lumen)
        self.cells = []  # (cy, cx, a, b, angle, irregular, dark) per group of nuclei

    def px(self, microns):
        return microns / self.um

    def noise(self, microns):
        return _noise(self.rng, self.shape, max(0.5, self.px(microns)))

    def rough(self, microns):
        """Noise with detail at a fifth of the scale: region outlines are never straight, even when a
        region is larger than the field of view."""
        return self.noise(microns) + 0.3 * self.noise(microns / 5)

    def region(self, microns, share):
        """A smooth random region covering about ``share`` of the image."""
        field = self.rough(microns)
        return field > np.quantile(field, 1 - share)

    def paint(self, mask, e, h):
        self.E = np.where(mask, np.float32(e), self.E)
        self.H = np.where(mask, np.float32(h), self.H)

    def scatter(self, n, where):
        """n uniform points, kept where the mask holds."""
        y, x = self.rng.uniform(0, self.shape[0], n), self.rng.uniform(0, self.shape[1], n)
        keep = where[y.astype(int), x.astype(int)]
        return y[keep], x[keep]

    def add(self, y, x, size_um, spread, elong, angle, irregular, dark):
        """Nuclei at (y, x): size (long axis, um) log-normal with ``spread``, ``elong`` long/short axis."""
        n, rng = len(y), self.rng
        d = self.px(size_um) * np.exp(rng.normal(0, spread, n))
        short = d / 2 / elong * rng.uniform(0.85, 1.15, n)
        dark = dark * rng.uniform(0.85, 1.1, n)
        self.cells.append((y, x, d / 2, short, angle, np.full(n, irregular), dark))


def _stroma(f):
    """Pink collagen in wavy bundles along a drifting direction, broken by thin white cracks.
    Returns the fibre direction (stromal nuclei lie along it)."""
    theta = f.rng.uniform(0, np.pi) + 0.7 * f.noise(150)
    period = f.px(9.0)
    wave = f.noise(30)
    phase = (f.yy * np.cos(theta) + f.xx * np.sin(theta) + f.px(6) * wave) * np.float32(2 * np.pi / period)
    visible = np.float32(np.clip((period - 2) / 4, 0, 1))  # bundles finer than 2 px blur into texture
    fib = visible * np.cos(phase) * np.clip(wave, 0, 1) + 0.6 * f.noise(3)
    f.E = 0.48 + 0.05 * fib + 0.08 * f.noise(40)
    # Loose stroma: short wisps of white along the fibres.
    wisp = f.noise(12)
    crack = (np.cos(phase / 3.7 + 2 * wisp) > 0.93) & (wisp > 0.7) & (visible > 0)
    f.E[crack] *= 0.3
    return theta


def _worley(rng, yy, xx, cell):
    """Voronoi cells of ~``cell`` px around one jittered seed per grid square, at the points (yy, xx)
    (>= 0; warped pixel coordinates); only the 3x3 squares around a point are searched. Returns the
    distances to the nearest and second nearest seed, and the nearest seed's position."""
    gh, gw = int(yy.max()) // cell + 3, int(xx.max()) // cell + 3
    sy = ((np.arange(gh)[:, None] - 1 + rng.random((gh, gw))) * cell).astype(np.float32)
    sx = ((np.arange(gw)[None, :] - 1 + rng.random((gh, gw))) * cell).astype(np.float32)
    cy, cx = (yy // cell).astype(int) + 1, (xx // cell).astype(int) + 1
    d1 = d2 = np.full(yy.shape, np.inf, np.float32)  # squared distances, nearest and second
    near = (cy, cx)
    for oy in (-1, 0, 1):  # 9 steps over all points with running minima: no (9, n) stack to sort
        for ox in (-1, 0, 1):
            j, i = cy + oy, cx + ox
            d = (yy - sy[j, i]) ** 2 + (xx - sx[j, i]) ** 2
            closer = d < d1
            d2 = np.where(closer, d1, np.minimum(d2, d))
            d1 = np.where(closer, d, d1)
            near = np.where(closer, j, near[0]), np.where(closer, i, near[1])
    return np.sqrt(d1), np.sqrt(d2), sy[near], sx[near]


def _fat(f, look):
    """White fat cells (50-120 um) with thin pink walls: whole cells whose centre lies in a smooth
    region; warped coordinates bend the walls, and the corners of a cell fill with tissue."""
    share = float(np.clip(look["fat"] * f.rng.uniform(0, 2.2), 0, 0.75))
    if share < 0.02:
        return
    blob = f.rough(250)
    cell = max(4, int(f.px(f.rng.uniform(60, 110))))
    # Only pixels near the region are computed (the outermost cells are cut by a smooth curve).
    near = blob > np.quantile(blob, 1 - min(1.0, 1.6 * share))
    wy = (f.yy + 0.12 * cell * f.noise(40))[near] + cell
    wx = (f.xx + 0.12 * cell * f.noise(40))[near] + cell
    d1, d2, sy, sx = _worley(f.rng, np.maximum(wy, 0), np.maximum(wx, 0), cell)
    h, w = f.shape
    seed_in = blob[np.clip(sy - cell, 0, h - 1).astype(int), np.clip(sx - cell, 0, w - 1).astype(int)]
    edge = np.minimum(d2 - d1, 2 * (0.62 * cell - d1))  # round the corners
    wall = np.clip(1.5 - edge / max(0.8, f.px(2.5)), 0, 1)
    fat = np.zeros(f.shape, bool)
    fat[near] = (seed_in > np.quantile(blob, 1 - share)) & (wall < 1)
    f.E[fat], f.H[fat] = 0.45 * wall[fat[near]], 0.05 * wall[fat[near]]
    f.soft &= ~fat


def _stromal_cells(f, look, theta):
    """Fibroblasts along the fibres (many more in phyllodes tumours) and a few round lymphocytes."""
    per_mm2 = look.get("stroma_cells", 900) * look["cellular"]
    y, x = f.scatter(f.rng.poisson(f.area_mm2 * per_mm2), f.soft)
    f.add(y, x, 11, 0.2, 3.0, theta[y.astype(int), x.astype(int)] + f.rng.normal(0, 0.2, len(y)), 0.05, 0.8)
    y, x = f.scatter(f.rng.poisson(f.area_mm2 * 300), f.soft)
    f.add(y, x, 6, 0.1, 1.05, f.rng.uniform(0, np.pi, len(y)), 0.02, 1.1)


def _glands(f, look):
    """Glands (benign subtypes; a few residual ducts in malignant fields): a white lumen lined by a
    purple epithelium with one ring of small regular nuclei."""
    rng = f.rng
    density = rng.uniform(*look["glands"]) if "glands" in look else look["normal_glands"] * rng.uniform(0, 1)
    n = rng.poisson(density * f.area_mm2)
    if n == 0:
        return
    h, w = f.shape
    radius = f.px(rng.uniform(*look.get("radius", (15, 35)), n))
    elong = rng.uniform(*look.get("elong", (1.0, 2.0)), n)
    ang = rng.uniform(0, np.pi, n)
    gy, gx = rng.uniform(-0.1, 1.1, n) * h, rng.uniform(-0.1, 1.1, n) * w
    minor = radius / np.sqrt(elong)
    inside = _ellipses(f.shape, gy, gx, minor * elong, minor, ang, np.full(n, 0.05), rng, f.px(20))
    dist = -inside + f.px(3) * f.noise(8)  # ~px outside the nearest lumen; +inf far from every gland
    epi, lumen = (dist >= 0) & (dist < f.px(12)), dist < 0
    f.paint(epi, 0.3, 0.12)
    f.paint(lumen, 0.05, 0.02)
    f.soft &= ~lumen
    # Nuclei on each ring, spaced by about one nucleus.
    per = np.maximum(3, (2 * np.pi * radius / f.px(9.5)).astype(int))
    g = np.repeat(np.arange(n), per)
    k = np.arange(len(g)) - np.repeat(np.cumsum(per) - per, per)  # the nucleus' number on its ring
    t = rng.uniform(0, 2 * np.pi, n)[g] + 2 * np.pi * k / per[g]
    lu, lv = ((minor * elong)[g] + f.px(5)) * np.cos(t), (minor[g] + f.px(5)) * np.sin(t)
    y = gy[g] + lu * np.sin(ang[g]) + lv * np.cos(ang[g]) + rng.normal(0, f.px(0.8), len(g))
    x = gx[g] + lu * np.cos(ang[g]) - lv * np.sin(ang[g]) + rng.normal(0, f.px(0.8), len(g))
    ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    f.add(y[ok], x[ok], 8.0, 0.08, 1.4, (t + ang[g] + np.pi / 2)[ok], 0.04, 0.8)


def _tumour(f, look):
    """Carcinoma: crowded, large, irregular, dark nuclei in nests with small lumens (ductal, papillary),
    in mucin pools (mucinous) or scattered single cells (lobular). The share of the field varies,
    and one field in six shows little tumour: labels are per patient, not per field."""
    rng, grade = f.rng, look["grade"]
    share = float(np.clip(rng.uniform(*look["tumour"]) * rng.choice([0.1, 1, 1, 1, 1, 1]), 0.01, 1))
    nest = f.region(look["nest"], share) & f.soft
    size, spread, irr, dark = 10 + 6 * grade, 0.12 + 0.1 * grade, 0.06 + 0.14 * grade, 1.0 + 0.4 * grade
    if look["layout"] == "single":
        y, x = f.scatter(rng.poisson(f.area_mm2 * 8000 * share), nest)
        f.add(y, x, 8.5 + 2 * grade, 0.1, 1.2, rng.uniform(0, np.pi, len(y)), irr / 2, dark)
        f.H = np.where(nest, f.H + 0.04, f.H)
        return
    if look["layout"] == "mucin":  # pale blue-grey pools, wispy, with small floating clusters
        f.paint(nest, 0.07, 0.08)
        f.H = np.where(nest, f.H + 0.05 * np.clip(f.noise(6), 0, None), f.H)
        nest &= f.noise(12) > 0.2
    holes = f.noise(8)
    lumen = nest & (holes > np.quantile(holes, 1 - look.get("lumens", 0.0)))
    f.paint(nest, 0.24, 0.2 + 0.06 * grade)
    y, x = f.scatter(rng.poisson(f.area_mm2 * 1e6 / (1.25 * size) ** 2), nest & ~lumen)
    f.add(y, x, size, spread, rng.uniform(1.0, 1.5), rng.uniform(0, np.pi, len(y)), irr, dark)
    f.paint(lumen, 0.04, 0.02)


def _stain(f, look):
    """Nuclei into the haematoxylin, then optics: a little blur, uneven light, Beer-Lambert colour
    with the patient's stain and lamp, sensor noise."""
    nuc = np.zeros(f.shape, np.float32)
    for y, x, a, b, angle, irregular, dark in f.cells:
        nuc = np.maximum(nuc, _ellipses(f.shape, y, x, a, b, angle, irregular, f.rng, dark=dark))
    H = f.H + 0.85 * nuc * (1 + 0.15 * f.noise(1.0))  # chromatin is granular
    E = f.E * (1 - 0.5 * np.clip(nuc, 0, 1))
    blur = 0.45 * f.shape[1] / 230
    H, E = ndimage.gaussian_filter(H, blur), ndimage.gaussian_filter(E, blur)
    light = 0.02 * _noise(f.rng, f.shape, f.shape[1] / 3)
    img = np.empty(f.shape + (3,), np.uint8)
    for c in range(3):
        od = H * look["hv"][c] + E * look["ev"][c] + look["cast"][c] + light
        img[..., c] = np.clip(255 * np.exp(-od) + f.rng.uniform(-3, 3, f.shape), 0, 255)
    return img


def make_demo(root, n_patients: int = 16, images_per_patient: int = 12, size=(230, 151), seed: int = 0,
              progress: bool = False) -> dict:
    """Write a *generated* BreakHis-like set (not patient data; no clinical claim rests on it) in the
    official layout (images under ``root / OFFICIAL``) in ``root``; return its summary (``patients``,
    ``images``, ``benign``, ``malignant``, per magnification and subtype, ``seed``, ``generated``: True).

    ~31% of patients (and images) benign; each patient has one subtype and images at 40X, 100X, 200X
    and 400X in turn; ``size`` is (width, height), by default 1/3 of the real 700x460. The same
    arguments give byte-identical files. Written to a temporary sibling folder renamed to ``root`` at
    the end; a ``root`` holding a set made with the same arguments is returned as is, any other
    non-empty ``root`` raises ValueError.
    """
    root = Path(root)
    width, height = (int(v) for v in size)
    if n_patients < 2 or images_per_patient < 1 or min(width, height) < 50:
        raise ValueError(f"need n_patients >= 2 (both classes), images_per_patient >= 1 and a size of at "
                         f"least 50x50, not {n_patients}, {images_per_patient}, {size}")
    params = dict(kind="breakhis", n_patients=int(n_patients), images_per_patient=int(images_per_patient),
                  size=[width, height], seed=int(seed), version=VERSION)
    codes = _plan(n_patients, seed)

    def write(tmp):
        infos = []
        for i in tqdm(range(n_patients), desc="demo patients", unit="patient", disable=not progress):
            infos += _write_patient(tmp, i, codes[i], images_per_patient, width, height, seed)
        return _demo_summary(root, infos, params), (
            "GENERATED DEMO DATA - NOT PATIENT DATA.\n"
            "Drawn by helpers/breakhis.py (numpy noise, an H&E colour model) in the layout and with\n"
            "the file names of BreakHis (Spanhol et al. 2016): no real tissue; no clinical claim\n"
            "rests on it. Labels and subtypes are the generator's, not a pathologist's.\n")

    return generated_set(root, params, "a BreakHis demo set", write)


def _write_patient(tmp, i, code, n_images, width, height, seed) -> list[dict]:
    """Draw and save patient i's images (40X, 100X, 200X, 400X in turn); return their parse_name fields."""
    rng = np.random.default_rng([seed, i])  # per patient: one patient's pictures do not depend on another's
    look = _look(rng, code)
    label = SUBTYPES[code][1]
    infos = []
    for j in range(n_images):
        info = {"label": label, "class": CLASSES[label], "subtype": code, "subtype_name": SUBTYPES[code][0],
                "patient": f"{DEMO_YEAR}-{FIRST_SLIDE + i}", "magnification": MAGNIFICATIONS[j % 4],
                "seq": j // 4 + 1}
        path = tmp / _official_dir(info) / _file_name(info)
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(_draw(rng, look, info["magnification"], width, height), "RGB")
        image.save(path, compress_level=1)  # noisy pictures barely compress: level 6 is 4x slower
        infos.append(info)
    return infos


def _demo_summary(root, infos, params) -> dict:
    """The counts of the index report (same keys), for the set's images."""
    report = BreakHisReport(root=str(root))
    _count(report, pd.DataFrame(infos).assign(width=params["size"][0], height=params["size"][1]))
    keys = ("patients", "images", "benign", "malignant", "benign_patients", "malignant_patients",
            "by_magnification", "by_subtype")
    return {"root": str(root), **{k: getattr(report, k) for k in keys}, "size": params["size"],
            "seed": params["seed"], "generated": True}


# ---------------------------------------------------------------- where the data are

# Patients and images per patient of the generated set, by profile (the real set has 82 patients).
DEMO_SIZES = {"smoke": (16, 12), "cpu": (40, 24), "full": (82, 48), "colab": (82, 48)}
# The real BreakHis per subtype: (patients, images), Spanhol et al. 2016, table 1.
PUBLISHED = {"A": (4, 444), "F": (10, 1014), "PT": (3, 453), "TA": (7, 569),
             "DC": (38, 3451), "LC": (5, 626), "MC": (9, 792), "PC": (6, 560)}


def demo_dir(patients: int) -> Path:
    """Where the generated BreakHis-like set of that many patients lives: beside the generated IDC
    sets, ``data/demo/breakhis-<N>p`` (the environment variable IDC_DEMO_ROOT moves both)."""
    from .config import demo_dir as idc_demo_dir

    return idc_demo_dir(patients).with_name(f"breakhis-{patients}p")


def resolve_dir(breakhis_dir=None, profile: str = "smoke", seed: int = 0) -> Path:
    """``breakhis_dir`` as a Path (it must exist); None or "": the generated set of the profile's size
    (``DEMO_SIZES``), made on first use in :func:`demo_dir`. A generated set there left by an older
    version of the generator is replaced; any other folder is never touched."""
    return given_or_generated(breakhis_dir, profile, DEMO_SIZES, demo_dir,
                              lambda root, n, per: make_demo(root, n, per, seed=seed), "BreakHis directory")


def sample_dir(given=None) -> Path | None:
    """A folder of a few real BreakHis images to show beside the generated set, or None when none is
    given (BreakHis is for research use with citation: the project ships none)."""
    if given in (None, ""):
        return None
    found = Path(given).expanduser()
    if not found.is_dir():
        raise FileNotFoundError(f"BreakHis sample folder {found} does not exist")
    return found


def data_label(root) -> str:
    """"generated BreakHis-like demo data" or "real BreakHis: <folder>", for titles."""
    root = Path(root)
    return ("generated BreakHis-like demo data" if (root / "GENERATED.txt").is_file()
            else f"real BreakHis: {root.name}")


# ---------------------------------------------------------------- tables and figures


def counts_table(df: pd.DataFrame) -> pd.DataFrame:
    """Patients and images per subtype and magnification, the published counts of the real
    BreakHis beside them, and a total row."""
    rows = []
    for code, (name, label) in SUBTYPES.items():
        part = df[df["subtype"] == code]
        rows.append({"class": CLASSES[label], "subtype": f"{name} ({code})", "patients": part["patient"].nunique(),
                     **{f"{m}X": int((part["magnification"] == m).sum()) for m in MAGNIFICATIONS},
                     "images": len(part), "real BreakHis patients": PUBLISHED[code][0],
                     "real BreakHis images": PUBLISHED[code][1]})
    table = pd.DataFrame(rows)
    total = table.sum(numeric_only=True).to_dict()
    return pd.concat([table, pd.DataFrame([{"class": "all", "subtype": "", **total}])], ignore_index=True)


def _thumbnail(path, width: int = 240) -> np.ndarray:
    im = _load_rgb(path)
    im.thumbnail((width, width), Image.Resampling.BOX)
    return np.asarray(im)


def example_grid(df: pd.DataFrame, source: str, seed: int = 0):
    """One image per subtype (rows, benign first) and magnification (columns), each of a randomly
    chosen patient of that subtype; an empty cell where the index holds no such image. A sample that
    would leave most cells empty (a few images) is shown as a gallery of every image instead."""
    import matplotlib.pyplot as plt

    codes = [c for c in SUBTYPES if (df["subtype"] == c).any()]
    mags = [m for m in MAGNIFICATIONS if (df["magnification"] == m).any()]
    if not codes:
        raise ValueError("example_grid got an empty table")
    if 2 * len(df[["subtype", "magnification"]].drop_duplicates()) < len(codes) * len(mags):
        return _gallery(df, source)
    fig, axes = plt.subplots(len(codes), len(mags), figsize=(2.3 * len(mags) + 1.2, 1.6 * len(codes) + 0.9),
                             squeeze=False)
    rng = np.random.default_rng(seed)
    for r, code in enumerate(codes):
        for c, mag in enumerate(mags):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            part = df[(df["subtype"] == code) & (df["magnification"] == mag)]
            if len(part):
                row = part.iloc[rng.integers(len(part))]
                ax.imshow(_thumbnail(row["path"]))
                ax.set_xlabel(f"patient {row['patient']}", fontsize=7)
            else:
                ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=8, color="0.5")
                ax.set_frame_on(False)
            if r == 0:
                ax.set_title(f"{mag}X", fontsize=10)
            if c == 0:
                name, label = SUBTYPES[code]
                ax.set_ylabel(f"{name}\n({CLASSES[label]})", fontsize=8,
                              color="#c44e52" if label else "#4c72b0")
    fig.suptitle(f"BreakHis: one image per subtype and magnification\n({source})", fontsize=11)
    fig.tight_layout()
    return fig


def _gallery(df: pd.DataFrame, source: str, cols: int = 4):
    """Every image of a small index, titled with its subtype, class and magnification."""
    import matplotlib.pyplot as plt

    rows = -(-len(df) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.1 * rows + 0.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    ordered = df.assign(order=df["subtype"].map(list(SUBTYPES).index)).sort_values(["order", "magnification"])
    for ax, (_, row) in zip(axes.flat, ordered.iterrows()):
        name, label = SUBTYPES[row["subtype"]]
        ax.imshow(_thumbnail(row["path"]))
        ax.set_title(f"{name} ({CLASSES[label]})\n{row['magnification']}X, patient {row['patient']}", fontsize=8,
                     color="#c44e52" if label else "#4c72b0")
    fig.suptitle(f"BreakHis: every image of the sample, by subtype\n({source})", fontsize=11)
    fig.tight_layout()
    return fig


def scale_table(df: pd.DataFrame, size: int = 50) -> pd.DataFrame:
    """Per magnification, at the index's most common image size: micrometres per pixel and field of
    view of the image, of a "resize" input (the whole field in ``size`` px) and of a "tiles" input
    (:func:`tile_downscale`); the IDC patches' scale in the last row."""
    width, height = (int(v) for v in df[["width", "height"]].value_counts().idxmax())
    rows = []
    for mag in MAGNIFICATIONS:
        um = um_per_px(mag, width)
        tile_um = um * tile_downscale(mag, width, height, size)
        rows.append({"input": f"BreakHis {mag}X ({width}x{height} px)", "image µm/px": um,
                     "field (µm)": f"{width * um:.0f} x {height * um:.0f}",
                     "resize: µm/px": f"{width * um / size:.1f} x {height * um / size:.1f}",
                     "tiles: µm/px": tile_um, f"tile of {size} px (µm)": size * tile_um})
    idc = size * IDC_UM_PER_PX
    rows.append({"input": "IDC patch (Kaggle)", "image µm/px": IDC_UM_PER_PX, "field (µm)": f"{idc:.0f}",
                 "resize: µm/px": "", "tiles: µm/px": IDC_UM_PER_PX, f"tile of {size} px (µm)": idc})
    return pd.DataFrame(rows).set_index("input").round(2)


def patch_modes_figure(df: pd.DataFrame, source: str, tiles: int = 3, size: int = 50, seed: int = 0):
    """What the IDC models see of one patient's images, one column per magnification: the image,
    its "resize" input and ``tiles`` "tiles" inputs, each titled with its micrometres per pixel.
    The patient is the malignant one (else any) with the most magnifications."""
    import matplotlib.pyplot as plt

    coverage = df.groupby("patient").agg(mags=("magnification", "nunique"), label=("label", "first"))
    patient = coverage.sort_values(["mags", "label"], ascending=False, kind="stable").index[0]
    images = df[df["patient"] == patient].groupby("magnification").head(1)
    whole = to_patches(images, size=size, mode="resize")
    cut = to_patches(images, size=size, mode="tiles", tiles_per_image=tiles, seed=seed)
    fig, axes = plt.subplots(2 + tiles, len(images), figsize=(2.4 * len(images) + 1, 1.75 * (2 + tiles) + 1),
                             squeeze=False)
    for c, (_, row) in enumerate(images.iterrows()):
        um = um_per_px(row["magnification"], row["width"])
        factor = tile_downscale(row["magnification"], row["width"], row["height"], size)
        panels = [(_thumbnail(row["path"]), f"{row['magnification']}X: {um:.2f} µm/px"),
                  (whole.images[c], f"resize: ~{row['width'] * um / size:.0f} µm/px")]
        panels += [(cut.images[c * tiles + t], f"tile: {um * factor:.1f} µm/px") for t in range(tiles)]
        for r, (image, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    for r, label in enumerate(["image", f"resize\n{size}x{size}"] + [f"tile {t + 1}\n{size}x{size}"
                                                                    for t in range(tiles)]):
        axes[r, 0].set_ylabel(label, fontsize=9)
    name = SUBTYPES[images["subtype"].iloc[0]][0]
    fig.suptitle(f"Patient {patient} ({name}): the images and the {size}x{size} inputs cut from them "
                 f"(IDC patches: {IDC_UM_PER_PX:.0f} µm/px)\n({source})", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- pretraining


@dataclass
class Pretrained:
    """A model pretrained on BreakHis (benign 0 / malignant 1), saved, with its BreakHis scores
    (patches of validation and test patients; the threshold chosen on validation)."""

    path: Path  # the saved model (.keras): models.build_model(name, weights=path) starts from it
    model: str
    trained: bool  # False: read back from an earlier run with the same data and settings
    data: str  # the BreakHis folder
    generated: bool
    split_note: str
    patches: dict  # per split
    threshold: float
    val: dict
    test: dict | None
    run_dir: str
    settings: dict

    @property
    def history(self) -> pd.DataFrame:
        from .train import read_history

        return read_history(self.run_dir)

    def scores_table(self) -> pd.DataFrame:
        """Validation and test scores side by side (positives: malignant patches)."""
        from .experiment import scores_table

        return scores_table({"val": self.val, "test": self.test})

    def as_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def _listing(root: Path) -> str:
    """A digest of every PNG's relative path and size under root: cheap, and changes with the data."""
    h = hashlib.sha1()
    for path, _ in _files(root):
        if path.suffix.lower() == ".png":
            h.update(f"{path.relative_to(root)}|{path.stat().st_size}\n".encode())
    return h.hexdigest()


def pretrain(cfg, breakhis_dir, model_name: str = "cancernet", *, epochs: int | None = None,
             mode: str = "tiles", tiles_per_image: int = 4, weights=None, optimizer: str = "adam",
             learning_rate=None, out=None) -> Pretrained:
    """Train ``model_name`` to tell benign from malignant BreakHis patches, or load it when trained
    before with the same data and settings; return a :class:`Pretrained`.

    The images are split by patient (:func:`split_by_patient` with ``cfg.seed``), cut into 50x50
    inputs (:func:`to_patches` with ``mode``; resized in the pipeline to the model's input size, as
    the IDC patches are) and trained with ``train.fit`` for ``epochs`` (None: ``cfg.epochs``),
    ``cfg.batch_size``, class weights, and the best epoch kept by validation AUC; an interrupted run
    resumes. ``weights`` is the start (None, or "imagenet" for a backbone, then fully trainable).
    The model goes to ``out`` (default ``<output_dir>/models/breakhis_<model>_<profile>_<digest>.keras``,
    the digest of the data and settings), written atomically, with its scores in a .json beside it.
    """
    from . import evaluate, models, pipeline, train
    from .io import atomic_path, write_text

    root = Path(breakhis_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"BreakHis directory {root} does not exist")
    size = models.input_size(model_name)
    settings = {"model": model_name, "epochs": int(epochs or cfg.epochs), "batch_size": cfg.batch_size,
                "seed": cfg.seed, "mode": mode, "tiles_per_image": tiles_per_image if mode == "tiles" else None,
                "image_size": size,
                "weights": None if weights is None else str(weights), "optimizer": optimizer,
                "learning_rate": learning_rate}
    key = json.dumps({**settings, "data": str(root.resolve()), "files": _listing(root)}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    stem = f"breakhis_{model_name}_{cfg.profile}_{digest}"
    path = Path(out) if out else Path(cfg.output_dir) / "models" / f"{stem}.keras"
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file():
        saved = json.loads(sidecar.read_text())
        if saved.get("fingerprint") == digest:
            saved.pop("fingerprint")
            return Pretrained(**{**saved, "path": path, "trained": False})

    df, _ = build_index(root)
    split = split_by_patient(df, seed=cfg.seed)
    empty = [s for s in SPLITS[:2] if not (split["split"] == s).any()]
    if empty:
        raise ValueError(f"{root}: no patient left for the {' and '.join(empty)} split "
                         f"({split['patient'].nunique()} patients; pretraining needs 3 per class)")
    patches = to_patches(split, mode=mode, tiles_per_image=tiles_per_image, seed=cfg.seed)
    where = split.loc[patches.source, "split"].to_numpy()

    def dataset(name, shuffle=False):
        mask = where == name
        return pipeline.make_dataset(images=patches.images[mask], labels=patches.labels[mask],
                                     batch_size=cfg.batch_size, image_size=size, one_hot=True, shuffle=shuffle,
                                     seed=cfg.seed, preprocess=models.preprocess_for(model_name))

    counts = {name: int((where == name).sum()) for name in SPLITS if (where == name).any()}
    model = models.build_model(model_name, image_size=size, weights=weights,
                               fine_tune_at=None if weights is None else 0, seed=cfg.seed)
    run_dir = Path(cfg.output_dir) / "runs" / stem
    val = dataset("val")
    result = train.fit(model, dataset("train", shuffle=True), val, run_dir, epochs=settings["epochs"],
                       name=f"breakhis_{model_name}", optimizer=optimizer, learning_rate=learning_rate,
                       class_weight=train.class_weights(patches.labels[where == "train"]), seed=cfg.seed,
                       train_patches=counts["train"])
    best = result.best_model(model)
    y_val, p_val = evaluate.predict(best, val)
    threshold = evaluate.choose_threshold(y_val, p_val)
    test = evaluate.scores(*evaluate.predict(best, dataset("test")), threshold) if "test" in counts else None
    with atomic_path(path) as tmp:
        best.save(tmp)
    done = Pretrained(path=path, model=model_name, trained=True, data=str(root),
                      generated=(root / "GENERATED.txt").is_file(),
                      split_note=f"by patient, 70/15/15, seed {cfg.seed}; {mode}: "
                                 + " / ".join(f"{n} {name}" for name, n in counts.items()) + " patches",
                      patches=counts, threshold=threshold, val=evaluate.scores(y_val, p_val, threshold),
                      test=test, run_dir=str(run_dir), settings=settings)
    record = {k: v for k, v in done.as_dict().items() if k not in ("path", "trained")}
    write_text(sidecar, json.dumps({**record, "fingerprint": digest}, indent=2, default=float))
    return done


# ---------------------------------------------------------------- fine-tuning on IDC, the seed, the verdict

# The seed project's fine_tune_at per model (reference.SEED_IDC): CancerNet's first block (5 layers),
# the first 100 layers of MobileNetV2 and of Xception.
SEED_FINE_TUNE_AT = {"cancernet": 5, "mobilenet_v2": 100, "xception": 100}


def fine_tune_variants(model_name: str, pretrained_path, fine_tune_at: int | None = None,
                       imagenet: bool = False) -> list:
    """The arms of notebook 12's study, differing only in where the weights start: "scratch" (random),
    "breakhis" (``pretrained_path``, the first ``fine_tune_at`` layers frozen; None: the seed's value for
    the model) and, with ``imagenet``, "imagenet" (a backbone's ImageNet weights, frozen alike)."""
    from .models import MODELS
    from .study import Variant

    if fine_tune_at is None:
        fine_tune_at = SEED_FINE_TUNE_AT.get(model_name)
    if imagenet and not MODELS[model_name].pretrained:
        raise ValueError(f"{model_name!r} has no ImageNet weights: imagenet=True needs a backbone "
                         f"({', '.join(n for n, spec in MODELS.items() if spec.pretrained)})")
    variants = [Variant("scratch", model=model_name),
                Variant("breakhis", model=model_name, build={"weights": str(pretrained_path),
                                                             "fine_tune_at": fine_tune_at})]
    if imagenet:
        variants.append(Variant("imagenet", model=model_name, build={"weights": "imagenet",
                                                                     "fine_tune_at": fine_tune_at}))
    return variants




def beside_seed(model_name: str, runs: pd.DataFrame, cfg, split_note: str) -> pd.DataFrame:
    """The seed project's published figures for ``model_name`` (reference.SEED_IDC, each with its
    split) above this study's runs, one row per variant (mean over seeds), in the same columns."""
    from .reference import seed_rows

    seed = seed_rows(model_name).assign(note=lambda t: t["note"].where(t["note"] != "", "seed project"))
    ours = []
    for variant, part in runs.groupby("variant", sort=False):
        scored_on = part["scored_on"].iloc[0]
        ours.append({"model": part["model"].iloc[0], "setting": f"{variant} ({cfg.profile}, {cfg.epochs} epochs, "
                     f"{len(part)} seed{'s' * (len(part) > 1)})", "train": None, "val": None,
                     "test": round(part["accuracy"].mean(), 3) if scored_on == "test" else None,
                     "f1": round(part["f1"].mean(), 3), "split": f"{scored_on} split, {split_note}",
                     "note": cfg.data_label})
    return pd.concat([seed, pd.DataFrame(ours)], ignore_index=True)


def verdict(summary: pd.DataFrame, source: str, baseline: str = "scratch", arm: str = "breakhis",
            noise: float = 0.02) -> str:
    """One sentence: does ``arm`` beat ``baseline`` in a study summary (``Study.summary()``)? Judged on
    validation F1 (test F1 shown beside); a difference below ``noise`` or two standard deviations
    over seeds counts as none."""
    for name in (baseline, arm):
        if name not in summary.index:
            raise ValueError(f"no variant {name!r} in the summary; it has {list(summary.index)}")
    a, b = summary.loc[arm], summary.loc[baseline]
    diff = float(a["val_f1"] - b["val_f1"])
    spread = 2 * max(float(a.get("val_f1_sd", 0) or 0), float(b.get("val_f1_sd", 0) or 0))
    margin = max(noise, spread)
    word = ("helps" if diff > margin else "hurts" if diff < -margin else "makes no clear difference")
    test = f"; test F1 {a['f1']:.3f} against {b['f1']:.3f}" if "f1" in summary and pd.notna(a["f1"]) else ""
    return (f"Starting from '{arm}' rather than '{baseline}' {word} here: validation F1 {a['val_f1']:.3f} "
            f"against {b['val_f1']:.3f}{test} (a difference within {margin:.3f} counts as none; {source}).")
