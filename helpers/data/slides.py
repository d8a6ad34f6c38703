"""Rebuild a patient's tissue from the patch coordinates in the file names (the x, y of each patch's
top-left corner in the slide), and with predictions, a probability heatmap on the same grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .index import PATCH
from .pipeline import load_patch


def grid_positions(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Row and column of each patch on the patient's grid, and the grid's (rows, cols)."""
    if df["patient"].nunique() != 1:
        raise ValueError(f"a mosaic is one patient's; got {df['patient'].nunique()} patients")
    cols = ((df["x"] - df["x"].min()) // PATCH).to_numpy()
    rows = ((df["y"] - df["y"].min()) // PATCH).to_numpy()
    return rows, cols, (int(rows.max()) + 1, int(cols.max()) + 1)


def value_map(df: pd.DataFrame, values) -> np.ndarray:
    """One value per grid cell (NaN where the archive has no patch): labels, or probabilities."""
    rows, cols, shape = grid_positions(df)
    grid = np.full(shape, np.nan)
    grid[rows, cols] = np.asarray(values, dtype=float)
    return grid


def tissue_mosaic(df: pd.DataFrame, cell: int = PATCH) -> np.ndarray:
    """The patient's patches tiled into one RGB image, each shrunk to ``cell`` pixels; a border patch
    keeps its real size (scaled) and the rest of its cell stays white, as on the slide."""
    rows, cols, (n_rows, n_cols) = grid_positions(df)
    out = np.full((n_rows * cell, n_cols * cell, 3), 255, dtype=np.uint8)
    for r, c, path, w, h in zip(rows, cols, df["path"], df["width"], df["height"]):
        patch = load_patch(path)
        if cell != PATCH:
            patch = np.asarray(Image.fromarray(patch).resize((cell, cell), Image.BILINEAR))
        hh, ww = max(1, round(h * cell / PATCH)), max(1, round(w * cell / PATCH))
        out[r * cell:r * cell + hh, c * cell:c * cell + ww] = patch[:hh, :ww]
    return out


def patient_maps(df: pd.DataFrame, proba=None, cell: int | None = None) -> dict:
    """One patient's tissue mosaic, annotation grid and (with ``proba``, a column name or an array per
    row) probability grid; ``cell`` None: full size for small slides, 20 pixels from 400 patches on."""
    if df.empty:
        raise ValueError("no patches: cannot rebuild a slide from an empty index")
    if isinstance(proba, str):
        proba = df[proba]
    maps = {"patient": str(df["patient"].iloc[0]), "patches": len(df), "labels": value_map(df, df["label"]),
            "mosaic": tissue_mosaic(df, cell=cell or (PATCH if len(df) < 400 else 20))}
    if proba is not None:
        proba = np.asarray(proba, dtype=float)
        if len(proba) != len(df):
            raise ValueError(f"{len(proba)} probabilities for {len(df)} patches")
        maps["proba"] = value_map(df, proba)
    return maps


def complete_patients(data_dir) -> list[str]:
    """The patients whose every patch a data folder holds, as its ``manifest.json`` lists them (the
    shipped sample: 10253 and 10254); without a manifest the folder is complete: []."""
    manifest = Path(data_dir) / "manifest.json"
    if not manifest.is_file():
        return []
    return [str(p) for p in json.loads(manifest.read_text()).get("complete_patients", [])]
