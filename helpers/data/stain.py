"""Stain normalisation of H&E patches (Reinhard 2001, Macenko 2009) through ``torchstain``'s numpy
backend, batched: each patch's colour statistics are mapped onto a *target* fitted on a mosaic of
training patches only (validation or test ones would leak their colours into the preprocessing).

Macenko estimates each patch's two stain directions from its stained pixels: a near-white patch has
too few (torchstain fails on it), so it keeps its colours and is counted. The target is a handful of
JSON numbers saved in ``model.json``, so evaluation re-creates the normaliser without the training
data. Both batched transforms reproduce torchstain's per-patch ``normalize`` (tested).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

METHODS = ("reinhard", "macenko")
# torchstain's Macenko defaults: transmitted light, angle percentile, optical-density cut-off
# below which a pixel counts as background.
IO, ALPHA, BETA = 240, 1, 0.15
# A patch with fewer stained pixels than this share (above BETA in every channel) is left as
# it is: a direction estimate from a handful of pixels is noise. Measured on the 9,563 real
# patches of idc-sample: 11 have none, 108 fewer than 10 of 2,500, 604 fewer than 50.
MIN_TISSUE = 0.01
MOSAIC = 256  # training patches (a 16 x 16 mosaic) the target is fitted on
BATCH = 512  # patches normalised at once


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"unknown stain normalisation {method!r}; known: {', '.join(METHODS)}")


def mosaic(images, n: int = MOSAIC, seed: int = 0) -> np.ndarray:
    """One image tiled from ``n`` patches drawn at random (all if fewer), side by side."""
    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError("cannot fit a stain target on no patches")
    rng = np.random.default_rng(seed)
    pick = images[np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))]
    side = int(np.ceil(np.sqrt(len(pick))))
    pad = np.full((side * side - len(pick),) + pick.shape[1:], 255, dtype=pick.dtype)  # white glass
    grid = np.concatenate([pick, pad]).reshape((side, side) + pick.shape[1:])
    h, w, c = pick.shape[1:]
    return grid.transpose(0, 2, 1, 3, 4).reshape(side * h, side * w, c)


def fit_target(images, method: str, n: int = MOSAIC, seed: int = 0) -> dict:
    """The target of ``method`` fitted (by torchstain) on a mosaic of ``n`` of ``images``:
    JSON numbers, e.g. ``{"method": "reinhard", "means": [...], "stds": [...]}``."""
    import torchstain

    _check_method(method)
    kinds = torchstain.normalizers
    norm = (kinds.ReinhardNormalizer if method == "reinhard" else kinds.MacenkoNormalizer)(backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        norm.fit(mosaic(images, n, seed))
    out = {"method": method, "fit_patches": int(min(n, len(images))), "seed": int(seed)}
    if method == "reinhard":
        return {**out, "means": _floats(norm.target_means), "stds": _floats(norm.target_stds)}
    return {**out, "stain_matrix": [_floats(row) for row in norm.HERef], "max_c": _floats(norm.maxCRef),
            "io": IO, "alpha": ALPHA, "beta": BETA}


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values).ravel()]


@dataclass
class Normalized:
    images: np.ndarray  # uint8, the input's shape
    fallbacks: int  # patches kept as they were (too little stain to estimate)
    seconds: float


class Normalizer:
    """Re-created from a target (``fit_target``'s dict): ``normalizer(images)`` -> uint8 images;
    ``normalize`` also counts the patches that kept their colours, and times it."""

    def __init__(self, target: dict):
        _check_method(target.get("method"))
        self.target, self.method = target, target["method"]

    def __call__(self, images) -> np.ndarray:
        return self.normalize(images).images

    def normalize(self, images) -> Normalized:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"stain normalisation wants RGB patches (n, h, w, 3); got {images.shape}")
        start, fallbacks = time.perf_counter(), 0
        out = np.empty_like(images, dtype=np.uint8)
        step = self._reinhard if self.method == "reinhard" else self._macenko
        with np.errstate(all="ignore"):
            for i in range(0, len(images), BATCH):
                chunk = images[i:i + BATCH]
                done, failed = step(chunk)
                done[failed] = chunk[failed]
                out[i:i + BATCH] = done
                fallbacks += int(failed.sum())
        return Normalized(out, fallbacks, round(time.perf_counter() - start, 3))

    # --- Reinhard: torchstain's NumpyReinhardNormalizer.normalize, per patch statistics, batched
    def _reinhard(self, images):
        from torchstain.numpy.utils import lab2rgb, lab_merge, lab_split, rgb2lab

        labs = lab_split(rgb2lab(images.astype(np.float32) / 255))
        means, stds = np.asarray(self.target["means"]), np.asarray(self.target["stds"])
        result, flat = [], np.zeros(len(images), bool)
        for x, mu_t, std_t in zip(labs, means, stds):
            mu = x.mean(axis=(1, 2), keepdims=True)
            std = x.std(axis=(1, 2), keepdims=True)
            flat |= std[:, 0, 0] < 1e-6  # one colour: no spread to rescale
            result.append((x - mu) / np.where(std < 1e-6, 1, std) * std_t + mu_t)
        rgb = lab2rgb(lab_merge(*result))
        return (rgb * 255).astype(np.uint8), flat

    # --- Macenko: torchstain's NumpyMacenkoNormalizer.normalize, batched
    def _macenko(self, images):
        t = self.target
        io, alpha, beta = t.get("io", IO), t.get("alpha", ALPHA), t.get("beta", BETA)
        n, h, w, _ = images.shape
        od = -np.log((images.reshape(n, -1, 3).astype(float) + 1) / io)  # (n, p, 3)
        tissue = ~np.any(od < beta, axis=2)  # (n, p): torchstain's ODhat pixels
        count = tissue.sum(1)
        failed = count < max(2, MIN_TISSUE * h * w)
        # covariance of the tissue pixels' optical density per patch
        m = np.where(tissue[..., None], od, 0)
        mean = m.sum(1) / np.maximum(count, 1)[:, None]
        centred = np.where(tissue[..., None], od - mean[:, None], 0)
        cov = centred.transpose(0, 2, 1) @ centred / np.maximum(count - 1, 1)[:, None, None]
        cov[failed] = np.eye(3)
        _, eigvecs = np.linalg.eigh(cov)
        plane = eigvecs[:, :, 1:3]  # (n, 3, 2): the two largest
        proj = od @ plane
        phi = np.where(tissue, np.arctan2(proj[..., 1], proj[..., 0]), np.nan)
        with warnings.catch_warnings():  # a patch without tissue: an all-NaN row, replaced below
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(phi, [alpha, 100 - alpha], axis=1)
        v_min, v_max = ((plane @ np.stack([np.cos(a), np.sin(a)], 1)[..., None])[..., 0] for a in (lo, hi))
        # haematoxylin first (torchstain's heuristic: the larger red component)
        swap = (v_min[:, 0] > v_max[:, 0])[:, None]
        he = np.stack([np.where(swap, v_min, v_max), np.where(swap, v_max, v_min)], axis=2)  # (n, 3, 2)
        failed |= ~np.isfinite(he).all(axis=(1, 2))
        he[failed] = np.asarray(t["stain_matrix"])  # any valid matrix: these patches are replaced
        conc = np.linalg.pinv(he) @ od.transpose(0, 2, 1)  # (n, 2, p): least squares per patch
        conc = conc / (np.percentile(conc, 99, axis=2) / np.asarray(t["max_c"]))[..., None]
        out = np.minimum(io * np.exp(-np.asarray(t["stain_matrix"]) @ conc), 255)  # (n, 3, p)
        failed |= ~np.isfinite(out).all(axis=(1, 2))
        out = np.where(np.isfinite(out), out, 0)
        return out.transpose(0, 2, 1).reshape(images.shape).astype(np.uint8), failed


def normalize(images, target: dict | None) -> Normalized:
    """``images`` normalised to ``target`` (None: unchanged, no fallback)."""
    if target is None:
        return Normalized(np.asarray(images), 0, 0.0)
    return Normalizer(target).normalize(images)
