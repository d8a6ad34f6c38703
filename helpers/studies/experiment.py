"""The steps every model notebook takes, each one call: data for a model, its training, evaluation on
validation and test, one row in the registry."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import evaluate, hardware, runs, train
from ..data import pipeline, splits
from ..data.cache import cached_index
from ..data.pipeline import Data
from ..io import atomic_path


def prepare_data(cfg, model_name: str = "cancernet", image_size=None, *, split_dir=None, augment="none",
                 split_by: str = "patient", hold_out=()) -> Data:
    """Index, split by patient, cap to the profile's sample size, and build the pipelines for ``model_name``:
    at its input size (``image_size`` None: its own) with its preprocessing.

    The training split is class-balanced (as the seed projects trained); validation and test keep
    the natural IDC share, so their scores mean what they would on new slides. ``augment`` (a name
    of ``helpers.data.augment.AUGMENTATIONS``, or a layer) applies to training batches only.
    ``split_by="patch"`` is the leaky random split, for measuring the leak only.
    """
    if isinstance(augment, str):
        from ..data.augment import by_name

        augment = None if augment == "none" else by_name(augment, seed=cfg.seed)
    # before Keras is imported: without TensorFlow the index builds in parallel
    df, _ = cached_index(cfg.data_dir, cfg.output_dir)
    from .. import models

    image_size, preprocess = models.input_size(model_name, image_size), models.preprocess_for(model_name)
    split_df, note = splits.split_index(df, cfg.seed, split_dir, by=split_by, hold_out=hold_out)
    if split_by == "patient":
        splits.check_disjoint(split_df)
    cap = cfg.sample_size
    parts = []
    for name, part in split_df.groupby("split"):
        limit = None if cap is None else max(2, round(cap * (0.7 if name == "train" else 0.15)))
        parts.append(splits.sample(part, max_patches=limit, seed=cfg.seed, balanced=name == "train"))
    index = pd.concat(parts).reset_index(drop=True)
    for line in splits.check_classes(index, note):
        print(line, file=sys.stderr)
    batch = hardware.global_batch(cfg.batch_size)  # per replica in the profile; the pipeline's is global
    data = Data(index=index, train=None, val=None, test=None, class_weight={}, split_note=note,
                image_size=image_size, preprocess=preprocess, batch_size=batch)

    def pipe(name, **options):  # in index order unless shuffled
        return pipeline.make_dataset(data.part(name), batch_size=batch, image_size=image_size,
                                     preprocess=preprocess, one_hot=True, **options)

    data.class_weight = train.class_weights(data.part("train")["label"])
    data.train = pipe("train", shuffle=True, seed=cfg.seed, cache=True, augment=augment)
    data.val = pipe("val")
    data.test = pipe("test") if (index["split"] == "test").any() else None
    return data


def run_key(cfg, training: train.Training, **settings) -> str:
    """The fingerprint of a run on ``cfg``'s data, cap, epochs and batch size, ``training`` and ``settings``."""
    return runs.fingerprint(dict(data=str(Path(cfg.data_dir).resolve()), sample=cfg.sample_size, epochs=cfg.epochs,
                                 batch=cfg.batch_size, fit=training.changes(), **settings))


def train_on(model, data: Data, run_dir, training: train.Training, *, epochs: int, seed: int,
             **options) -> train.TrainResult:
    """``train.fit`` on ``data``'s pipelines, class weights and training patch count."""
    return train.fit(model, data.train, data.val, run_dir, training, epochs=epochs, seed=seed,
                     class_weight=data.class_weight, train_patches=len(data.part("train")), **options)


