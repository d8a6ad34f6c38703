"""A *generated* IDC-like demo set (not patient data) in the Kaggle layout ``<root>/<patient>/<0|1>/<name>.png``.

Per patient, slide-level maps (tissue, tumour, fat, fibre direction) are drawn on a coarse grid; cells
mostly covered by tissue become 50x50 patches, through a Beer-Lambert H&E model with per-patient stain.
Labels are the tumour *region*, as an annotator's outline, so boundary patches are ambiguous; healthy
tissue has look-alikes (lymphocyte clusters, benign lobules, cellular stroma). The BreakHis and thyroid
generators share its stain, noise and workers (``_H``, ``_E``, ``smooth_noise``, ``draw_all``).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from ..io import generated_set, process_map

PATCH = 50
SUB = 10  # pixels per sample of the slide-level maps: 5x5 samples per cell
FIRST_ID = 90001  # real patient ids are below 20000: no collision
VERSION = 1  # part of the stored parameters: bump it when the pictures change
# The Kaggle set "Breast Histopathology Images": what ``make-demo --full`` reproduces in size.
FULL = {"patients": 279, "negatives": 198_738, "positives": 78_786}
DESCRIPTION = ("GENERATED DEMO DATA - NOT PATIENT DATA.\n"
               "Drawn by helpers/data/demo.py (numpy noise, an H&E colour model) to look roughly like\n"
               "the Kaggle IDC patches: no real tissue; no clinical claim rests on it.\n")

# Optical-density directions of haematoxylin and eosin, fitted (Macenko) to real patches.
_H = np.array([0.56, 0.72, 0.40])
_E = np.array([0.12, 0.84, 0.54])
_GLASS_OD = np.float32(0.045)  # the background is not pure white


def _lerp(positions):  # matrix of linear interpolation from samples at these positions to pixels 0..49
    return np.stack([np.interp(np.arange(PATCH), positions, e) for e in np.eye(len(positions))], 1)


# Upsampling stacks of patches by two small matrix products is far faster than ndimage.zoom.
_COARSE = _lerp(SUB * np.arange(PATCH // SUB + 2) - SUB / 2).astype(np.float32)  # 7 map samples around a cell
_HALF = _lerp(2.0 * np.arange(PATCH // 2 + 1)).astype(np.float32)  # 26 half-resolution samples
_DISC = np.argwhere(np.hypot(*np.mgrid[-2:3, -2:3]) <= 1.6) - 2  # pixel offsets of a small lumen


def _slide(rng, n_target, tumour_frac, cut, exact=False):
    """Everything drawn once per patient: layout, labels, slide-level maps, look-alikes, stain, border.
    ``exact``: exactly ``n_target`` patches, ``round(tumour_frac * n_target)`` of them IDC-positive."""
    aspect, k = rng.uniform(0.7, 1.4), PATCH // SUB
    n_cells = n_target / 0.5 + 12
    cols = max(6, round(np.sqrt(n_cells * aspect)))
    rows = max(6, round(n_cells / cols))
    sub = (rows * k, cols * k)
    cell = lambda a: a.reshape(rows, k, cols, k).mean(axis=(1, 3))  # noqa: E731
    first = lambda order, n: np.isin(np.arange(rows * cols), order[:n]).reshape(rows, cols)  # noqa: E731

    # Tissue: an elliptic blob broken up by coarse noise, so the outline is irregular.
    yy, xx = np.mgrid[0 : sub[0], 0 : sub[1]].astype(np.float32)
    cy, cx = sub[0] * rng.uniform(0.4, 0.6), sub[1] * rng.uniform(0.4, 0.6)
    tissue = -1.6 * (((yy - cy) / (0.5 * sub[0])) ** 2 + ((xx - cx) / (0.5 * sub[1])) ** 2)
    tissue += 0.55 * _field(rng, sub, 2.0 * k)
    thr = np.quantile(cell(tissue), 1 - min(0.95, n_target / (rows * cols)))
    is_patch = cell(np.float32(tissue > thr)) > 0.5
    if exact:  # the n_target cells most covered by tissue (ties: the deeper inside)
        is_patch = first(np.lexsort((-cell(tissue).ravel(), -cell(np.float32(tissue > thr)).ravel())), n_target)

    # Tumour: contiguous blobs grown from 1-3 seeds; the label is the region, decided on
    # the cell's mean score, while the pixels' own outline wanders through the cells.
    seeds = np.argwhere(tissue > thr)
    seeds = seeds[rng.choice(len(seeds), size=rng.integers(1, 4))]
    d = np.min(np.hypot(yy[..., None] - seeds[:, 0], xx[..., None] - seeds[:, 1]), axis=-1)
    score = -d / k + 1.2 * _field(rng, sub, 1.5 * k)
    n_pos = round(tumour_frac * is_patch.sum())
    t_thr = np.sort(cell(score)[is_patch])[::-1][n_pos - 1] if n_pos > 0 else np.inf
    m = dict(tissue=tissue, thr=thr, score=score, t_thr=t_thr, is_patch=is_patch)
    m["label"] = is_patch & (cell(score) >= t_thr)
    if exact:  # by rank, so that ties cannot add a positive
        m["label"] = first(np.flatnonzero(is_patch)[np.argsort(-cell(score)[is_patch], kind="stable")], n_pos)

    m["theta"] = rng.uniform(0, np.pi) + 1.2 * _field(rng, is_patch.shape, 3.0)  # collagen direction drifts
    m["bend"], m["eosin"], m["cellular"] = 3.0 * _field(rng, sub, 1.0), _field(rng, sub, 3.0), _field(rng, sub, 3.0)
    m["fat"] = _field(rng, sub, 4.0) - rng.uniform(0.2, 1.2) - 1.2 * (score > t_thr)  # fat is rarer in tumour
    # Fat cells are 10-18 px across; low grade tumours look closer to normal tissue.
    m.update(period=rng.uniform(3, 5), a0=rng.uniform(0, np.pi), lam=2 * np.pi / (rng.uniform(10, 18) * 0.866),
             nest_sigma=rng.uniform(3.0, 4.5), nest_level=rng.uniform(-0.6, 0.5), grade=rng.uniform(0, 1))

    # Look-alikes in healthy tissue: lymphocyte clusters (dense, small, dark nuclei)
    # and benign lobules (small rings of nuclei around lumens).
    healthy = np.kron(is_patch, np.ones((k, k), bool)) & (tissue > thr) & (score < t_thr - 0.3)
    where = np.argwhere(healthy) * SUB + SUB / 2
    n_lym, n_lob = rng.poisson(is_patch.sum() / 15, 2) * (len(where) > 0)
    centres = where[rng.integers(0, max(1, len(where)), n_lym + n_lob)]
    centres = centres + rng.uniform(-5, 5, centres.shape)
    pts, holes = [np.zeros((0, 2))], [np.zeros((0, 2))]
    for c in centres[:n_lym]:
        pts.append(c + rng.normal(0, rng.uniform(5, 14), (rng.integers(60, 300), 2)))
    for c in centres[n_lym:]:
        for a in c + rng.normal(0, 12, (rng.integers(3, 9), 2)):
            r = rng.uniform(2.0, 4.0)
            t = rng.uniform(0, 2 * np.pi) + np.arange(0, 2 * np.pi, 1.6 / r)
            pts.append(a + r * np.stack([np.sin(t), np.cos(t)], 1) + rng.normal(0, 0.4, (len(t), 2)))
            holes.append(a + _DISC)
    m["pts"], m["holes"] = np.concatenate(pts), np.concatenate(holes)

    # Stain differs between labs, batches and scanners; and a slide ends where it ends.
    unit = lambda v: (v / np.linalg.norm(v)).astype(np.float32)  # noqa: E731
    m["hv"] = unit(_H + rng.normal(0, 0.04, 3)) * np.float32(rng.uniform(0.75, 1.3))
    m["ev"] = unit(_E + rng.normal(0, 0.04, 3)) * np.float32(rng.uniform(0.7, 1.6))
    rr, cc = np.nonzero(is_patch)
    m["h"], m["w"] = np.full(len(rr), PATCH), np.full(len(rr), PATCH)
    if cut and len(rr):  # in the real set most cut patches are at the bottom
        side, at = (m["w"], cc) if rng.random() < 0.25 else (m["h"], rr)
        side[at == at.max()] = rng.integers(5, 46)
    m["score_px"] = score + 0.5 * _field(rng, sub, 1.5)  # the tumour's own outline strays from the annotation
    return m


def _impulses(pts, lookup):
    """Points in slide pixels -> impulses on the stack of patches in lookup (cell -> index, -1 if absent)."""
    pts = np.round(pts).astype(int)
    pts = pts[(pts >= 0).all(1) & (pts < np.array(lookup.shape) * PATCH).all(1)]
    p = lookup[pts[:, 0] // PATCH, pts[:, 1] // PATCH]
    img = np.zeros((lookup.max() + 1, PATCH, PATCH), np.float32)
    np.add.at(img, (p[p >= 0], pts[p >= 0, 0] % PATCH, pts[p >= 0, 1] % PATCH), 1.0)
    return img


def _render(rng, m, rr, cc):
    """The patches at cells (rr, cc) of one slide as uint8 (n, 50, 50, 3): coarse structure comes
    from the slide-level maps, continuous across patches; fine texture is drawn per patch."""
    n, k, f32 = len(rr), PATCH // SUB, lambda a: a.astype(np.float32)
    win = np.arange(k + 2)

    def coarse(a):  # slide-level map -> (n, 50, 50); map sample i sits at pixel 10 i + 5
        a = np.pad(a, 1, mode="edge")[(rr * k)[:, None, None] + win[:, None], (cc * k)[:, None, None] + win]
        return _COARSE @ a.astype(np.float32) @ _COARSE.T

    def fine(sigma):  # from sigma 2 px on, drawn at half resolution for speed
        if sigma < 2:
            return _field(rng, (n, PATCH, PATCH), sigma)
        return _HALF @ _field(rng, (n, PATCH // 2 + 1, PATCH // 2 + 1), sigma / 2) @ _HALF.T

    y, x = np.arange(PATCH, dtype=np.float32)[:, None], np.arange(PATCH, dtype=np.float32)
    edge, warp = fine(3.0), fine(4.0)
    tis = (coarse(m["tissue"]) + 0.12 * edge) > m["thr"]
    tum = ((coarse(m["score_px"]) + 0.35 * edge) > m["t_thr"]) & tis

    # Stroma: collagen as wavy parallel bands, with thin white cracks between bundles.
    theta = m["theta"][rr, cc][:, None, None]
    phase = y * np.cos(theta) + x * np.sin(theta) + coarse(m["bend"]) + 1.5 * warp
    fib = f32(0.5 + 0.5 * np.cos(phase * np.float32(2 * np.pi / m["period"])))
    E = (0.45 + 0.12 * coarse(m["eosin"])) * (0.7 + 0.45 * fib)
    E[(fib > 0.9) & (edge > 1.6)] *= 0.15
    H = 0.05 + 0.02 * fib

    # Fat: white vacuoles in a warped honeycomb (three plane waves), with thin soft walls.
    fat = (coarse(m["fat"]) > 0) & tis
    uy = ((rr * PATCH)[:, None, None] + y + 2.5 * edge)[fat]
    ux = ((cc * PATCH)[:, None, None] + x + 2.5 * warp)[fat]
    angles = m["a0"] + np.arange(3) * 2 * np.pi / 3
    g = sum(np.cos(m["lam"] * (uy * np.sin(a) + ux * np.cos(a))) for a in angles)
    wall = np.clip(-2.5 * (g + 0.75), 0, 1)
    E[fat], H[fat] = 0.4 * wall, 0.06 * wall
    soft = tis & ~fat
    healthy = soft & ~tum

    # Tumour: crowded nests of purple cells with small lumens, in desmoplastic stroma.
    nests = tum & ~fat & (fine(m["nest_sigma"]) > m["nest_level"])
    lumen = nests & (fine(2.0) > 1.6)
    nests &= ~lumen
    E[nests] = 0.3 + 0.1 * fib[nests]
    E[lumen] = 0.04
    H += 0.1 * f32(tum & ~fat) + 0.2 * f32(nests)

    # Nuclei, blurred impulses: tumour cells crowd the nests (denser, larger and darker
    # with grade); fibroblasts are sparse but crowd in patches of cellular stroma.
    grade = m["grade"]
    cellular = f32(coarse(m["cellular"]) > 0.8) * healthy
    H += 0.06 * cellular
    dens = f32(nests) * (0.05 + 0.05 * grade) + f32(tum & soft) * 0.008 + f32(healthy) * 0.004 + 0.02 * cellular
    nuclei = f32(rng.random(dens.shape, dtype=np.float32) < dens)
    lookup = np.full(m["is_patch"].shape, -1)
    lookup[rr, cc] = np.arange(n)
    nuclei += 2 * _impulses(m["pts"], lookup) * soft
    sigma = 0.55 + 0.25 * grade
    nuclei = ndimage.gaussian_filter(nuclei, (0, sigma, sigma)) * np.float32(2 * np.pi * sigma**2)
    dark = np.where(tum, np.float32(0.9 + 0.5 * grade), np.float32(0.8))
    H += dark * (1 - np.exp(-1.6 * nuclei))  # stain saturates where nuclei crowd
    hole = _impulses(m["holes"], lookup) > 0
    E[hole], H[hole] = 0.1, 0.05

    grain = (1 + 0.18 * fine(0.6)) * tis  # tissue is granular at this scale
    H, E = H * grain, E * grain
    noise = 8 * rng.random(H.shape, dtype=np.float32) - 4  # sensor noise
    img = np.empty(H.shape + (3,), np.uint8)
    for c in range(3):  # channel by channel: several times faster than on (n, 50, 50, 3) at once
        od = H * -m["hv"][c] - E * m["ev"][c] - _GLASS_OD
        img[..., c] = np.clip(255 * np.exp(od) + noise, 0, 255)
    return img


def _patient(rng, n_target, tumour_frac, cut, chunk=500, exact=False):
    """Yield (row, col, label, uint8 RGB patch) of one patient; chunks bound the memory of big slides."""
    m = _slide(rng, n_target, tumour_frac, cut, exact)
    rr, cc = np.nonzero(m["is_patch"])
    for start in range(0, len(rr), chunk):
        s = slice(start, start + chunk)
        for r, c, h, w, patch in zip(rr[s], cc[s], m["h"][s], m["w"][s], _render(rng, m, rr[s], cc[s])):
            yield r, c, int(m["label"][r, c]), patch[:h, :w]


def _fractions(rng, n):
    """Tumour share per patient, stratified by quantile so that small sets vary too: many have little
    tumour, a few are mostly tumour (about 28% positive overall, as in the real set)."""
    q = (rng.permutation(n) + rng.random(n)) / n
    return np.interp(q, [0, 0.15, 0.5, 0.8, 0.88, 1.0], [0.0, 0.05, 0.2, 0.45, 0.85, 0.95])


def _cut_slides(rng, n):
    """Which patients' slides end in cut (narrower or shorter) border patches: 30%."""
    return np.isin(np.arange(n), rng.permutation(n)[: max(1, round(0.3 * n))])


def _plan(n_patients, seed, patches_scale):
    """Set-level draws: patches, tumour fraction and cut slides per patient."""
    rng = np.random.default_rng([seed, 999_999])
    frac = _fractions(rng, n_patients)
    sizes = np.clip(rng.lognormal(np.log(100), 0.9, n_patients), 40, 800) * patches_scale
    return np.maximum(1, sizes.round()).astype(int), frac, _cut_slides(rng, n_patients)


def _apportion(total: int, weights, caps) -> np.ndarray:
    """Integers near ``total * weights / sum(weights)``, each at most its cap, adding up to ``total``
    exactly (largest remainders first)."""
    weights, caps = np.asarray(weights, float), np.asarray(caps, int)
    if caps.sum() < total:
        raise ValueError(f"cannot place {total} items under caps adding up to {caps.sum()}")
    share = total * weights / weights.sum()
    out = np.minimum(np.floor(share).astype(int), caps)
    while out.sum() < total:
        out[np.argmax(np.where(out < caps, share - out, -np.inf))] += 1
    return out


def _plan_exact(n_patients, negatives, positives, seed):
    """``_plan`` with counts adding up to exactly ``negatives`` and ``positives``; patches per patient
    spread as in the real set (a few dozen to a few thousand, the median about 0.8 of the mean)."""
    rng, total = np.random.default_rng([seed, 888_888]), negatives + positives
    if n_patients < 1 or negatives < 0 or positives < 0 or total < n_patients:
        raise ValueError(f"need at least one patch per patient: {n_patients} patients, "
                         f"{negatives} negatives, {positives} positives")
    sizes = np.maximum(_apportion(total, np.clip(rng.lognormal(0, 0.7, n_patients), 0.06, 4.0),
                                  np.full(n_patients, total)), 1)
    sizes[np.argmax(sizes)] -= sizes.sum() - total  # the floor of one patch may have added a few
    frac = _fractions(rng, n_patients)
    pos = _apportion(positives, sizes * np.where(frac < 0.02, 0, frac) + 1e-9, sizes)  # ~6% without IDC
    return sizes, pos / sizes, _cut_slides(rng, n_patients)


