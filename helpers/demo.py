"""A generated, IDC-like demo data set in the layout of the Kaggle IDC patches.

Everything this module writes is *generated* by a few lines of numpy: it is not
patient data, it shows no real tissue, and no clinical claim rests on it. It
exists so that every notebook and test can run offline in seconds, on a set that
has the real set's shape: ``<root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png``,
whole patients of very different sizes, contiguous tumour regions, a few small
border patches, and patient-level stain variation.

Each patient is rendered as one slide image (H&E colours through a Beer-Lambert
stain model), cut into 50x50 patches on a grid; only cells mostly covered by
tissue become patches. Labels come from a coarse tumour *region*, as an
annotator's outline would, so patches on its boundary are genuinely ambiguous.
Healthy tissue carries confounders (lymphocyte clusters, benign ducts) so that
"dark and dense" alone does not mean tumour.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

PATCH = 50
SUB = 10  # pixels per sample of the coarse (layout) grids: 5x5 samples per cell
FIRST_ID = 90001  # real patient ids are below 20000: no collision
VERSION = 1  # bump when the pictures change, so stale sets are not reused

# Optical-density directions of haematoxylin and eosin, fitted (Macenko) to real patches.
_H = np.array([0.56, 0.72, 0.40])
_E = np.array([0.12, 0.84, 0.54])
_BACKGROUND_OD = 0.045  # glass is not pure white


def _unit(v):
    return v / np.linalg.norm(v)


def _lerp(positions):
    """Matrix of linear interpolation from samples at these pixel positions to pixels 0..49."""
    eye = np.eye(len(positions))
    return np.stack([np.interp(np.arange(PATCH), positions, e) for e in eye], 1).astype(np.float32)


# Upsampling as two small matrix products is much faster than ndimage.zoom on stacks of patches.
_COARSE = _lerp(SUB * np.arange(PATCH // SUB + 2) - SUB / 2)  # 7 layout samples around a cell
_HALF = _lerp(2.0 * np.arange(PATCH // 2 + 1))  # 26 half-resolution samples
_DISC = np.argwhere(np.hypot(*np.mgrid[-2:3, -2:3]) <= 1.6) - 2  # pixel offsets of a small lumen


def _resize(a, m):
    return m @ a @ m.T


def _field(rng, shape, sigma):
    """Smooth noise with zero mean and unit std (sigma in samples) over the last two axes.

    Uniform draws are several times cheaper than normal ones and, once smoothed, just as gaussian.
    """
    a = rng.random(shape, dtype=np.float32)
    a = ndimage.gaussian_filter(a, (0,) * (len(shape) - 2) + (sigma, sigma), mode="wrap")
    return (a - a.mean()) / (a.std() + 1e-6)


def _stain(impulses, sigma):
    """Nuclei from impulses: a blur, then saturation where they crowd, as stain does (0..1)."""
    img = ndimage.gaussian_filter(impulses, (0, sigma, sigma)) * np.float32(2 * np.pi * sigma**2)
    return 1 - np.exp(-1.6 * img)


def _layout(rng, n_target, tumour_frac):
    """Coarse maps on a 10 px grid: tissue score and threshold, tumour score and threshold, patch cells, labels."""
    aspect = rng.uniform(0.7, 1.4)
    n_cells = n_target / 0.5 + 12
    cols = max(6, int(round(np.sqrt(n_cells * aspect))))
    rows = max(6, int(round(n_cells / cols)))
    k = PATCH // SUB
    sub = (rows * k, cols * k)
    cell = lambda a: a.reshape(rows, k, cols, k).mean(axis=(1, 3))

    # Tissue: an elliptic blob broken up by coarse noise, so the outline is irregular.
    yy, xx = np.mgrid[0 : sub[0], 0 : sub[1]].astype(np.float32)
    cy, cx = sub[0] * rng.uniform(0.4, 0.6), sub[1] * rng.uniform(0.4, 0.6)
    r2 = ((yy - cy) / (0.5 * sub[0])) ** 2 + ((xx - cx) / (0.5 * sub[1])) ** 2
    tissue = -1.6 * r2 + 0.55 * _field(rng, sub, 2.0 * k)
    thr = np.quantile(cell(tissue), 1 - min(0.95, n_target / (rows * cols)))
    is_patch = cell((tissue > thr).astype(np.float32)) > 0.5

    # Tumour: contiguous blobs grown from a few seeds inside the tissue; the label
    # is the region (an annotator's outline), decided on the cell's mean score.
    seeds = np.argwhere(tissue > thr)
    seeds = seeds[rng.choice(len(seeds), size=rng.integers(1, 4))]
    d = np.min(np.hypot(yy[..., None] - seeds[:, 0], xx[..., None] - seeds[:, 1]), axis=-1)
    score = -d / k + 1.2 * _field(rng, sub, 1.5 * k)
    score_cell = cell(score)
    n_pos = int(round(tumour_frac * is_patch.sum()))
    t_thr = np.sort(score_cell[is_patch])[::-1][n_pos - 1] if n_pos > 0 else np.inf
    return tissue, thr, score, t_thr, is_patch, is_patch & (score_cell >= t_thr)


def _patient(rng, n_target, tumour_frac, cut):
    """Render one patient's patches; return a list of (row, col, label, uint8 RGB array).

    Only the patch cells are rendered, as an (n, 50, 50) stack: coarse structure
    (tissue and tumour outlines, fat, fibre direction) comes from slide-level maps
    and is continuous across patches; fine texture is drawn per patch.
    """
    tissue, thr, score, t_thr, is_patch, label = _layout(rng, n_target, tumour_frac)
    rr, cc = np.nonzero(is_patch)
    n, k, sub = len(rr), PATCH // SUB, tissue.shape
    win = np.arange(k + 2)

    def coarse(a):  # slide-level map on the 10 px grid -> (n, 50, 50); sample i sits at pixel 10 i + 5
        a = np.pad(a, 1, mode="edge")[(rr * k)[:, None, None] + win[:, None], (cc * k)[:, None, None] + win]
        return _resize(a.astype(np.float32), _COARSE)

    def fine(sigma):  # per-patch noise; from sigma 2 px on, drawn at half resolution for speed
        if sigma < 2:
            return _field(rng, (n, PATCH, PATCH), sigma)
        return _resize(_field(rng, (n, PATCH // 2 + 1, PATCH // 2 + 1), sigma / 2), _HALF)

    f32 = lambda a: a.astype(np.float32)
    y = np.arange(PATCH, dtype=np.float32)[:, None]
    x = np.arange(PATCH, dtype=np.float32)
    edge, warp = fine(3.0), fine(4.0)
    tis = (coarse(tissue) + 0.12 * edge) > thr  # outlines run through cells, not along them
    tum = ((coarse(score) + 0.35 * edge) > t_thr) & tis

    # Stroma: collagen as wavy parallel bands; their direction drifts over the slide.
    theta = (rng.uniform(0, np.pi) + 1.2 * _field(rng, is_patch.shape, 3.0))[rr, cc][:, None, None]
    phase = y * np.cos(theta) + x * np.sin(theta) + coarse(3.0 * _field(rng, sub, 1.0)) + 1.5 * warp
    fib = f32(0.5 + 0.5 * np.cos(phase * np.float32(2 * np.pi / rng.uniform(3.0, 5.0))))
    E = (0.45 + 0.12 * coarse(_field(rng, sub, 3.0))) * (0.8 + 0.3 * fib)
    E[(fib > 0.9) & (fine(5.0) > 1.6)] *= 0.15  # thin white cracks between bundles
    H = 0.05 + 0.02 * fib

    # Fat: white vacuoles (a warped honeycomb) with thin walls, rarer in tumour.
    fat = (coarse(_field(rng, sub, 4.0)) - 1.2 * f32(tum)) > rng.uniform(0.2, 1.2)
    lam = np.float32(2 * np.pi / (rng.uniform(10, 18) * np.sqrt(3) / 2))
    uy = ((rr * PATCH)[:, None, None] + y + 2.5 * edge)[fat]
    ux = ((cc * PATCH)[:, None, None] + x + 2.5 * warp)[fat]
    g = sum(np.cos(lam * (uy * np.sin(a) + ux * np.cos(a))) for a in rng.uniform(0, np.pi) + np.arange(3) * 2 * np.pi / 3)
    wall = np.clip(-2.5 * (g + 0.75), 0, 1)  # soft, thin membranes
    E[fat], H[fat] = 0.4 * wall, 0.06 * wall
    soft = tis & ~fat
    healthy = soft & ~tum

    # Tumour: crowded nests of purple cells with small lumens, in desmoplastic stroma.
    nests = tum & ~fat & (fine(rng.uniform(3.0, 4.5)) > rng.uniform(-0.6, 0.2))
    lumen = nests & (fine(2.0) > 1.6)
    nests &= ~lumen
    E[nests] = 0.3 + 0.1 * fib[nests]
    E[lumen] = 0.04
    H += 0.1 * f32(tum & ~fat) + 0.2 * f32(nests)

    # Nuclei, all drawn at once: tumour cells crowd the nests (denser, larger and
    # darker with grade); fibroblasts are sparse, but crowd in patches of cellular
    # stroma, one of the look-alikes of tumour.
    grade = rng.uniform(0, 1)  # low grade tumours look closer to normal tissue
    cellular = f32(coarse(_field(rng, sub, 3.0)) > 1.0) * healthy
    H += 0.06 * cellular
    dens = f32(nests) * (0.05 + 0.05 * grade) + f32(tum & soft) * 0.008 + f32(healthy) * 0.004 + 0.02 * cellular
    nuclei = f32(rng.random(dens.shape, dtype=np.float32) < dens)
    dark = np.where(tum, np.float32(0.9 + 0.5 * grade), np.float32(0.8))

    # More look-alikes in healthy tissue: lymphocyte clusters (dense, small, dark)
    # and benign lobules (small rings of nuclei around lumens).
    where = np.flatnonzero(healthy)
    n_lym, n_lob = rng.poisson(n / 30), rng.poisson(n / 30)
    holes = np.zeros((0, 2))
    if len(where) and n_lym + n_lob:
        p, py, px = np.unravel_index(rng.choice(where, n_lym + n_lob), healthy.shape)
        centres = np.stack([rr[p] * PATCH + py, cc[p] * PATCH + px], 1).astype(np.float32)
        pts = [c + rng.normal(0, rng.uniform(5, 14), (rng.integers(60, 300), 2)) for c in centres[:n_lym]]
        holes = [holes]
        for c in centres[n_lym:]:
            for a in c + rng.normal(0, 12, (rng.integers(3, 9), 2)):
                r = rng.uniform(2.0, 4.0)
                t = rng.uniform(0, 2 * np.pi) + np.arange(0, 2 * np.pi, 1.6 / r)
                pts.append(a + r * np.stack([np.sin(t), np.cos(t)], 1) + rng.normal(0, 0.4, (len(t), 2)))
                holes.append(a + _DISC)
        nuclei += 2 * _impulses(np.concatenate(pts + [np.zeros((0, 2))]), is_patch, n) * soft
        holes = np.concatenate(holes)
    H += dark * _stain(nuclei, 0.55 + 0.25 * grade)
    hole = _impulses(holes, is_patch, n) > 0
    E[hole], H[hole] = 0.1, 0.05

    # Per-patient stain: different labs, batches and scanners.
    hv = f32(_unit(_H + rng.normal(0, 0.05, 3)))
    ev = f32(_unit(_E + rng.normal(0, 0.07, 3)))
    grain = 1 + 0.25 * fine(0.6)  # tissue is granular at this scale
    H = H * grain * np.float32(rng.uniform(0.75, 1.3)) * tis
    E = E * grain * np.float32(rng.uniform(0.7, 1.6)) * tis
    od = H[..., None] * hv + E[..., None] * ev + np.float32(_BACKGROUND_OD)
    img = 255 * np.exp(-od) + 10 * (rng.random(od.shape, dtype=np.float32) - 0.5)  # sensor noise
    img = np.clip(img, 0, 255).astype(np.uint8)

    # A slide ends where it ends: its last row or column of cells is cut short.
    h = np.full(n, PATCH)
    w = np.full(n, PATCH)
    if cut:
        if rng.random() < 0.5:
            w[cc == cc.max()] = rng.integers(5, 46)
        else:
            h[rr == rr.max()] = rng.integers(5, 46)
    return [(r, c, int(label[r, c]), img[i, : h[i], : w[i]]) for i, (r, c) in enumerate(zip(rr, cc))]


def _impulses(pts, is_patch, n):
    """Points in slide pixels -> impulse stack (n, 50, 50) over the patch cells; points off patches are dropped."""
    lookup = np.full(is_patch.shape, -1)
    lookup[is_patch] = np.arange(n)
    pts = np.round(pts).astype(int)
    pts = pts[(pts >= 0).all(1) & (pts[:, 0] < is_patch.shape[0] * PATCH) & (pts[:, 1] < is_patch.shape[1] * PATCH)]
    p = lookup[pts[:, 0] // PATCH, pts[:, 1] // PATCH]
    img = np.zeros((n, PATCH, PATCH), np.float32)
    np.add.at(img, (p[p >= 0], pts[p >= 0, 0] % PATCH, pts[p >= 0, 1] % PATCH), 1.0)
    return img


def _plan(n_patients, seed, patches_scale):
    """Set-level draws (sizes, tumour fractions, cut slides), stratified so small sets are still varied."""
    rng = np.random.default_rng([seed, 999_999])
    q = (rng.permutation(n_patients) + rng.random(n_patients)) / n_patients
    # A few patients are mostly tumour, many have little: about 28% positive overall.
    frac = np.interp(q, [0, 0.15, 0.5, 0.8, 0.88, 1.0], [0.0, 0.04, 0.18, 0.4, 0.85, 0.95])
    sizes = np.clip(rng.lognormal(np.log(110), 0.75, n_patients), 40, 800) * patches_scale
    cut = np.zeros(n_patients, bool)
    cut[rng.permutation(n_patients)[: max(1, round(0.3 * n_patients))]] = True
    return sizes.round().astype(int), frac, cut


def _params(n_patients, seed, patches_scale):
    return {"n_patients": int(n_patients), "seed": int(seed), "patches_scale": float(patches_scale), "version": VERSION}


def make_demo(root, n_patients=24, seed=0, patches_scale=1.0, progress=False) -> dict:
    """Write a *generated* IDC-like demo set under ``root`` and return its summary.

    The set is generated (not patient data; no clinical claim rests on it) and
    deterministic: the same arguments give byte-identical files. It is written to
    a temporary sibling folder and renamed to ``root`` at the end, so an
    interrupted run leaves no half set. If ``root`` already holds a set made with
    the same arguments, its summary is returned without rewriting; any other
    non-empty ``root`` raises ``ValueError``.

    Returns ``{"root", "patients", "patches", "positives", "negatives",
    "small_patches", "seed", "generated": True}``.
    """
    root = Path(root)
    params = _params(n_patients, seed, patches_scale)
    if root.exists() and any(root.iterdir()):
        meta = root / "generated.json"
        if meta.is_file() and (root / "GENERATED.txt").is_file():
            stored = json.loads(meta.read_text())
            if stored.get("params") == params:
                return {**stored["summary"], "root": str(root)}
        raise ValueError(
            f"{root} already exists and is not empty (and is not a demo set made with {params}); "
            "choose another folder or remove it"
        )
    if n_patients < 1 or patches_scale <= 0:
        raise ValueError(f"n_patients must be >= 1 and patches_scale > 0, got {n_patients}, {patches_scale}")

    sizes, fracs, cuts = _plan(n_patients, seed, patches_scale)
    ids = range(n_patients)
    if progress:
        from tqdm.auto import tqdm

        ids = tqdm(ids, desc="demo patients", unit="patient")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        counts = {"patches": 0, "positives": 0, "small_patches": 0}
        for i in ids:
            pid = str(FIRST_ID + i)
            for r, c, lab, patch in _patient(np.random.default_rng([seed, i]), sizes[i], fracs[i], cuts[i]):
                folder = tmp / pid / str(lab)
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{pid}_idx5_x{1 + PATCH * c}_y{1 + PATCH * r}_class{lab}.png"
                Image.fromarray(np.ascontiguousarray(patch), "RGB").save(folder / name)
                counts["patches"] += 1
                counts["positives"] += lab
                counts["small_patches"] += patch.shape[:2] != (PATCH, PATCH)
        summary = {
            "root": str(root),
            "patients": n_patients,
            "patches": counts["patches"],
            "positives": counts["positives"],
            "negatives": counts["patches"] - counts["positives"],
            "small_patches": counts["small_patches"],
            "seed": int(seed),
            "generated": True,
        }
        (tmp / "generated.json").write_text(json.dumps({"params": params, "summary": summary}, indent=2) + "\n")
        (tmp / "GENERATED.txt").write_text(
            "GENERATED DEMO DATA - NOT PATIENT DATA.\n"
            "These images were drawn by helpers/demo.py (numpy noise and an H&E colour model) to look\n"
            "roughly like the Kaggle IDC patches. They show no real tissue; no clinical claim rests on them.\n"
            f"Parameters: {json.dumps(params)}\n"
            f"Summary: {json.dumps({k: v for k, v in summary.items() if k != 'root'})}\n"
        )
        if root.exists():
            root.rmdir()  # empty (checked above): os.replace cannot overwrite a directory everywhere
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary
