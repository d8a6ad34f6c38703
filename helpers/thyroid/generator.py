"""A generated thyroid ultrasound set (benign / malignant nodules, cropped and uncropped, train and
test folders, ``B_``/``M_`` names; no patient data), and where the thyroid data of a run are: a
given folder, or the generated set of the profile's size."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..config import demo_dir as idc_demo_dir
from ..data.demo import draw_all, smooth_noise
from ..data.index import DataError
from ..imagesets import class_counts
from ..io import generated_set, given_or_generated
from .index import SUBSETS, VARIANTS


VERSION = 3  # part of the stored parameters: bump it when the pictures change
MALIGNANT_SHARE = 0.2  # the seed's sets: 19-23% malignant images
TEST_SHARE = 0.2  # of the nodules of each class, in the test folders
FRAME = (320, 240)  # the "uncropped" scanner frame, width x height
APEX = (150.0, -130.0)  # the fan's apex (a convex probe), above the frame
R0, DEPTH, BEAMS = 150, 205, 180  # first radius and depth (px), beams across the fan
HALF_ANGLE = np.deg2rad(22.0)
PX_PER_CM = DEPTH / 4.0  # a 4 cm field of view
TOP = int(APEX[1] + R0)  # the skin line at the fan's centre (y)
FONT = ImageFont.load_default()  # the scanner's on-screen text


@functools.lru_cache(maxsize=1)
def _geometry():
    """The fan: frame coordinates (x, y) of every polar sample (depth, beam), and the polar coordinates
    of the frame's pixels inside the fan (scan conversion)."""
    r = R0 + np.arange(DEPTH, dtype=np.float32)[:, None]
    t = np.linspace(-HALF_ANGLE, HALF_ANGLE, BEAMS, dtype=np.float32)[None]
    x, y = APEX[0] + r * np.sin(t), APEX[1] + r * np.cos(t)
    yy, xx = np.mgrid[0 : FRAME[1], 0 : FRAME[0]].astype(np.float32)
    ir = np.hypot(xx - APEX[0], yy - APEX[1]) - R0
    it = (np.arctan2(xx - APEX[0], yy - APEX[1]) + HALF_ANGLE) / (2 * HALF_ANGLE) * (BEAMS - 1)
    inside = (ir >= 0) & (ir <= DEPTH - 1) & (it >= 0) & (it <= BEAMS - 1)
    return x, y, inside, np.stack([ir[inside], it[inside]])


def _half_width(depth) -> float:
    """Half the fan's width (px) at ``depth`` px below the skin line."""
    return (R0 + depth) * np.sin(HALF_ANGLE)


# How a nodule looks, by class: probabilities of echo types, of margins and of signs. Each sign
# leans towards one class; none decides it.
ECHO = {  # kind -> (echogenicity relative to the thyroid: low, high)
    "hyper": (1.35, 1.8), "iso": (0.8, 1.15), "hypo": (0.42, 0.65), "marked_hypo": (0.2, 0.32),
    "cystic": (0.02, 0.04), "spongiform": (0.85, 1.1), "mixed": (0.6, 0.9),
}
LOOK = {
    0: dict(echo={"iso": 0.3, "hyper": 0.13, "hypo": 0.2, "cystic": 0.15, "spongiform": 0.1, "mixed": 0.12},
            margin={"smooth": 0.8, "lobulated": 0.15, "spiculated": 0.05}, ratio=(0.78, 0.14),
            microcalc=0.08, halo=0.35, macrocalc=0.1, size=(32, 118)),
    1: dict(echo={"marked_hypo": 0.3, "hypo": 0.45, "iso": 0.17, "mixed": 0.08},
            margin={"smooth": 0.25, "lobulated": 0.35, "spiculated": 0.4}, ratio=(1.08, 0.2),
            microcalc=0.6, halo=0.07, macrocalc=0.15, size=(28, 100)),
}


def _choose(rng, weights: dict) -> str:
    p = np.array(list(weights.values()), float)
    return str(rng.choice(list(weights), p=p / p.sum()))