@functools.lru_cache(maxsize=256)
def _spread(n, sigma):
    """(n, m) Gaussian weights from m samples spaced sigma apart (reaching 3 sigma beyond both ends) to
    n pixels: white noise on the samples becomes noise smoothed at sigma."""
    samples = np.arange(-3 * sigma, n + 3 * sigma, sigma)
    return np.exp(-0.5 * ((np.arange(n)[:, None] - samples[None]) / sigma) ** 2).astype(np.float32)


def smooth_noise(rng, shape, sigma, fast=True) -> np.ndarray:
    """Smooth noise (zero mean, unit std) over the last two axes with features of ~``sigma`` px (one, or
    one per axis). With ``fast``, from 4 px on, as two small products with coarse white noise (a Gaussian
    filter costs in proportion to sigma); by einsum, as BLAS would start threads that only spin on small
    matrices. Else filtered uniform draws (cheaper than normal ones)."""
    sy, sx = np.broadcast_to(sigma, 2)
    if min(sy, sx) < 4 or not fast:
        a = ndimage.gaussian_filter(rng.random(shape, dtype=np.float32), (0,) * (len(shape) - 2) + (sy, sx),
                                    mode="wrap")
    else:
        wy, wx = _spread(shape[0], round(float(sy), 1)), _spread(shape[1], round(float(sx), 1))
        a = rng.standard_normal((wy.shape[1], wx.shape[1]), dtype=np.float32)
        a = np.einsum("ik,jk->ij", np.einsum("ij,jk->ik", wy, a), wx)
    return (a - a.mean()) / (a.std() + 1e-6)


