"""Choosing a recipe on patients that are never reported on.

Choosing ingredients by their mean difference on the folds that are then reported flatters the
winner: its gain was picked because it was high on those very patients. Here the patients are
split once into a *development* set and a *lockbox* (``LOCKBOX_SHARE`` of them, by their IDs alone).
Every choice is made by cross-validation inside the development set; the lockbox is scored once,
at the end, by the recipes already chosen.

A verdict needs a margin larger than its noise: an ingredient is kept when the one-sided lower
confidence bound of its paired difference (one difference per fold and seed) is above zero.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LOCKBOX_SHARE = 0.2
LOCKBOX_SEED = 2026  # fixed: every session holds out the same patients of a data set
CONFIDENCE = 0.95  # one-sided: the lower bound of the paired difference's mean


def lockbox(df: pd.DataFrame, share: float = LOCKBOX_SHARE, seed: int = LOCKBOX_SEED) -> pd.Series:
    """True for the rows of the lockbox patients: those whose ID hashes below ``share`` (about that
    share of them). Membership depends on a patient's ID alone, never on a label or on the other
    patients: no change of a label moves a patient in or out, nor does adding patients."""
    if not 0 < share <= 0.5:
        raise ValueError(f"the lockbox share must be in (0, 0.5], got {share}")
    patients = df["patient"].astype(str)
    if patients.nunique() < 10:
        raise ValueError(f"a lockbox needs at least 10 patients; the data has {patients.nunique()}")
    held = {p for p in patients.unique()
            if int(hashlib.sha1(f"{seed}:{p}".encode()).hexdigest(), 16) / 16**40 < share}
    return patients.isin(held).rename("lockbox")


def development(df: pd.DataFrame, share: float = LOCKBOX_SHARE, seed: int = LOCKBOX_SEED) -> pd.DataFrame:
    """The rows of ``df`` outside the lockbox: the only ones a choice may see."""
    return df[~lockbox(df, share, seed)]


@dataclass
class Verdict:
    candidate: str
    metric: str
    mean: float  # mean paired difference, candidate minus reference
    sd: float
    n: int  # paired differences: folds x seeds
    lower: float  # one-sided lower confidence bound of the mean
    keep: bool


def verdict(candidate: str, differences: pd.Series, metric: str, confidence: float = CONFIDENCE,
            min_seeds: int = 2) -> Verdict:
    """Keep ``candidate`` when the lower confidence bound (Student's t) of the mean of its paired
    differences is above zero, measured over at least ``min_seeds`` seeds (``differences`` as
    ``paired_differences`` gives them: indexed by seed and fold)."""
    d = differences.dropna()
    n, mean = len(d), float(d.mean()) if len(d) else np.nan
    if n < 2:
        return Verdict(candidate, metric, mean, np.nan, n, np.nan, False)
    sd = float(d.std(ddof=1))
    lower = mean - stats.t.ppf(confidence, n - 1) * sd / np.sqrt(n)
    seeds = d.index.get_level_values("seed").nunique()
    return Verdict(candidate, metric, mean, sd, n, float(lower), bool(seeds >= min_seeds and lower > 0))


def paired_differences(candidate: pd.DataFrame, reference: pd.DataFrame, metric: str) -> pd.Series:
    """Per (seed, fold): the candidate's ``metric`` minus the reference's, on the same patients."""
    keys = ["seed", "fold"]
    both = candidate[keys + [metric]].merge(reference[keys + [metric]], on=keys, suffixes=("", "_ref"))
    if both.empty:
        raise ValueError("the candidate and the reference share no (seed, fold): they were not scored alike")
    return (both[metric] - both[f"{metric}_ref"]).set_axis(pd.MultiIndex.from_frame(both[keys]))


def forward_selection(base: str, ingredients, score, metric: str = "roc_auc",
                      confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Add ingredients to ``base`` one at a time while one helps by a margin: each round tries every
    remaining ingredient on the current recipe and keeps the one with the highest lower bound, if it is
    above zero. ``score(recipe_name)``: per-(seed, fold) scores on development patients only. One row
    per candidate tried: round, candidate, the verdict's numbers and whether it was chosen."""
    current, remaining, rows = base, list(ingredients), []
    reference = score(current)
    for round_ in range(1, len(remaining) + 1):
        tried = []
        for ingredient in remaining:
            name = f"{current}+{ingredient}"
            scores = score(name)
            tried.append((verdict(name, paired_differences(scores, reference, metric), metric, confidence),
                          ingredient, scores))
        best, ingredient, scores = max(tried, key=lambda t: -np.inf if np.isnan(t[0].lower) else t[0].lower)
        rows += [{"round": round_, "reference": current, **vars(v), "chosen": v is best and v.keep}
                 for v, _, _ in tried]
        if not best.keep:
            break
        current, reference = best.candidate, scores
        remaining.remove(ingredient)
    return pd.DataFrame(rows)


def select(df: pd.DataFrame, base: str, ingredients, score, metric: str = "roc_auc",
           share: float = LOCKBOX_SHARE, seed: int = LOCKBOX_SEED) -> pd.DataFrame:
    """``forward_selection`` with ``score(recipe_name, rows)`` given the development rows of ``df``
    alone: no label of a lockbox patient can reach a choice."""
    rows = development(df, share, seed)
    return forward_selection(base, ingredients, lambda name: score(name, rows), metric)


def chosen(path: pd.DataFrame, base: str) -> str:
    """The recipe a selection path ends with."""
    picked = path[path["chosen"]]
    return picked["candidate"].iloc[-1] if len(picked) else base


def winners_curse(candidates: int = 12, folds: int = 5, noise: float = 0.02, trials: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Why a choice must not be scored on the patients it was made on, with no training at all.

    ``candidates`` ingredients that all change nothing: each fold's paired difference is pure noise
    (normal, sd ``noise``). Each trial picks the candidate with the highest mean over ``folds`` folds,
    then scores it on those folds and on ``folds`` new ones: one row per trial."""
    rng = np.random.default_rng(seed)
    chosen_on = rng.normal(0, noise, (trials, candidates, folds)).mean(axis=2)
    fresh = rng.normal(0, noise, (trials, candidates, folds)).mean(axis=2)
    return pd.DataFrame({"on the folds it was chosen on": chosen_on.max(axis=1),
                         "on new patients": fresh[np.arange(trials), chosen_on.argmax(axis=1)]})


METRICS = ("f1", "balanced_accuracy", "roc_auc")


def compare(scores: dict, reference: str, metrics=METRICS) -> pd.DataFrame:
    """Recipes scored alike (``scores``: name -> per-(seed, fold) rows, as ``crossval.over_seeds``
    gives them): each metric's mean and sd over those rows, and the paired difference from
    ``reference`` with its verdict (``<metric>_diff``, ``<metric>_lower``, ``<metric>_keep``)."""
    rows = {}
    for name, frame in scores.items():
        row = {}
        for m in metrics:
            row[m], row[f"{m}_sd"] = float(frame[m].mean()), float(frame[m].std(ddof=1))
            if name != reference:
                v = verdict(name, paired_differences(frame, scores[reference], m), m)
                row.update({f"{m}_diff": v.mean, f"{m}_lower": v.lower, f"{m}_keep": v.keep})
        rows[name] = {**row, "runs": len(frame), "seeds": frame["seed"].nunique()}
    return pd.DataFrame.from_dict(rows, orient="index")
