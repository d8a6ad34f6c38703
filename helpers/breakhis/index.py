"""BreakHis (Spanhol et al. 2016): 7,909 RGB PNG microscopy images (700x460) of breast tumour tissue
from 82 patients at 40X, 100X, 200X and 400X, benign or malignant, in four subtypes each::

    BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<subtype>/SOB_<B|M>_<code>_<patient>/<N>X/
        SOB_<B|M>_<code>-<year>-<slide>-<magnification>-<seq>.png

The patient id is ``<year>-<slide>`` (e.g. ``14-22549AB``). Labels are per patient (per slide), not
per region: an image of a malignant patient may show only stroma or fat.
"""

from __future__ import annotations

import functools
import re
from collections import Counter, namedtuple
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .. import imagesets
from ..data.index import SKIP_REASONS as IDC_SKIP_REASONS
from ..data.index import Layout, Skip, data_root, index_images
from ..imagesets import CLASSES, TrackReport, image_grid, load_images, load_rgb
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
PATCH = 50  # px, the IDC models' input side
# The real BreakHis per subtype: (patients, images), Spanhol et al. 2016, table 1.
PUBLISHED = {"A": (4, 444), "F": (10, 1014), "PT": (3, 453), "TA": (7, 569),
             "DC": (38, 3451), "LC": (5, 626), "MC": (9, 792), "PC": (6, 560)}


def um_per_px(magnification, width=700) -> float:
    """Approximate micrometres per pixel of a BreakHis image (or one resized to ``width`` px)."""
    return UM_PER_PX_40X * 40 / magnification * 700 / width


def parse_name(name) -> dict:
    """What a BreakHis file name says: label (0 benign / 1 malignant), class, subtype code and name,
    patient, magnification and sequence number. Raises ValueError naming it."""
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


def official_path(info) -> Path:
    """Where the image of parse_name's fields lies in the official tree, relative to the archive's root."""
    cls, code, mag = "BM"[info["label"]], info["subtype"], info["magnification"]
    folder = OFFICIAL / info["class"] / "SOB" / info["subtype_name"].replace(" ", "_")
    return folder / f"SOB_{cls}_{code}_{info['patient']}" / f"{mag}X" / \
        f"SOB_{cls}_{code}-{info['patient']}-{mag}-{info['seq']:03d}.png"


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


LAYOUT = Layout("BreakHis directory", f"files named {PATTERN}", _name_file, COLUMNS,
                ["patient", "magnification", "path"], missing=FileNotFoundError, unique_names=True)


@dataclass
class BreakHisReport(TrackReport):
    REASONS = SKIP_REASONS
    patients: int = 0
    benign_patients: int = 0
    malignant_patients: int = 0
    by_magnification: dict = field(default_factory=dict)  # "40X" -> images
    by_subtype: dict = field(default_factory=dict)  # "DC" -> images
    sizes: dict = field(default_factory=dict)  # "700x460" -> images

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


def build_index(root) -> tuple[pd.DataFrame, BreakHisReport]:
    """The table (``COLUMNS``) of every BreakHis image under ``root``, the official tree or any folder of
    files named in its pattern, and a :class:`BreakHisReport`. A file name found twice counts once."""
    return index_images(root, LAYOUT, BreakHisReport)


Patches = namedtuple("Patches", "images labels patients source")  # source: the df index label of each patch's image


def tile_downscale(magnification, width=700, height=460, size=PATCH) -> float:
    """The downscale factor of "tiles": bring the image to IDC's ~4 um per pixel (about 2.5 at 40X,
    6.4 at 100X), never upscale, and keep at least one ``size`` tile (at 200X and 400X a 700x460
    image spans less than 0.2 mm, so there a tile covers a smaller field than an IDC patch)."""
    return float(np.clip(IDC_UM_PER_PX / um_per_px(magnification, width), 1, min(width, height) / size))