_field = functools.partial(smooth_noise, fast=False)  # the IDC patches' noise, whatever sigma


def draw_all(draw, tmp: Path, items, params: dict, workers: int | None = None, progress: bool = False) -> list:
    """``draw((tmp, i, rng, item, params))`` for every item (a patient, a nodule), results concatenated in
    order, in processes for more than a few items. ``rng`` is seeded by ``params["seed"]`` and ``i``: one
    item's pictures do not depend on another's."""
    jobs = [(tmp, i, np.random.default_rng([params["seed"], i]), item, params) for i, item in enumerate(items)]
    n = (workers or os.cpu_count() or 1) if len(jobs) > 8 else 1
    done = tqdm(process_map(draw, jobs, n, chunksize=4), total=len(jobs), desc="demo", disable=not progress)
    return [d for part in done for d in part]


def _write_patient(job) -> list[tuple[int, bool]]:
    """Draw and write patient i's patches under ``tmp``; (label, is small) per patch."""
    tmp, i, rng, (size, frac, cut), params = job
    pid, done = str(FIRST_ID + i), []
    for r, c, lab, patch in _patient(rng, size, frac, cut, exact="counts" in params):
        (tmp / pid / str(lab)).mkdir(parents=True, exist_ok=True)  # no empty label folders
        name = f"{pid}/{lab}/{pid}_idx5_x{1 + PATCH * c}_y{1 + PATCH * r}_class{lab}.png"
        Image.fromarray(np.ascontiguousarray(patch), "RGB").save(tmp / name)
        done.append((lab, patch.shape[:2] != (PATCH, PATCH)))
    return done