def save_model(model, path) -> None:
    """Write a Keras model atomically: a kill mid-write leaves no half file a rerun would load."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def assess(model, data: Data) -> dict:
    """``threshold`` (chosen on validation only), ``val`` and ``test`` scores (test None without a test
    split), the per-patient test table (``per_patient``) and the raw predictions (``pred``)."""
    y_val, p_val = evaluate.predict(model, data.val)
    threshold = evaluate.choose_threshold(y_val, p_val)
    out = {"threshold": threshold, "val": evaluate.scores(y_val, p_val, threshold),
           "pred": {"val": p_val}, "test": None, "per_patient": None}
    if data.test is not None:
        y_test, p_test = evaluate.predict(model, data.test)
        out["test"] = evaluate.scores(y_test, p_test, threshold)
        out["pred"]["test"] = p_test
        out["per_patient"] = evaluate.per_patient(data.part("test"), p_test, threshold)
    return out


SCORE_COLUMNS = ["accuracy", "precision", "recall", "f1", "balanced_accuracy", "roc_auc", "n", "positives"]


def registry_row(run: str, model_name: str, result, assessment: dict, params: dict, n_params: int) -> dict:
    """One registry row: what ran, on what, and its scores (test if present, else validation)."""
    scored = assessment["test"] or assessment["val"]
    row = {"run": run, "model": model_name, "scored_on": "test" if assessment["test"] else "val",
           **params, "threshold": round(assessment["threshold"], 4),
           "epochs_run": result.epochs_run, "train_seconds": result.seconds,
           "images_per_s": result.images_per_s, "params": n_params,
           **{f"val_{k}": round(assessment["val"][k], 4) for k in ("f1", "balanced_accuracy")}}
    for key in SCORE_COLUMNS:
        value = scored[key]
        row[key] = round(value, 4) if isinstance(value, float) and not np.isnan(value) else value
    return row


def train_or_load(cfg, model_name: str = "cancernet", prefix: str = "shared", hold_out=()):
    """(model, data) for notebooks that need a trained model rather than teach training.

    The run is named by model, profile and a fingerprint of the data and settings, so a rerun (or
    another notebook with the same settings) loads the model, and other data never reuses it.
    """
    import keras

    from .. import models

    data = prepare_data(cfg, model_name, hold_out=hold_out)
    training = train.Training()
    key = run_key(cfg, training, seed=cfg.seed, hold_out=sorted(map(str, hold_out)))
    run_dir = Path(cfg.output_dir) / "runs" / f"{prefix}_{model_name}_{cfg.profile}_{key[:8]}"
    done = run_dir / "model.keras"
    if done.is_file():
        return keras.models.load_model(done), data
    model = models.build_model(model_name, image_size=data.image_size, seed=cfg.seed)
    result = train_on(model, data, run_dir, training, epochs=cfg.epochs, seed=cfg.seed, name=model_name, key=key)
    best = result.best_model(model)
    save_model(best, done)
    return best, data


def predict_patients(model, index: pd.DataFrame, patients, data: Data, batch_size: int = 256) -> pd.DataFrame:
    """Every patch of ``patients`` from the full ``index`` (not the capped sample), with
    the model's IDC probability in a ``proba`` column: whole slides for heatmaps."""
    wanted = {str(p) for p in patients}
    rows = index[index["patient"].astype(str).isin(wanted)].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"none of the patients {sorted(wanted)[:5]} is in the index")
    ds = pipeline.make_dataset(rows, batch_size=batch_size, image_size=data.image_size,
                               preprocess=data.preprocess, one_hot=True)
    _, proba = evaluate.predict(model, ds)
    return rows.assign(proba=proba)


# --- what a model notebook shows and keeps ------------------------------------

def scores_table(assessment: dict) -> pd.DataFrame:
    """Validation and test scores side by side (threshold chosen on validation)."""
    rows = {"validation": assessment["val"], "test": assessment["test"]}
    return pd.DataFrame({k: v for k, v in rows.items() if v}).T[SCORE_COLUMNS].astype(float).round(3)


def beside_original(model_name: str, assessment: dict, data: Data, cfg) -> pd.DataFrame:
    """The seed project's published figures for this model beside ours, each with its split."""
    from ..reference import original_rows

    scored = assessment["test"] or assessment["val"]
    ours = pd.DataFrame([{
        "model": model_name, "setting": f"this run ({cfg.profile} profile, {cfg.epochs} epochs)",
        "train": None, "val": round(assessment["val"]["accuracy"], 3),
        "test": round(assessment["test"]["accuracy"], 3) if assessment["test"] else None,
        "f1": round(scored["f1"], 3), "split": data.split_note, "note": cfg.data_label,
    }])
    original = original_rows(model_name).assign(note=lambda t: t["note"].where(t["note"] != "", "seed project"))
    return pd.concat([original, ours], ignore_index=True)


def report(cfg, notebook: str, run: str, model, model_name: str, result, assessment: dict, data: Data,
           params: dict) -> dict:
    """Figures (training curves; ROC, PR, confusion), predictions and one registry row;
    returns the paths written (``written``) and the ``row``."""
    import matplotlib.pyplot as plt

    from .. import plots, results
    from ..models import count_params
    from ..notebook import save_figure

    scored_on = "test" if assessment["test"] else "val"
    split = f"{scored_on} split, {data.split_note}"
    figures = {"curves": plots.training_curves(result.history, f"{model_name}: training ({cfg.data_label})"),
               "evaluation": plots.evaluation_plots(data.part(scored_on)["label"], assessment["pred"][scored_on],
                                                    assessment["threshold"],
                                                    f"{model_name}: {run} ({cfg.data_label}; {split})")}
    written = {name: save_figure(fig, cfg, f"{run}_{name}") for name, fig in figures.items()}
    for fig in figures.values():
        plt.show() if "ipykernel" in sys.modules else plt.close(fig)
    # Stamped: a rerun of the same run name must not overwrite the file an older registry row names.
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name, proba in assessment["pred"].items():
        written[f"predictions_{name}"] = Path(cfg.output_dir) / "predictions" / f"{run}_{stamp}_{name}.csv"
        evaluate.save_predictions(data.part(name), proba, written[f"predictions_{name}"], split=name)
    row = registry_row(run, model_name, result, assessment, params, count_params(model)["total"])
    row["predictions"] = str(written.get("predictions_test", written["predictions_val"]))
    results.record(cfg, notebook, [row], split=split)
    return {"written": written, "row": row}


@dataclass
class ModelRun:
    """What ``train_and_assess`` did."""

    name: str
    model_name: str
    data: Data
    model: object  # as built
    best: object  # its best epoch
    result: train.TrainResult
    assessment: dict
    row: dict  # in the registry


def train_and_assess(cfg, notebook: str, model_name: str, *, image_size=None, weights=None, fine_tune_at=None,
                     training: train.Training = train.Training(), split_dir=None) -> ModelRun:
    """Notebook 02's steps in one call, each shown as notebook 02 shows it, for the notebooks that teach
    an architecture (03-07): split by patient, build, train (resumable; a finished run with the same
    settings read back), threshold chosen on validation, test scores, figures, predictions and one
    registry row."""
    from IPython.display import display

    from .. import models

    data = prepare_data(cfg, model_name, image_size, split_dir=split_dir)
    print(f"input {data.image_size}x{data.image_size}; split {data.split_note}; class weights {data.class_weight}")
    display(splits.describe(data.index))
    # seeded: the same first weights whatever cells ran before (notebooks 02-07 build layers of their own first)
    model = models.build_model(model_name, image_size=data.image_size, weights=weights, fine_tune_at=fine_tune_at,
                               seed=cfg.seed)
    display(pd.DataFrame([models.count_params(model)], index=["parameters"]))
    name = f"{notebook[:2]}_{model_name}_{cfg.profile}"
    key = run_key(cfg, training, seed=cfg.seed, model=model_name, size=data.image_size, weights=weights,
                  fine_tune_at=fine_tune_at, split_dir=split_dir)
    result = train_on(model, data, Path(cfg.output_dir) / "runs" / name, training, epochs=cfg.epochs, seed=cfg.seed,
                      name=model_name, key=key)
    best = result.best_model(model)
    print(f"{result.epochs_run} epochs in {result.seconds:.0f} s, {result.images_per_s:.0f} training patches/s")
    assessment = assess(best, data)
    print(f"threshold {assessment['threshold']:.3f}, chosen on validation")
    display(scores_table(assessment))
    scored_on = "test" if assessment["test"] else "val"
    display(evaluate.classification_table(data.part(scored_on)["label"], assessment["pred"][scored_on],
                                          assessment["threshold"]))
    if assessment["per_patient"] is not None:  # the patients it reads worst
        display(assessment["per_patient"].sort_values("accuracy").head(5).round(3))
    params = {"optimizer": training.optimizer, "learning_rate": training.learning_rate, **training.changes(),
              "epochs": cfg.epochs, "batch_size": cfg.batch_size, "image_size": data.image_size,
              "weights": str(weights), "fine_tune_at": fine_tune_at}
    out = report(cfg, notebook, name, best, model_name, result, assessment, data, params=params)
    return ModelRun(name, model_name, data, model, best, result, assessment, out["row"])
