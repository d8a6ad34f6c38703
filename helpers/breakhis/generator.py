"""A generated BreakHis-like image set (official layout and names, no patient data), and where the
BreakHis data of a run are: a given folder, or the generated set of the profile's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

from ..config import demo_dir as idc_demo_dir
from ..data.demo import _E, _GLASS_OD, _H, _apportion, draw_all, smooth_noise
from ..imagesets import CLASSES
from ..io import generated_set, given_or_generated
from .index import MAGNIFICATIONS, PUBLISHED, SUBTYPES, BreakHisReport, official_path, um_per_px


VERSION = 2  # part of the stored parameters: bump it when the pictures change
# Patients and images per patient of the generated set, by profile (the real set has 82 patients).
DEMO_SIZES = {"smoke": (16, 12), "cpu": (40, 24), "full": (82, 48), "colab": (82, 48)}
DESCRIPTION = ("GENERATED DEMO DATA - NOT PATIENT DATA.\n"
               "Drawn by helpers/breakhis/ (numpy noise, an H&E colour model) in the layout and with\n"
               "the file names of BreakHis (Spanhol et al. 2016): no real tissue; no clinical claim\n"
               "rests on it. Labels and subtypes are the generator's, not a pathologist's.\n")
DEMO_YEAR = "99"  # real BreakHis patients are from 2013-14: a generated id never looks real
FIRST_SLIDE = 90001
BENIGN_SHARE = 0.31  # of patients, about that of BreakHis' patients (24/82) and images (2,480/7,909)

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
    the rest by BreakHis' shares of patients, in a seeded order."""
    n_benign = min(n_patients - 1, max(1, round(BENIGN_SHARE * n_patients)))
    codes = []
    for label, n in ((0, n_benign), (1, n_patients - n_benign)):
        names = [c for c in SUBTYPES if SUBTYPES[c][1] == label]
        base = int(n >= len(names))
        counts = base + _apportion(n - base * len(names), [PUBLISHED[c][0] for c in names], [n] * len(names))
        codes += [c for c, k in zip(names, counts) for _ in range(k)]
    return list(np.random.default_rng([seed, 777]).permutation(codes))