def _nodule(rng, label) -> dict:
    """One nodule's own look, shared by all its images."""
    look = LOOK[label]
    margin = _choose(rng, look["margin"])
    amp = np.zeros(24)
    amp[2:4] = rng.uniform(0.01, 0.05, 2)
    if margin == "lobulated":
        amp[3:8] = rng.uniform(0.01, 0.06, 5)
    elif margin == "spiculated":
        amp[4:9] = rng.uniform(0.02, 0.06, 5)
        amp[12:24] = rng.uniform(0.01, 0.035, 12)
    echo = _choose(rng, look["echo"])
    size = rng.uniform(*look["size"])  # the widest diameter, px
    ratio = float(np.clip(rng.normal(*look["ratio"]), 0.5, 1.6))  # taller / wider
    return dict(
        label=label, echo=echo, level=rng.uniform(*ECHO[echo]), margin=margin, amp=amp,
        phase=rng.uniform(0, 2 * np.pi, 24),
        spikes=rng.integers(5, 12) if margin == "spiculated" else 0,
        a=size / 2 if ratio <= 1 else size / 2 / ratio, ratio=ratio,
        edge=rng.uniform(2.0, 4.0) if margin != "smooth" else rng.uniform(0.7, 1.5),
        hetero=rng.uniform(0.05, 0.3), cyst_at=rng.uniform(-0.1, 0.5),
        microcalc=int(rng.integers(3, 20)) if rng.random() < look["microcalc"] else 0,
        halo=rng.uniform(1.5, 3.5) if rng.random() < look["halo"] else 0.0,
        macrocalc=("rim" if rng.random() < 0.5 else "clump") if rng.random() < look["macrocalc"] else "",
        shadow=rng.uniform(0.0, 0.006) if label else rng.uniform(0.0, 0.002),
    )


def _scene(rng, nod) -> dict:
    """One image of a nodule: where the probe puts it, at what scale, the scanner's settings."""
    scale = rng.uniform(0.9, 1.1)
    a = nod["a"] * scale * rng.uniform(0.95, 1.05)
    b = nod["a"] * nod["ratio"] * scale * rng.uniform(0.95, 1.05)
    reach = 1.25 * max(a, b)
    lo, hi = 40 + 1.2 * b, 185 - 1.2 * b
    depth = rng.uniform(lo, hi) if lo < hi else (lo + hi) / 2  # of the centre, below the skin line
    half = max(0.0, _half_width(depth - reach) - reach - 6)
    return dict(a=a, b=b, cx=APEX[0] + rng.uniform(-half, half), cy=TOP + depth, rot=rng.normal(0, 0.1),
                phase=nod["phase"] + rng.normal(0, 0.25, 24), gain=rng.normal(0, 2.5), dr=rng.uniform(42, 52),
                atten=rng.uniform(0.0, 0.004), side=1 if rng.random() < 0.5 else -1,
                carotid=rng.random() < 0.6, carotid_depth=rng.uniform(90, 130), carotid_radius=rng.uniform(15, 22),
                trachea=rng.random() < 0.4)


def _layers(rng, shape) -> np.ndarray:
    """The neck's echogenicity in polar samples (depth, beam): skin, fat, strap muscles, the thyroid's
    capsule and parenchyma, deep muscle; wavy boundaries."""
    depth = np.arange(shape[0], dtype=np.float32)[:, None]
    b1 = rng.uniform(10, 16) + 2 * smooth_noise(rng, (1, shape[1]), (0, 20))
    b2 = rng.uniform(32, 44) + 3 * smooth_noise(rng, (1, shape[1]), (0, 25))
    b3 = rng.uniform(172, 192) + 5 * smooth_noise(rng, (1, shape[1]), (0, 30))
    streak = smooth_noise(rng, shape, (1.0, 12.0))
    R = np.where(depth < 3, 2.5, 0.7 + 0.35 * streak)  # skin, fat with fibrous streaks
    R = np.where(depth >= b1, 0.42 * (1 + 0.35 * streak), R)  # strap muscles, striated
    R = np.where(depth >= b2, 1.0 + 0.12 * smooth_noise(rng, shape, (8.0, 10.0)), R)  # parenchyma
    R = np.where(np.abs(depth - b2) < 1.5, 1.9, R)  # capsule
    R = np.where(depth >= b3, 0.5 * (1 + 0.4 * streak), R)
    R = np.where(np.abs(depth - b3) < 1.2, 1.6, R)
    return np.maximum(R, 0.05).astype(np.float32)


def _vessels(sc, R, alpha, X, Y):
    """The carotid (anechoic, a bright wall, brighter behind) and the trachea (a bright arc casting a
    shadow), each on the side of the lobe away from the nodule."""
    if sc["carotid"]:
        side = -1 if sc["cx"] > APEX[0] else 1
        depth, rad = sc["carotid_depth"], sc["carotid_radius"]
        cx = APEX[0] + side * (_half_width(depth) - 0.6 * rad)
        d = np.hypot(X - cx, Y - (TOP + depth))
        R[d < rad] = 0.015
        R[(d >= rad) & (d < rad + 2.0)] = 2.2
        alpha[d < rad] -= 0.02
    if sc["trachea"]:
        side = 1 if sc["cx"] > APEX[0] else -1
        rad = 30.0
        cx, cy = APEX[0] + side * (_half_width(70) + 0.3 * rad), TOP + 70 + rad
        d = np.hypot(X - cx, Y - cy)
        ring = (np.abs(d - rad) < 2.0) & (Y < cy)
        R[ring] = 4.0
        alpha[ring] += 0.2


