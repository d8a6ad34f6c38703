"""BreakHis (Spanhol et al. 2016): read the archive into a table, split it by patient, turn its
images into inputs for the IDC models.

7,909 RGB PNG microscopy images (700x460) of breast tumour tissue from 82 patients, at 40X, 100X,
200X and 400X, benign or malignant, in four subtypes each. Official layout::

    BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<subtype>/SOB_<B|M>_<code>_<patient>/<N>X/
        SOB_<B|M>_<code>-<year>-<slide>-<magnification>-<seq>.png

The patient id is ``<year>-<slide>`` (e.g. ``14-22549AB``). Labels are per patient (per slide), not
per region: an image of a malignant patient may show only stroma or fat.
"""

from __future__ import annotations

import re
from collections import Counter, namedtuple
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ..data.index import SKIP_REASONS as IDC_SKIP_REASONS
from ..imagesets import CLASSES, Layout, Report, Skip, image_grid, index_images, load_rgb
from ..imagesets import data_label as _data_label
from ..imagesets import split_by_patient_label  # noqa: F401  (notebook 12 and the tests call it from here)

# code -> (full name, label); the folder of a subtype is its name with "_" for " ".
SUBTYPES = {
    "A": ("adenosis", 0), "F": ("fibroadenoma", 0), "PT": ("phyllodes tumor", 0),
    "TA": ("tubular adenoma", 0), "DC": ("ductal carcinoma", 1), "LC": ("lobular carcinoma", 1),
    "MC": ("mucinous carcinoma", 1), "PC": ("papillary carcinoma", 1),
}
SUBTYPE_FOLDERS = {name.replace(" ", "_"): code for code, (name, _) in SUBTYPES.items()}
MAGNIFICATIONS = (40, 100, 200, 400)
PATTERN = "SOB_<B|M>_<code>-<year>-<slide>-<magnification>-<seq>.png"
NAME = re.compile(r"^SOB_(?P<cls>[BM])_(?P<code>[A-Z]+)-(?P<year>\d{2})-(?P<slide>[0-9A-Za-z]+)"
                  r"-(?P<mag>\d+)-(?P<seq>\d+)\.png$")
PATIENT_FOLDER = re.compile(r"^SOB_(?P<cls>[BM])_(?P<code>[A-Z]+)_(?P<patient>\d{2}-[0-9A-Za-z]+)$")
COLUMNS = ["path", "patient", "label", "class", "subtype", "magnification", "width", "height"]
OFFICIAL = Path("BreaKHis_v1", "histology_slides", "breast")

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
# The real BreakHis per subtype: (patients, images), Spanhol et al. 2016, table 1.
PUBLISHED = {"A": (4, 444), "F": (10, 1014), "PT": (3, 453), "TA": (7, 569),
             "DC": (38, 3451), "LC": (5, 626), "MC": (9, 792), "PC": (6, 560)}


def um_per_px(magnification, width=700) -> float:
    """Approximate micrometres per pixel of a BreakHis image (or one resized to ``width`` px)."""
    return UM_PER_PX_40X * 40 / magnification * 700 / width


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


def _name_file(path, folders):
    """parse_name's fields of a file, or a Skip: not a PNG, a bad name, or a folder on its path
    (named like an official one; a flat folder passes) that says something else than its name."""
    if path.suffix.lower() != ".png":
        return Skip("not_png")
    try:
        info = parse_name(path.name)
    except ValueError as exc:
        return Skip("bad_name", str(exc))
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
                return Skip(f"{key}_mismatch", f"name says {info[key]}, folder {part}")
    return info


LAYOUT = Layout("BreakHis directory", f"files named {PATTERN}", _name_file, missing=FileNotFoundError)