def _ellipses(shape, cy, cx, a, b, angle, irregular, rng, pad=1.0, dark=None):
    """Ellipses with bumpy outlines, all at once, as small stamps combined by a per-pixel maximum. Without
    ``dark``: how many px a pixel lies inside the nearest outline (negative outside, -inf beyond ``pad``
    px); with it: soft discs of that darkness (overlapping nuclei do not add up)."""
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
    return dict(code=code, label=SUBTYPES[code][1], **LOOKS[code],
                hv=unit(_H + rng.normal(0, 0.05, 3)) * rng.uniform(0.75, 1.3),
                ev=unit(_E + rng.normal(0, 0.05, 3)) * rng.uniform(0.6, 1.6),
                cast=_GLASS_OD + rng.uniform(0, 0.08, 3),  # lamp and white balance differ between sessions
                fat=rng.uniform(0.0, 0.35), cellular=rng.uniform(0.5, 1.5),
                grade=rng.uniform(0, 1),  # malignant only: nuclei larger, darker, more irregular with grade
                normal_glands=rng.uniform(0, 30))  # malignant fields may hold residual benign ducts


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
    """One image being drawn: haematoxylin and eosin densities, the nuclei to add, and the scale. Sizes
    are in micrometres, so that everything grows with the magnification."""

    def __init__(self, rng, shape, um):
        self.rng, self.shape, self.um = rng, shape, um
        self.area_mm2 = shape[0] * shape[1] * (um / 1000) ** 2
        self.yy, self.xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        self.H, self.E = np.full(shape, 0.04, np.float32), np.full(shape, 0.5, np.float32)
        self.soft = np.ones(shape, bool)  # tissue that can hold cells (not fat, not a lumen)
        self.cells = []  # (cy, cx, a, b, angle, irregular, dark) per group of nuclei

    def px(self, microns):
        return microns / self.um

    def noise(self, microns):
        return smooth_noise(self.rng, self.shape, max(0.5, self.px(microns)))

    def rough(self, microns):
        """Noise with detail at a fifth of the scale: a region's outline is never straight."""
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
    """Pink collagen in wavy bundles along a drifting direction, broken by thin white cracks; returns
    the fibre direction (stromal nuclei lie along it)."""
    theta = f.rng.uniform(0, np.pi) + 0.7 * f.noise(150)
    period, wave = f.px(9.0), f.noise(30)
    phase = (f.yy * np.cos(theta) + f.xx * np.sin(theta) + f.px(6) * wave) * np.float32(2 * np.pi / period)
    visible = np.float32(np.clip((period - 2) / 4, 0, 1))  # bundles finer than 2 px blur into texture
    fib = visible * np.cos(phase) * np.clip(wave, 0, 1) + 0.6 * f.noise(3)
    f.E = 0.48 + 0.05 * fib + 0.08 * f.noise(40)
    # Loose stroma: short wisps of white along the fibres.
    wisp = f.noise(12)
    crack = (np.cos(phase / 3.7 + 2 * wisp) > 0.93) & (wisp > 0.7) & (visible > 0)
    f.E[crack] *= 0.3
    return theta


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
    points = np.stack([f.yy + 0.12 * cell * f.noise(40), f.xx + 0.12 * cell * f.noise(40)], -1)[near]
    # Voronoi cells around one jittered centre per square of a grid reaching a cell beyond the image
    h, w = f.shape
    grid = np.stack(np.mgrid[-1 : h // cell + 2, -1 : w // cell + 2], -1).reshape(-1, 2)
    centres = (grid + f.rng.random(grid.shape)) * cell
    dist, nearest = cKDTree(centres).query(points, k=2)
    cy, cx = np.clip(centres[nearest[:, 0]], 0, (h - 1, w - 1)).astype(int).T
    edge = np.minimum(dist[:, 1] - dist[:, 0], 2 * (0.62 * cell - dist[:, 0]))  # round the corners
    wall = np.clip(1.5 - edge / max(0.8, f.px(2.5)), 0, 1)
    fat = np.zeros(f.shape, bool)
    fat[near] = (blob[cy, cx] > np.quantile(blob, 1 - share)) & (wall < 1)
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
    """Carcinoma: crowded, large, irregular, dark nuclei in nests with small lumens (ductal, papillary), in
    mucin pools (mucinous) or single cells (lobular). One field in six shows little tumour: labels are
    per patient, not per field."""
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
    """Nuclei into the haematoxylin, then optics: blur, uneven light, Beer-Lambert colour with the
    patient's stain and lamp, sensor noise."""
    nuc = np.zeros(f.shape, np.float32)
    for y, x, a, b, angle, irregular, dark in f.cells:
        nuc = np.maximum(nuc, _ellipses(f.shape, y, x, a, b, angle, irregular, f.rng, dark=dark))
    H = f.H + 0.85 * nuc * (1 + 0.15 * f.noise(1.0))  # chromatin is granular
    E = f.E * (1 - 0.5 * np.clip(nuc, 0, 1))
    H, E = (ndimage.gaussian_filter(a, 0.45 * f.shape[1] / 230) for a in (H, E))
    light = 0.02 * smooth_noise(f.rng, f.shape, f.shape[1] / 3)
    img = np.empty(f.shape + (3,), np.uint8)
    for c in range(3):
        od = H * look["hv"][c] + E * look["ev"][c] + look["cast"][c] + light
        img[..., c] = np.clip(255 * np.exp(-od) + f.rng.uniform(-3, 3, f.shape), 0, 255)
    return img


def make_demo(root, n_patients: int = 16, images_per_patient: int = 12, size=(230, 151), seed: int = 0,
              progress: bool = False) -> dict:
    """Write a *generated* BreakHis-like set in the official layout (images under ``root / OFFICIAL``)
    and return its summary (the index report's counts). ~31% of patients (and images) benign; each
    patient has one subtype and images at 40X, 100X, 200X and 400X in turn; ``size`` is (width,
    height), by default 1/3 of the real 700x460. The same arguments give byte-identical files
    (``io.generated_set`` says when a folder is reused)."""
    width, height = (int(v) for v in size)
    if n_patients < 2 or images_per_patient < 1 or min(width, height) < 50:
        raise ValueError(f"need n_patients >= 2 (both classes), images_per_patient >= 1 and a size of at "
                         f"least 50x50, not {n_patients}, {images_per_patient}, {size}")
    params = dict(kind="breakhis", n_patients=int(n_patients), images_per_patient=int(images_per_patient),
                  size=[width, height], seed=int(seed), version=VERSION)

    def write(tmp):
        infos = draw_all(_write_patient, tmp, _plan(n_patients, seed), params, progress=progress)
        report = BreakHisReport(root=str(root))
        report.count(pd.DataFrame(infos).assign(width=width, height=height))
        keys = ("patients", "images", "benign", "malignant", "benign_patients", "malignant_patients",
                "by_magnification", "by_subtype")
        return {"root": str(root), **{k: getattr(report, k) for k in keys}, "size": params["size"],
                "seed": params["seed"], "generated": True}, DESCRIPTION

    return generated_set(root, params, "a BreakHis demo set", write)


def _write_patient(job) -> list[dict]:
    """Draw and save patient i's images (40X, 100X, 200X, 400X in turn); return their parse_name fields."""
    tmp, i, rng, code, params = job
    look, (name, label), infos = _look(rng, code), SUBTYPES[code], []
    for j in range(params["images_per_patient"]):
        info = {"label": label, "class": CLASSES[label], "subtype": code, "subtype_name": name,
                "patient": f"{DEMO_YEAR}-{FIRST_SLIDE + i}", "magnification": MAGNIFICATIONS[j % 4],
                "seq": j // 4 + 1}
        path = tmp / official_path(info)
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(_draw(rng, look, info["magnification"], *params["size"]), "RGB")
        image.save(path, compress_level=1)  # noisy pictures barely compress: level 6 is 4x slower
        infos.append(info)
    return infos


def demo_dir(patients: int) -> Path:
    """Where the generated BreakHis-like set of that many patients lives: beside the generated IDC
    sets, ``data/demo/breakhis-<N>p`` (the environment variable IDC_DEMO_ROOT moves them all)."""
    return idc_demo_dir(patients).with_name(f"breakhis-{patients}p")


def resolve_dir(breakhis_dir=None, profile: str = "smoke") -> Path:
    """``breakhis_dir`` as a Path (it must exist); None or "": the generated set of the profile's size,
    made on first use in :func:`demo_dir` (a generated set there made with other parameters is replaced)."""
    return given_or_generated(breakhis_dir, profile, DEMO_SIZES, demo_dir,
                              make_demo, "BreakHis directory")