def _draw_nodule(rng, nod, sc, R, alpha, X, Y):
    """Paint the nodule into the echogenicity R and attenuation alpha; return its box (x0, y0, x1, y1)."""
    a, b = sc["a"], sc["b"]
    reach = 1.3 * max(a, b) + 6
    box = ndimage.find_objects(((np.abs(X - sc["cx"]) < reach) & (np.abs(Y - sc["cy"]) < reach)).view(np.uint8))[0]
    x, y = X[box] - sc["cx"], Y[box] - sc["cy"]
    c, s = np.cos(sc["rot"]), np.sin(sc["rot"])
    u, v = (x * c + y * s) / a, (y * c - x * s) / b
    rho, t = np.hypot(u, v), np.arctan2(v, u)
    bound = np.ones_like(rho)
    for k in np.nonzero(nod["amp"])[0]:
        bound += nod["amp"][k] * np.cos(k * t + sc["phase"][k])
    if nod["spikes"]:
        bound += 0.12 * np.maximum(0, np.cos(nod["spikes"] * t + sc["phase"][0])) ** 6
    inside = (bound - rho) * np.sqrt(a * b)  # ~px inside the outline
    w = np.clip(inside / nod["edge"] + 0.5, 0, 1)
    level = nod["level"] * rng.uniform(0.9, 1.1)
    core = level * np.maximum(0.1, 1 + nod["hetero"] * smooth_noise(rng, rho.shape, 3.0))
    r = R[box]
    if nod["echo"] == "spongiform":  # many small cysts
        core = np.where(smooth_noise(rng, rho.shape, (1.2, 1.6)) > 0.9, 0.08, core)
    elif nod["echo"] == "mixed":  # a solid part and a cystic part, side by side
        side = np.cos(nod["phase"][3]) * u + np.sin(nod["phase"][3]) * v + 0.3 * smooth_noise(rng, rho.shape, 4.0)
        core = np.where(side > nod["cyst_at"], 0.04, core)
    elif nod["echo"] == "cystic":  # a little debris
        core = core + 0.08 * (rng.random(rho.shape) < 0.01)
    r[:] = r * (1 - w) + core * w
    if nod["halo"]:
        r[(inside < 0) & (inside > -nod["halo"])] *= 0.25
    al = alpha[box]
    fluid = {"cystic": 1.0, "spongiform": 0.4, "mixed": 0.5}.get(nod["echo"], 0.0)
    al += w * (nod["shadow"] - 0.02 * fluid)
    if nod["microcalc"]:  # bright dots inside the solid part, no shadow
        cand = np.flatnonzero((inside > 2).ravel())
        if len(cand):
            pick = rng.choice(cand, min(len(cand), nod["microcalc"]), replace=False)
            r.flat[pick] = rng.uniform(5, 12, len(pick))
            ok = pick[(pick % r.shape[1]) + 1 < r.shape[1]]
            r.flat[ok + 1] = np.maximum(r.flat[ok + 1], 3.0)
    if nod["macrocalc"] == "rim":  # an eggshell arc on the upper outline, shadowing
        arc = (np.abs(inside) < 1.5) & (np.cos(t - sc["phase"][1] * 0.1 + np.pi / 2) > 0.5) & (v < 0)
        r[arc] = 7.0
        al[arc] += 0.12
    elif nod["macrocalc"] == "clump":
        d = np.hypot(u * a - 0.3 * a * np.cos(sc["phase"][2]), v * b - 0.3 * b * np.sin(sc["phase"][2]))
        clump = d < rng.uniform(2.5, 5.0)
        r[clump] = 7.0
        al[clump] += 0.15
    shown = inside > -0.5
    return X[box][shown].min(), Y[box][shown].min(), X[box][shown].max(), Y[box][shown].max()