def to_patches(df: pd.DataFrame, size: int = PATCH, mode: str = "resize", tiles_per_image: int = 4,
               seed: int = 0) -> Patches:
    """Indexed images as inputs for the IDC models. ``mode="resize"``: each whole image squeezed to
    ``size`` x ``size`` (a 40X image then has ~22 um per pixel, far coarser than IDC patches).
    ``mode="tiles"``: the image shrunk by :func:`tile_downscale`, then ``tiles_per_image`` random crops,
    the same for the same ``seed``."""
    if mode not in ("resize", "tiles"):
        raise ValueError(f"mode must be 'resize' or 'tiles', not {mode!r}")
    if size < 1 or tiles_per_image < 1:
        raise ValueError(f"size and tiles_per_image must be positive, not {size}, {tiles_per_image}")
    if df.empty:
        raise ValueError("to_patches got an empty table")
    if mode == "resize":
        per, images = 1, load_images(df, size)
    else:  # each row's tiles drawn by its own generator: they do not depend on the other rows
        per, images = tiles_per_image, np.empty((len(df) * tiles_per_image, size, size, 3), np.uint8)
        for i, (path, mag) in enumerate(zip(df["path"], df["magnification"])):
            im = load_rgb(path)
            if min(im.size) < size:
                raise ValueError(f"image {path} ({im.width}x{im.height}) is smaller than a {size}-px tile")
            factor = tile_downscale(mag, *im.size, size)
            small = np.asarray(im.resize(tuple(max(size, round(v / factor)) for v in im.size), Image.Resampling.BOX))
            rng = np.random.default_rng([seed, i])
            ys, xs = (rng.integers(0, n - size + 1, per) for n in small.shape[:2])
            images[i * per : (i + 1) * per] = [small[y : y + size, x : x + size] for y, x in zip(ys, xs)]
    repeat = lambda col: np.repeat(np.asarray(col), per)  # noqa: E731
    return Patches(images, repeat(df["label"]).astype(np.int8), repeat(df["patient"]), repeat(df.index))


def sample_dir(given=None) -> Path | None:
    """A folder of a few real BreakHis images to show beside the generated set (the project ships none:
    BreakHis is for research use with citation), or None."""
    return None if given in (None, "") else data_root(given, "BreakHis sample folder", FileNotFoundError)


data_label = functools.partial(imagesets.data_label, generated="generated BreakHis-like demo data",
                               real="real BreakHis")


