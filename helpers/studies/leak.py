"""How much a random patch split flatters: the same model trained on a random patch split (what the
seed projects did) and on a patient split of the same data, each scored on its own test side.

Patches of one patient are neighbouring tiles of one slide: under a patch split most test patients
also have patches in training, so the test score partly measures recognising a slide seen before.
"""

from __future__ import annotations

import dataclasses
import time

import pandas as pd

from .. import models
from ..data import splits
from ..train import Training
from .experiment import assess, prepare_data, run_key, train_on

SPLITS_COMPARED = ("patch", "patient")
METRICS = ["f1", "balanced_accuracy", "roc_auc"]


def compare_splits(cfg, model_name: str = "cancernet", seeds=None, training: Training = Training(),
                   verbose: int = 2) -> pd.DataFrame:
    """One row per (split, seed): test scores, how many test patients also trained, and the patches
    on each side. Runs are kept under ``<output_dir>/runs/leak_<model>_<profile>/<split>-<seed>``; a rerun
    with the same settings reads a finished run back."""
    seeds = list(seeds or cfg.training_seeds())
    rows = []
    for by in SPLITS_COMPARED:
        for seed in seeds:
            run_cfg = dataclasses.replace(cfg, seed=seed)
            data = prepare_data(run_cfg, model_name, split_by=by)
            if data.test is None:
                raise ValueError(f"{cfg.data_dir}: the {by} split left no test patches")
            model = models.build_model(model_name, image_size=data.image_size, seed=seed)
            run_dir = cfg.output_dir / "runs" / f"leak_{model_name}_{cfg.profile}" / f"{by}-{seed}"
            start = time.perf_counter()
            result = train_on(model, data, run_dir, training, epochs=cfg.epochs, seed=seed, name=model_name,
                              verbose=verbose, key=run_key(run_cfg, training, model=model_name, split=by))
            scored = assess(result.best_model(model), data)
            rows.append({
                "split": by, "seed": seed, "split_note": data.split_note,
                **{k: scored["test"][k] for k in [*METRICS, "accuracy"]}, "threshold": scored["threshold"],
                "test_patients": int(data.part("test")["patient"].nunique()),
                "test_patients_also_in_training": splits.shared_patients(data.index, "test"),
                "train_patches": len(data.part("train")), "test_patches": len(data.part("test")),
                "epochs_run": result.epochs_run, "seconds": round(time.perf_counter() - start, 1),
            })
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per split, and the patch split's lead over the patient split."""
    grouped = table.groupby("split")[METRICS]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_sd"))
    out["seeds"] = table.groupby("split").size()
    out = out.reindex([s for s in SPLITS_COMPARED if s in out.index])
    means = [f"{m}_mean" for m in METRICS]
    if set(SPLITS_COMPARED) <= set(out.index):
        out.loc["patch − patient"] = out.loc["patch", means] - out.loc["patient", means]
    return out