def _image(rng, nod, sc) -> tuple[np.ndarray, tuple]:
    """The scan (uint8, FRAME, black outside the fan, no overlay) and the nodule's bounding box."""
    X, Y, inside, coords = _geometry()
    R, alpha = _layers(rng, X.shape), np.full(X.shape, sc["atten"], np.float32)
    _vessels(sc, R, alpha, X, Y)
    box = _draw_nodule(rng, nod, sc, R, alpha, X, Y)
    alpha = ndimage.gaussian_filter1d(alpha, 1.2, axis=1)  # shadows and enhancement blur across beams
    # Speckle: the magnitude of smoothed complex noise (Rayleigh), grains longer across the beams.
    speckle = np.hypot(*ndimage.gaussian_filter(rng.standard_normal((2, *X.shape), dtype=np.float32), (0, 0.8, 1.1)))
    speckle /= speckle.mean()
    db = 20 * np.log10(R * speckle * np.exp(-np.cumsum(alpha, axis=0)) + 1e-4)  # the envelope in decibels
    gray = np.clip((db + 0.55 * sc["dr"] + sc["gain"]) / sc["dr"], 0, 1) ** 1.2
    frame = np.zeros(inside.shape, np.float32)
    frame[inside] = ndimage.map_coordinates(gray, coords, order=1)
    return (255 * frame).astype(np.uint8), box


def _overlay(rng, img: Image.Image, sc, box, when):
    """The scanner's screen: text, a grey bar, a depth ruler with ticks, calliper marks."""
    d = ImageDraw.Draw(img)
    font, w, h = FONT, FRAME[0], FRAME[1]
    side = "L" if sc["side"] < 0 else "R"
    view = "TRANS" if rng.random() < 0.6 else "LONG"
    d.text((4, 2), f"DEMO US  {when}", fill=220, font=font)
    d.text((4, 14), f"THY {side} {view}", fill=235, font=font)
    d.text((w - 62, 2), "12L5  MI 0.9", fill=200, font=font)
    for i, line in enumerate((f"Gain {54 + sc['gain']:.0f}", f"DR {sc['dr']:.0f}", "FR 27", "D 4.0cm")):
        d.text((4, 40 + 12 * i), line, fill=190, font=font)
    for i in range(64):  # the grey map bar
        d.line([(6, 110 + i), (11, 110 + i)], fill=int(255 - 4 * i))
    x = w - 16  # the depth ruler: a tick every 0.5 cm, a number every cm
    for k in range(9):
        yk = TOP + k * PX_PER_CM / 2
        d.line([(x, yk), (x + (6 if k % 2 == 0 else 3), yk)], fill=210)
        if k % 2 == 0:
            d.text((x + 8, yk - 5), str(k // 2), fill=210, font=font)
    d.line([(x, TOP), (x, TOP + DEPTH)], fill=150)
    x0, y0, x1, y1 = box
    mid_x, mid_y = (x0 + x1) / 2, (y0 + y1) / 2
    if rng.random() < 0.85:  # calliper marks at the ends of the two diameters
        # a "+" or an "x": two strokes, each (dx0, dy0, dx1, dy1) from the mark's centre
        strokes = ((-3, 0, 3, 0), (0, -3, 0, 3)) if rng.random() < 0.6 else ((-3, -3, 3, 3), (-3, 3, 3, -3))
        for px, py in ((x0, mid_y), (x1, mid_y), (mid_x, y0), (mid_x, y1)):
            px, py = px + rng.normal(0, 1.5), py + rng.normal(0, 1.5)
            for dx0, dy0, dx1, dy1 in strokes:
                d.line([(px + dx0, py + dy0), (px + dx1, py + dy1)], fill=245)
        d.text((4, h - 26), f"1 D {(x1 - x0) / PX_PER_CM:.2f}cm", fill=230, font=font)
        d.text((4, h - 14), f"2 D {(y1 - y0) / PX_PER_CM:.2f}cm", fill=230, font=font)


def _crop_box(rng, box) -> tuple[int, int, int, int]:
    """The cropped version's box: the nodule's with a margin of 10-35% of its size on each side."""
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * rng.uniform(0.1, 0.35) + 3, (y1 - y0) * rng.uniform(0.1, 0.35) + 3
    return max(0, int(x0 - mx)), max(0, int(y0 - my)), min(FRAME[0], int(np.ceil(x1 + mx))), \
        min(FRAME[1], int(np.ceil(y1 + my)))


def _plan(n_nodules, seed):
    """(label, subset) of every nodule: ~20% malignant, ~20% of each class in the test folders."""
    rng = np.random.default_rng([seed, 31337])
    n_mal = min(n_nodules - 1, max(1, round(MALIGNANT_SHARE * n_nodules)))
    labels = rng.permutation(np.r_[np.zeros(n_nodules - n_mal, int), np.ones(n_mal, int)])
    subsets = np.array(["train"] * n_nodules, dtype=object)
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == label))
        subsets[idx[: round(TEST_SHARE * len(idx))]] = "test"
    return [(int(l), str(s)) for l, s in zip(labels, subsets)]