@dataclass
class BreakHisReport(Report):
    """What build_index found: counts, merged duplicates, and every skipped file with its reason."""

    REASONS = SKIP_REASONS
    LISTS = ("duplicate_files",)  # (kept, dropped copy)
    patients: int = 0
    benign_patients: int = 0
    malignant_patients: int = 0
    by_magnification: dict = field(default_factory=dict)  # "40X" -> images
    by_subtype: dict = field(default_factory=dict)  # "DC" -> images
    sizes: dict = field(default_factory=dict)  # "700x460" -> images
    duplicates_merged: int = 0
    duplicate_files: list = field(default_factory=list)

    def count(self, df):
        super().count(df)
        per_patient = df.groupby("patient")["label"].first()
        self.patients = len(per_patient)
        self.malignant_patients = int(per_patient.sum())
        self.benign_patients = self.patients - self.malignant_patients
        counts = lambda col: df[col].value_counts().sort_index().items()  # noqa: E731
        self.by_magnification = {f"{m}X": int(n) for m, n in counts("magnification")}
        self.by_subtype = {c: int(n) for c, n in counts("subtype")}
        self.sizes = dict(Counter(f"{w}x{h}" for w, h in zip(df["width"], df["height"])))


def build_index(root, workers: int | None = None) -> tuple[pd.DataFrame, BreakHisReport]:
    """Index every BreakHis image under ``root``: the official tree, or any folder of files named in
    the BreakHis pattern. Returns the table (``COLUMNS``, one row per file name, sorted by patient,
    magnification and name) and a :class:`BreakHisReport`. A name found twice counts once: the first
    copy found is kept (top folders first), identical copies are listed in ``duplicate_files``,
    different ones skipped as ``conflicting_duplicate``. Raises FileNotFoundError if ``root`` is
    missing, :class:`~helpers.data.index.DataError` if it is not a folder or holds no usable image."""
    report, found = index_images(root, LAYOUT, BreakHisReport, workers)
    rows, kept = [], {}  # kept: file name -> (path, digest) of the first copy
    for path, info, width, height, digest in found:
        if path.name in kept and kept[path.name][1] != digest:
            report.skip(path, "conflicting_duplicate", f"differs from {kept[path.name][0]}")
        elif path.name in kept:
            report.duplicates_merged += 1
            report.duplicate_files.append((str(kept[path.name][0]), str(path)))
        else:
            kept[path.name] = (path, digest)
            rows.append((str(path), *(info[c] for c in COLUMNS[1:6]), width, height, path.name))
    df = pd.DataFrame(rows, columns=COLUMNS + ["name"])
    df = df.sort_values(["patient", "magnification", "name"]).drop(columns="name").reset_index(drop=True)
    df["label"] = df["label"].astype("int8")
    report.count(df)
    return df, report


Patches = namedtuple("Patches", "images labels patients source")
Patches.__doc__ = """to_patches' result: uint8 images (n, size, size, 3), labels, patient ids, and the
index label (in the given table) of the image each patch came from."""


def tile_downscale(magnification, width=700, height=460, size=50) -> float:
    """Default downscale factor of "tiles": bring the image to IDC's ~4 um per pixel (about 2.5 at 40X,
    6.4 at 100X), never upscale, and keep at least one ``size`` tile (at 200X and 400X a 700x460
    image spans less than 0.2 mm, so there a tile covers a smaller field than an IDC patch)."""
    return float(np.clip(IDC_UM_PER_PX / um_per_px(magnification, width), 1, min(width, height) / size))


