"""The steps every model notebook takes, each one call: data for a model, then
evaluation on validation and test, then one row in the registry.

A notebook stays narrative: it explains, then calls these. The CLI's ``train``
and ``evaluate`` commands use the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import evaluate, pipeline, splits
from .data import cached_index


@dataclass
class Data:
    """One split of the index and its tf.data pipelines, ready for one model."""

    index: pd.DataFrame  # the sampled patches, with a split column
    train: object
    val: object
    test: object | None
    class_weight: dict
    split_note: str
    image_size: int
    preprocess: object = None
    batch_size: int = 64
    extra: dict = field(default_factory=dict)

    def part(self, name: str) -> pd.DataFrame:
        return self.index[self.index["split"] == name].reset_index(drop=True)

    def dataset(self, name: str, shuffle: bool = False):
        """A pipeline over one split, in index order unless ``shuffle``."""
        return pipeline.make_dataset(self.part(name), batch_size=self.batch_size,
                                     image_size=self.image_size, preprocess=self.preprocess,
                                     one_hot=True, shuffle=shuffle)


def split_index(df: pd.DataFrame, seed: int, split_dir=None) -> tuple[pd.DataFrame, str]:
    """Patients to train/val/test: from list files in ``split_dir`` if given, else 70/15/15."""
    if split_dir:
        lists = {n: Path(split_dir) / f"cases_{n}.txt" for n in splits.SPLITS
                 if (Path(split_dir) / f"cases_{n}.txt").is_file()}
        if "train" not in lists or "val" not in lists:
            raise FileNotFoundError(f"{split_dir} needs cases_train.txt and cases_val.txt")
        out, report = splits.split_from_lists(df, lists)
        missing = {k: len(v) for k, v in report["missing_from_data"].items() if v}
        note = f"by patient, from the lists in {Path(split_dir).name}"
        return out, note + (f" (listed but absent: {missing})" if missing else "")
    return splits.split_by_patient(df, val=0.15, test=0.15, seed=seed), f"by patient, 70/15/15, seed {seed}"


def prepare_data(cfg, image_size: int = 50, preprocess=None, split_dir=None,
                 balanced_train: bool = True) -> Data:
    """Index, split by patient, cap to the profile's sample size, and build the pipelines.

    The training split is class-balanced (as the seed projects trained); the
    validation and test splits keep the natural IDC share, so their scores
    mean what they would mean on new slides.
    """
    df, _ = cached_index(cfg)
    split_df, note = split_index(df, cfg.seed, split_dir)
    splits.check_disjoint(split_df)
    cap = cfg.sample_size
    parts = []
    for name, part in split_df.groupby("split"):
        share = 0.7 if name == "train" else 0.15
        limit = None if cap is None else max(2, round(cap * share))
        parts.append(splits.sample(part, max_patches=limit, seed=cfg.seed,
                                   balanced=balanced_train and name == "train"))
    index = pd.concat(parts).reset_index(drop=True)
    for name in ("train", "val"):
        if not (index["split"] == name).any():
            raise ValueError(f"the {name} split is empty ({note}); check the data or the lists")
    data = Data(index=index, train=None, val=None, test=None, class_weight={}, split_note=note,
                image_size=image_size, preprocess=preprocess, batch_size=cfg.batch_size)
    train_part = data.part("train")
    data.class_weight = _weights(train_part["label"])
    data.train = pipeline.make_dataset(train_part, batch_size=cfg.batch_size, image_size=image_size,
                                       preprocess=preprocess, one_hot=True, shuffle=True,
                                       seed=cfg.seed, cache=True)
    data.val = data.dataset("val")
    data.test = data.dataset("test") if (index["split"] == "test").any() else None
    return data


def _weights(labels):
    from .train import class_weights

    return class_weights(labels)


def assess(model, data: Data, threshold: float | None = None) -> dict:
    """Scores on validation and test; the threshold is chosen on validation only.

    Returns a dict with ``threshold``, ``val`` and ``test`` scores (test None
    without a test split), the per-patient test table and the raw predictions.
    """
    y_val, p_val = evaluate.predict(model, data.val)
    if threshold is None:
        threshold = evaluate.choose_threshold(y_val, p_val)
    out = {"threshold": threshold, "val": evaluate.scores(y_val, p_val, threshold),
           "val_at_0.5": evaluate.scores(y_val, p_val, 0.5),
           "pred": {"val": p_val}, "test": None, "per_patient": None}
    if data.test is not None:
        y_test, p_test = evaluate.predict(model, data.test)
        out["test"] = evaluate.scores(y_test, p_test, threshold)
        out["pred"]["test"] = p_test
        out["per_patient"] = evaluate.per_patient(data.part("test"), p_test, threshold)
    return out


def registry_row(run: str, model_name: str, result, assessment: dict, params: dict,
                 n_params: int | None = None) -> dict:
    """One registry row: what ran, on what, and its scores (test if present, else validation)."""
    scored = assessment["test"] or assessment["val"]
    row = {"run": run, "model": model_name, "scored_on": "test" if assessment["test"] else "val",
           **params, "threshold": round(assessment["threshold"], 4),
           "epochs_run": result.epochs_run, "train_seconds": result.seconds,
           "images_per_s": result.images_per_s, "params": n_params,
           "val_f1": round(assessment["val"]["f1"], 4),
           "val_balanced_accuracy": round(assessment["val"]["balanced_accuracy"], 4)}
    for key in ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "roc_auc", "n", "positives"):
        value = scored[key]
        row[key] = round(value, 4) if isinstance(value, float) and not np.isnan(value) else value
    return row