def make_demo(root, n_patients=24, seed=0, patches_scale=1.0, progress=False, counts=None,
              workers: int | None = 1) -> dict:
    """Write a *generated* IDC-like demo set under ``root`` (``io.generated_set``) and return its summary.
    The same arguments give byte-identical files, whatever ``workers`` (processes; None: one per core).
    ``patches_scale`` multiplies every patient's patch count; ``counts=(negatives, positives)`` fixes the
    set's exact class counts instead (``full_demo``)."""
    root = Path(root)
    if n_patients < 1 or patches_scale <= 0:
        raise ValueError(f"n_patients must be >= 1 and patches_scale > 0, not {n_patients}, {patches_scale}")
    params = dict(n_patients=int(n_patients), seed=int(seed), patches_scale=float(patches_scale),
                  version=VERSION)
    if counts is None:
        drawn = _plan(n_patients, seed, patches_scale)
    else:
        params["counts"] = [int(c) for c in counts]
        drawn = _plan_exact(n_patients, *params["counts"], seed)
    plan = [(int(n), float(frac), bool(cut)) for n, frac, cut in zip(*drawn)]

    def write(tmp):
        done = draw_all(_write_patient, tmp, plan, params, workers, progress)
        pos, small = np.sum(done, axis=0, dtype=int).tolist() if done else (0, 0)
        return {"root": str(root), "patients": int(n_patients), "patches": len(done), "positives": pos,
                "negatives": len(done) - pos, "small_patches": small, "seed": int(seed), "generated": True}, DESCRIPTION

    return generated_set(root, params, "a demo set", write)


def full_demo(root, seed=0, workers=None, progress=True) -> dict:
    """The generated set at the real set's size (``FULL``), in minutes on 2 cores; the benchmark's data."""
    return make_demo(root, n_patients=FULL["patients"], seed=seed, progress=progress,
                     counts=(FULL["negatives"], FULL["positives"]), workers=workers)