def _write_nodule(job) -> list[tuple]:
    """Draw and save the images of one nodule in both variants; return (label, subset, w, h of the crop)."""
    tmp, i, rng, (label, subset), params = job
    nod = _nodule(rng, label)
    day = np.datetime64("2099-01-01") + int(rng.integers(0, 365))
    done = []
    for j in range(1, params["images_per_nodule"] + 1):
        sc = _scene(rng, nod)
        scan, box = _image(rng, nod, sc)
        name = f"{'BM'[label]}_{i + 1:03d}-{j:04d}-1.0.jpg"
        x0, y0, x1, y1 = _crop_box(rng, box)
        Image.fromarray(scan[y0:y1, x0:x1], "L").convert("RGB").save(tmp / "cropped" / subset / name, quality=90)
        frame = Image.fromarray(scan, "L")
        _overlay(rng, frame, sc, box, f"{day} {int(rng.integers(8, 18)):02d}:{int(rng.integers(0, 60)):02d}")
        frame.convert("RGB").save(tmp / "uncropped" / subset / name, quality=90)
        done.append((label, subset, x1 - x0, y1 - y0))
    return done


# Nodules and images per nodule of the generated set, by profile.
DEMO_SIZES = {"smoke": (120, 3), "cpu": (300, 6), "full": (1000, 8), "colab": (300, 6)}
DESCRIPTION = ("GENERATED DEMO DATA - NOT PATIENT DATA.\n"
               "Drawn by helpers/thyroid/ (numpy speckle, a convex-probe fan, painted nodules) in the\n"
               "layout and with the file names of the seed project's thyroid ultrasound set: no real\n"
               "scan and no clinical meaning. Labels are the generator's, not a clinician's.\n")


def make_demo(root, n_nodules: int = 60, images_per_nodule: int = 4, seed: int = 0,
              workers: int | None = None) -> dict:
    """Write a *generated* thyroid-ultrasound-like set, ``root/<cropped|uncropped>/<train|test>/<B|M>_<nodule:03d>-
    <image:04d>-1.0.jpg``, and return its summary. An uncropped image is a 320x240 scanner frame (a fan of
    speckle, on-screen text, depth ruler, calliper marks), its cropped version the nodule's box with a
    10-35% margin, cut before the overlay. ~20% of nodules malignant, ~20% of each class in ``test``.
    The same arguments give the same files (``io.generated_set`` says when a folder is reused)."""
    if n_nodules < 2 or images_per_nodule < 1:
        raise ValueError(f"need n_nodules >= 2 (both classes) and images_per_nodule >= 1, not "
                         f"{n_nodules}, {images_per_nodule}")
    params = dict(kind="thyroid", n_nodules=int(n_nodules), images_per_nodule=int(images_per_nodule),
                  seed=int(seed), version=VERSION)
    plan = _plan(n_nodules, seed)

    def write(tmp):
        for variant in VARIANTS:
            for subset in SUBSETS:
                (tmp / variant / subset).mkdir(parents=True)
        labels, subsets, widths, heights = map(np.array, zip(*draw_all(_write_nodule, tmp, plan, params, workers)))
        (tmp / "README.txt").write_text(DESCRIPTION + "Parameters and counts: GENERATED.txt, generated.json.\n")
        return {"root": str(root), "nodules": len(plan), "malignant_nodules": sum(p[0] for p in plan),
                "images_per_variant": len(labels), **class_counts(labels),
                "counts": {f"{v}/{s}": class_counts(labels[subsets == s]) for v in VARIANTS for s in SUBSETS},
                "frame": list(FRAME), "cropped_width_range": [int(widths.min()), int(widths.max())],
                "cropped_height_range": [int(heights.min()), int(heights.max())], "seed": params["seed"],
                "generated": True}, DESCRIPTION

    return generated_set(root, params, "a thyroid demo set", write)


def demo_dir(nodules: int) -> Path:
    """Where the generated set of that many nodules lives: beside the generated IDC sets,
    ``data/demo/thyroid-<N>n`` (the environment variable IDC_DEMO_ROOT moves them all)."""
    return idc_demo_dir(nodules).with_name(f"thyroid-{nodules}n")


def resolve_dir(thyroid_dir=None, profile: str = "smoke", seed: int = 0) -> Path:
    """``thyroid_dir`` as a Path (it must exist); None or "": the generated set of the profile's size,
    made on first use in :func:`demo_dir` (a generated set there made with other parameters is replaced)."""
    return given_or_generated(thyroid_dir, profile, DEMO_SIZES, demo_dir,
                              lambda root, n, per: make_demo(root, n, per, seed=seed), "thyroid data directory",
                              missing=DataError)
