"""A colour-statistics baseline: how far IDC detection gets without a CNN.

Each patch becomes 44 numbers: for its red, green and blue channels and their optical
densities (-log of transmitted light, proportional to the amount of stain), the mean, the
standard deviation and five percentiles, and two of texture (the mean absolute difference of
neighbouring grey pixels, across and down). Given each patch's patient, the same 44 numbers
standardised within the patient are added: 88 in all, for scikit-learn's
``HistGradientBoostingClassifier``.

Why it is here: on the real sample it ranks test patients' patches almost as well as the CNNs
do (docs/measurements.md), which says how much of what they learn is colour, and it is a second,
different model to average a CNN with. The patient-standardised half reads the patient's other
patches, unlabelled, as slide context does (``helpers.recipes.context``), never their labels.
``cross_validate`` writes each fold's ``views.csv``, for ``crossval.view_ensemble``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

CHANNELS = ("red", "green", "blue", "od_red", "od_green", "od_blue")
STATS = ("mean", "sd", "p5", "p25", "p50", "p75", "p95")
NAMES = (*(f"{c}_{s}" for c in CHANNELS for s in STATS), "grad_across", "grad_down")
NAME = "colour"  # the baseline's name in tables, registry rows and outputs/crossval/colour-v1/
VERSION = 1


def patch_features(images, chunk: int = 1024) -> np.ndarray:
    """(n, 44) float32 colour and texture statistics (``NAMES``) of uint8 RGB patches (n, h, w, 3)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"patch_features needs RGB images (n, height, width, 3), got shape {images.shape}")
    out = np.empty((len(images), len(NAMES)), dtype=np.float32)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].astype(np.float32)
        pixels = np.concatenate([x / 255.0, -np.log((x + 1.0) / 256.0)], axis=-1).reshape(len(x), -1, 6)
        q = np.percentile(pixels, [5, 25, 50, 75, 95], axis=1)  # (5, n, 6)
        per_channel = np.stack([pixels.mean(1), pixels.std(1), *q], axis=-1)  # (n, 6, 7)
        grey = x.mean(-1) / 255.0
        texture = np.stack([np.abs(np.diff(grey, axis=2)).mean((1, 2)), np.abs(np.diff(grey, axis=1)).mean((1, 2))], 1)
        out[start:start + len(x)] = np.concatenate([per_channel.reshape(len(x), -1), texture], axis=1)
    return out


def within_patient(features, patients) -> np.ndarray:
    """Each feature standardised over its patient's patches (0 where the patient's patches agree)."""
    features, patients = np.asarray(features, dtype=np.float32), np.asarray(patients)
    if len(patients) != len(features):
        raise ValueError(f"{len(patients)} patients given for {len(features)} patches")
    frame = pd.DataFrame(features).groupby(patients)
    sd = frame.transform("std", ddof=0).to_numpy()
    centred = features - frame.transform("mean").to_numpy()
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 1e-6).astype(np.float32)


def features(images, patients=None) -> np.ndarray:
    """The model's inputs: ``patch_features``, and with ``patients`` their ``within_patient`` twins."""
    own = patch_features(images)
    return own if patients is None else np.concatenate([own, within_patient(own, patients)], axis=1)


def make_model(seed: int = 0):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=seed)


def cross_validate(data, folds: int = 5, seed: int = 42, out_dir=None, sample_size=None, log=None):
    """The baseline on the patient folds of ``crossval.run`` (same ``folds``, ``seed`` and
    ``sample_size``) of a ``crossval.LoadedData``: fitted on each fold's training patients, scored
    at 0.5 on its test patients; ``views.csv``'s ``single`` and ``tta`` alike (a tree has no views).
    Written under ``OUT/crossval/colour-v1/<data>-k<folds>-s<seed>/``; a ``crossval.CrossvalResult``."""
    from ..io import write_text
    from . import crossval
    from .recipe import Recipe

    log = log or (lambda message: None)
    start = time.process_time()
    x = features(data.images, data.df["patient"].to_numpy())
    feature_cpu = time.process_time() - start
    folded = crossval.patient_folds(data.df, folds, seed)
    # CrossvalResult wants a Recipe: one named for the baseline; its CNN options describe nothing here
    recipe = Recipe(name=NAME, version=VERSION, epochs=1)
    root = crossval.run_dir(out_dir, recipe, data, folds, seed, sample_size, epochs=False)
    rows = []
    for i in range(folds):
        wall, cpu = time.perf_counter(), time.process_time()
        split, at = crossval.fold_parts(folded, i, seed, sample_size)
        model = make_model(seed + 1000 * i).fit(x[at["train"]], data.labels[at["train"]])
        views = crossval.fold_views_frame(data, at)
        views["single"] = views["tta"] = model.predict_proba(x[np.concatenate([at["val"], at["test"]])])[:, 1]
        fold_dir = root / f"fold{i}"
        crossval.write_views(views, fold_dir)
        proba = views.loc[views["split"] == "test", "single"].to_numpy()
        row = {"fold": i, **crossval.fold_counts(split, at),
               **crossval.fold_test_scores(data, at, proba, 0.5, fold_dir),
               # each fold's share of computing the features once for all patches
               "cpu_seconds": round(time.process_time() - cpu + feature_cpu / folds, 2),
               "wall_seconds": round(time.perf_counter() - wall, 2)}
        write_text(fold_dir / "done.json", json.dumps({"row": row}, indent=2, default=float))
        log(f"{NAME} fold {i + 1}/{folds}: " + ", ".join(f"{m} {row[m]:.3f}" for m in crossval.METRICS))
        rows.append(row)
    settings = {"data_dir": str(data.data_dir), "generated": data.generated, "folds": folds, "seed": seed,
                "sample_size": sample_size, "model": f"HistGradientBoosting on {x.shape[1]} colour statistics"}
    result = crossval.CrossvalResult.from_rows(recipe, rows, root, settings)
    return result.save_summary(recipe={"name": NAME, "version": VERSION, "options": {"model": settings["model"]}})