def to_patches(df: pd.DataFrame, size: int = 50, mode: str = "resize", tiles_per_image: int = 4,
               downscale: float | None = None, seed: int = 0, progress: bool = False) -> Patches:
    """Turn indexed images into inputs for the IDC models: a :class:`Patches` of uint8 arrays.

    ``mode="resize"``: each whole image shrunk (area average) to ``size`` x ``size``; the aspect is
    NOT kept (700:460 squeezed to a square), and a 40X image then has ~22 um per pixel, far coarser
    than IDC patches. ``mode="tiles"``: the image is first shrunk by ``downscale`` (default
    :func:`tile_downscale`; a given factor is likewise capped so that one tile fits), then
    ``tiles_per_image`` random ``size`` x ``size`` crops are cut, the same for the same ``seed``.
    ``source`` holds ``df``'s index label of each patch's image, so splits stay by patient.
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
        im = load_rgb(path)
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
    return _data_label(root, "generated BreakHis-like demo data", "real BreakHis")


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


def example_grid(df: pd.DataFrame, source: str, seed: int = 0):
    """One image per subtype (rows, benign first) and magnification (columns), each of a randomly
    chosen patient of that subtype; an empty cell where the index holds no such image. A sample that
    would leave most cells empty (a few images) is shown as a gallery of every image instead."""
    from ..plots import CLASS_COLOURS

    codes = [c for c in SUBTYPES if (df["subtype"] == c).any()]
    mags = [m for m in MAGNIFICATIONS if (df["magnification"] == m).any()]
    if not codes:
        raise ValueError("example_grid got an empty table")
    if 2 * len(df[["subtype", "magnification"]].drop_duplicates()) < len(codes) * len(mags):
        return _gallery(df, source)
    rng = np.random.default_rng(seed)
    panels, empty = [], []
    for r, code in enumerate(codes):
        for c, mag in enumerate(mags):
            part = df[(df["subtype"] == code) & (df["magnification"] == mag)]
            if len(part):
                row = part.iloc[rng.integers(len(part))]
                panels.append((r, c, row["path"], f"{mag}X, patient {row['patient']}", None))
            else:
                empty.append((r, c))
    fig, axes = image_grid((len(codes), len(mags)), (2.3 * len(mags) + 1.2, 1.6 * len(codes) + 0.9),
                           f"BreakHis: one image per subtype and magnification\n({source})", panels)
    for r, c in empty:
        axes[r, c].text(0.5, 0.5, "no image", ha="center", va="center", fontsize=8, color="0.5")
        axes[r, c].set_frame_on(False)
    for r, code in enumerate(codes):
        name, label = SUBTYPES[code]
        axes[r, 0].set_ylabel(f"{name}\n({CLASSES[label]})", fontsize=8, color=CLASS_COLOURS[label])
    fig.tight_layout()
    return fig


def _gallery(df: pd.DataFrame, source: str, cols: int = 4):
    """Every image of a small index, titled with its subtype, class and magnification."""
    from ..plots import CLASS_COLOURS

    ordered = df.assign(order=df["subtype"].map(list(SUBTYPES).index)).sort_values(["order", "magnification"])
    panels = []
    for i, (_, row) in enumerate(ordered.iterrows()):
        name, label = SUBTYPES[row["subtype"]]
        panels.append((i // cols, i % cols, row["path"], f"{name} ({CLASSES[label]})\n{row['magnification']}X, "
                       f"patient {row['patient']}", CLASS_COLOURS[label]))
    rows = -(-len(df) // cols)
    fig, axes = image_grid((rows, cols), (2.6 * cols, 2.1 * rows + 0.9),
                           f"BreakHis: every image of the sample, by subtype\n({source})", panels)
    for ax in axes.flat[len(df):]:
        ax.axis("off")
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
    coverage = df.groupby("patient").agg(mags=("magnification", "nunique"), label=("label", "first"))
    patient = coverage.sort_values(["mags", "label"], ascending=False, kind="stable").index[0]
    images = df[df["patient"] == patient].groupby("magnification").head(1)
    whole = to_patches(images, size=size, mode="resize")
    cut = to_patches(images, size=size, mode="tiles", tiles_per_image=tiles, seed=seed)
    panels = []
    for c, (_, row) in enumerate(images.iterrows()):
        um = um_per_px(row["magnification"], row["width"])
        factor = tile_downscale(row["magnification"], row["width"], row["height"], size)
        panels += [(0, c, row["path"], f"{row['magnification']}X: {um:.2f} µm/px", None),
                   (1, c, whole.images[c], f"resize: ~{row['width'] * um / size:.0f} µm/px", None)]
        panels += [(2 + t, c, cut.images[c * tiles + t], f"tile: {um * factor:.1f} µm/px", None) for t in range(tiles)]
    name = SUBTYPES[images["subtype"].iloc[0]][0]
    fig, axes = image_grid((2 + tiles, len(images)), (2.4 * len(images) + 1, 1.75 * (2 + tiles) + 1),
                           f"Patient {patient} ({name}): the images and the {size}x{size} inputs cut from them "
                           f"(IDC patches: {IDC_UM_PER_PX:.0f} µm/px)\n({source})", panels, fontsize=10)
    for r, label in enumerate(["image", f"resize\n{size}x{size}"] + [f"tile {t + 1}\n{size}x{size}"
                                                                    for t in range(tiles)]):
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig
