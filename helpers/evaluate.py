"""Honest scores: IDC-class F1, balanced accuracy, ROC-AUC, per-patient scores. The threshold is
chosen on the validation split and applied unchanged to test: choosing it on test would fit test."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .io import atomic_path

CLASS_LABELS = ["IDC(-)", "IDC(+)"]


def predict(model, ds) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probability of IDC) for every example of ``ds`` (not shuffled), in order."""
    ys, ps = [], []
    for x, y in ds:
        ps.append(np.asarray(model.predict_on_batch(x))[:, 1])  # compiled, not op by op
        y = np.asarray(y)
        ys.append(y.argmax(1) if y.ndim == 2 else y)
    return np.concatenate(ys).astype(int), np.concatenate(ps).astype(float)


def choose_threshold(y_true, proba) -> float:
    """The probability cut that maximises IDC F1 on these (validation) labels."""
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    if y_true.min() == y_true.max():
        return 0.5  # one class only: F1 is undefined, keep the neutral cut
    precision, recall, cuts = skm.precision_recall_curve(y_true, proba)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(cuts[int(np.argmax(f1[:-1]))])


def scores(y_true, proba, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall and F1 of IDC, balanced accuracy, ROC-AUC, confusion counts."""
    y_true, proba = np.asarray(y_true).astype(int), np.asarray(proba, dtype=float)
    if len(y_true) != len(proba):
        raise ValueError(f"{len(y_true)} labels but {len(proba)} probabilities")
    if len(y_true) == 0:
        raise ValueError("no examples to score")
    y_pred = (proba >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    both = 0 < y_true.sum() < len(y_true)
    return {
        "n": int(len(y_true)), "positives": int(y_true.sum()), "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)) if both else float("nan"),
        "roc_auc": float(skm.roc_auc_score(y_true, proba)) if both else float("nan"),
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
    }


def classification_table(y_true, proba, threshold: float = 0.5) -> pd.DataFrame:
    """The seed project's classification report (precision, recall, f1, support per class)."""
    y_pred = (np.asarray(proba) >= threshold).astype(int)
    report = skm.classification_report(y_true, y_pred, labels=[0, 1], target_names=CLASS_LABELS,
                                       output_dict=True, zero_division=0)
    table = pd.DataFrame(report).T
    table["support"] = table["support"].astype(int)
    return table.round(3)


def per_patient(index: pd.DataFrame, proba, threshold: float) -> pd.DataFrame:
    """Scores per patient: annotated against predicted IDC share, F1, balanced accuracy."""
    frame = index[["patient", "label"]].copy()
    frame["pred"] = (np.asarray(proba) >= threshold).astype(int)
    rows = []
    for patient, g in frame.groupby("patient", sort=True):
        y, p = g["label"].to_numpy(), g["pred"].to_numpy()
        both = 0 < y.sum() < len(y)
        rows.append({
            "patient": patient, "patches": len(g),
            "idc_share": float(y.mean()), "predicted_idc_share": float(p.mean()),
            "accuracy": float((y == p).mean()),
            "f1": float(skm.f1_score(y, p, zero_division=0)) if y.sum() else float("nan"),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, p)) if both else float("nan"),
        })
    return pd.DataFrame(rows)


def save_predictions(index: pd.DataFrame, proba, path, split: str) -> pd.DataFrame:
    """Write path, patient, x, y, label, probability and split as CSV, atomically."""
    cols = [c for c in ("path", "patient", "x", "y", "label") if c in index]
    table = index[cols].reset_index(drop=True).copy()
    table["proba"] = np.asarray(proba, dtype=float)
    table["split"] = split
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return table
