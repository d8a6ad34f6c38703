"""Slide context: a patch's IDC probability read together with the rest of its slide.

A pathologist does not judge a 50×50 patch alone: the same purple blob means more on a slide
full of carcinoma than on one of healthy ducts. At inference the whole slide is at hand,
unlabelled: a logistic regression fitted on the validation patients (whose labels are known)
and applied unchanged to the test patients reads two numbers per patch:

- the patch's own logit, ``log(p / (1 - p))``;
- the mean logit of every patch of its patient (the patch itself included).

No test label is read; only the test patients' predicted probabilities. A score with slide
context answers "this patch, on this slide", not "this patch, alone": it is not comparable
with the patch-only literature (Cruz-Roa 2014, Janowczyk 2016), and both are reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before the logit


def logit(proba) -> np.ndarray:
    p = np.clip(np.asarray(proba, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def features(proba, patients) -> np.ndarray:
    """(n, 2): each patch's logit and the mean logit of its patient's patches."""
    proba, patients = np.asarray(proba, dtype=float), np.asarray(patients)
    if proba.ndim != 1 or len(proba) != len(patients):
        raise ValueError(f"slide context needs one patient per probability; got {proba.shape} probabilities "
                         f"and {len(patients)} patients")
    own = logit(proba)
    slide = pd.Series(own).groupby(patients).transform("mean").to_numpy()
    return np.column_stack([own, slide])


def fit(proba, patients, labels) -> dict:
    """The context model fitted on labelled (validation) patches: ``{"coef": [own, slide],
    "intercept": b, "patients": k, "patches": n, "fitted": True}``, plain numbers that model.json
    can hold. Patches of one class only, or a fit whose weight on the patch's own logit is not
    positive, leave the patch alone (coef [1, 0], "fitted": False)."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels).astype(int)
    x = features(proba, patients)
    if len(labels) != len(x):
        raise ValueError(f"slide context: {len(labels)} labels for {len(x)} probabilities")
    counts = {"patients": int(len(np.unique(patients))), "patches": int(len(labels))}
    # like evaluate.choose_threshold: with one class there is nothing to fit
    model = LogisticRegression(C=1.0).fit(x, labels) if len(np.unique(labels)) > 1 else None
    if model is None or model.coef_[0][0] <= 0:
        # Context may weigh the patch against its slide, never turn the patch's own evidence
        # around: a collapsed model (every probability within 1e-4) gave a tiny negative weight,
        # and inverted a test ranking of ROC-AUC 0.89 into 0.10. The patch alone decides.
        return {"coef": [1.0, 0.0], "intercept": 0.0, **counts, "fitted": False}
    return {"coef": [float(c) for c in model.coef_[0]], "intercept": float(model.intercept_[0]), **counts,
            "fitted": True}


def apply(fitted: dict, proba, patients) -> np.ndarray:
    """P(IDC) of each patch given its slide, from a :func:`fit` result."""
    z = features(proba, patients) @ np.asarray(fitted["coef"], dtype=float) + float(fitted["intercept"])
    return 1.0 / (1.0 + np.exp(-z))


def patients_of(paths) -> np.ndarray:
    """The patient id of each patch path (its file name's first field: ``<patient>_idx5_...``)."""
    return np.asarray([Path(p).name.split("_", 1)[0] for p in paths])