def counts_table(df: pd.DataFrame) -> pd.DataFrame:
    """Patients and images per subtype and magnification, the real BreakHis' published counts beside
    them, and a total row."""
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
    """One image per subtype (rows, benign first) and magnification (columns), of a random patient of
    that subtype. A sample that would leave most cells empty is shown whole instead, four a row."""
    from ..plots import CLASS_COLOURS

    if df.empty:
        raise ValueError("example_grid got an empty table")
    codes = [c for c in SUBTYPES if (df["subtype"] == c).any()]
    mags = sorted(set(df["magnification"]))
    cells = df.groupby(["subtype", "magnification"])
    gallery = 2 * cells.ngroups < len(codes) * len(mags)
    if gallery:
        shown = df.assign(order=df["subtype"].map(list(SUBTYPES).index)).sort_values(["order", "magnification"])
        place = [divmod(i, 4) for i in range(len(shown))]
        shape, size = (-(-len(shown) // 4), 4), (10.4, 2.1 * -(-len(shown) // 4) + 0.9)
    else:
        shown = cells.sample(1, random_state=np.random.default_rng(seed))
        place = [(codes.index(code), mags.index(mag)) for code, mag in zip(shown["subtype"], shown["magnification"])]
        shape, size = (len(codes), len(mags)), (2.3 * len(mags) + 1.2, 1.6 * len(codes) + 0.9)
    panels = []
    for (r, c), (_, row) in zip(place, shown.iterrows()):
        name, label = SUBTYPES[row["subtype"]]
        text = f"{row['magnification']}X, patient {row['patient']}"
        panels.append((r, c, row["path"], f"{name} ({CLASSES[label]})\n{text}" if gallery else text,
                       CLASS_COLOURS[label] if gallery else None))
    title = "every image of the sample, by subtype" if gallery else "one image per subtype and magnification"
    fig, axes = image_grid(shape, size, f"BreakHis: {title}\n({source})", panels)
    for r, code in enumerate([] if gallery else codes):
        name, label = SUBTYPES[code]
        axes[r, 0].set_ylabel(f"{name}\n({CLASSES[label]})", fontsize=8, color=CLASS_COLOURS[label])
        for ax in axes[r]:
            if not ax.images:
                ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=8, color="0.5")
    fig.tight_layout()
    return fig


def scale_table(df: pd.DataFrame) -> pd.DataFrame:
    """Micrometres per pixel and field of view per magnification (at the index's most common image size)
    of the image and of its "resize" and "tiles" inputs, the IDC patches' in the last row."""
    width, height = (int(v) for v in df[["width", "height"]].value_counts().idxmax())
    rows = []
    for mag in MAGNIFICATIONS:
        um = um_per_px(mag, width)
        tile_um = um * tile_downscale(mag, width, height)
        rows.append({"input": f"BreakHis {mag}X ({width}x{height} px)", "image µm/px": um,
                     "field (µm)": f"{width * um:.0f} x {height * um:.0f}",
                     "resize: µm/px": f"{width * um / PATCH:.1f} x {height * um / PATCH:.1f}",
                     "tiles: µm/px": tile_um, f"tile of {PATCH} px (µm)": PATCH * tile_um})
    idc = PATCH * IDC_UM_PER_PX
    rows.append({"input": "IDC patch (Kaggle)", "image µm/px": IDC_UM_PER_PX, "field (µm)": f"{idc:.0f}",
                 "resize: µm/px": "", "tiles: µm/px": IDC_UM_PER_PX, f"tile of {PATCH} px (µm)": idc})
    return pd.DataFrame(rows).set_index("input").round(2)


def patch_modes_figure(df: pd.DataFrame, source: str, tiles: int = 3, seed: int = 0):
    """What the IDC models see of one patient's images, a column per magnification: the image, its
    "resize" input and ``tiles`` "tiles" inputs, each with its micrometres per pixel. The patient is
    the malignant one (else any) with the most magnifications."""
    coverage = df.groupby("patient").agg(mags=("magnification", "nunique"), label=("label", "first"))
    patient = coverage.sort_values(["mags", "label"], ascending=False, kind="stable").index[0]
    images = df[df["patient"] == patient].groupby("magnification").head(1)
    whole = to_patches(images, mode="resize")
    cut = to_patches(images, mode="tiles", tiles_per_image=tiles, seed=seed)
    panels = []
    for c, (_, row) in enumerate(images.iterrows()):
        um = um_per_px(row["magnification"], row["width"])
        factor = tile_downscale(row["magnification"], row["width"], row["height"])
        panels += [(0, c, row["path"], f"{row['magnification']}X: {um:.2f} µm/px", None),
                   (1, c, whole.images[c], f"resize: ~{row['width'] * um / PATCH:.0f} µm/px", None)]
        panels += [(2 + t, c, cut.images[c * tiles + t], f"tile: {um * factor:.1f} µm/px", None) for t in range(tiles)]
    name = SUBTYPES[images["subtype"].iloc[0]][0]
    fig, axes = image_grid((2 + tiles, len(images)), (2.4 * len(images) + 1, 1.75 * (2 + tiles) + 1),
                           f"Patient {patient} ({name}): the images and the {PATCH}x{PATCH} inputs cut from them "
                           f"(IDC patches: {IDC_UM_PER_PX:.0f} µm/px)\n({source})", panels, fontsize=10)
    for r, label in enumerate(["image", f"resize\n{PATCH}x{PATCH}"] + [f"tile {t + 1}\n{PATCH}x{PATCH}"
                                                                      for t in range(tiles)]):
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig
