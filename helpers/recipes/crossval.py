"""Patient-level k-fold cross-validation of a recipe, and ablations of its ingredients.

With a few dozen test patients, which patients land in test moves F1 by several points: here
every patient is a test patient exactly once, and the result is a mean and sd over folds.

Finished folds are stored under
``OUT/crossval/<recipe>-v<version>/<data>-k<folds>-s<seed>-e<epochs>[-n<sample>]/fold<i>/``
with a ``done.json`` fingerprinted by recipe, data, folds, seed, epochs and sample size: a rerun
skips them; an interrupted fold resumes (``recipe.train``). Each fold's ``views.csv`` holds every
validation and test patch's probability from one view and over the 8 dihedral views: from it the
eight decisions (threshold rule, TTA, slide context) are scored without training again.
Shell: ``python -m helpers crossval --data-dir DIR --recipe original --folds 5``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .. import evaluate, runs
from . import selection
from ..data import splits
from ..io import atomic_path, write_text
from .recipe import DECISION_OPTIONS, Predictor, Recipe
from .recipe import get as get_recipe
from .recipe import train as train_recipe

METRICS = selection.METRICS  # the IDC class's F1; the threshold's balanced accuracy
REPORTED = (*METRICS, "accuracy", "precision", "recall", "threshold")
VAL_SHARE = 0.15  # of each fold's non-test patients, for the best epoch and the threshold
# (threshold rule, TTA, context): every way a fold's stored views become decisions
DECISIONS = tuple((threshold, tta, context) for context in ("none", "slide") for tta in (False, True)
                  for threshold in ("fixed", "validation"))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- folds ------------------------------------------------------------------------------------

def patient_folds(df: pd.DataFrame, k: int = 5, seed: int = 42) -> pd.DataFrame:
    """``df`` with a ``fold`` column (0..k-1): every patient in exactly one fold, each fold's
    IDC share near the whole's (``StratifiedGroupKFold`` on patch labels grouped by patient)."""
    k = int(k)
    patients = df["patient"].nunique()
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got k={k}")
    if k > patients:
        raise ValueError(f"k={k} folds need at least {k} patients; the data has {patients}")
    fold = np.full(len(df), -1)
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, held) in enumerate(folds.split(df, df["label"], groups=df["patient"])):
        fold[held] = i
    out = df.assign(fold=fold)
    empty = sorted(set(range(k)) - set(fold))
    if empty:
        raise ValueError(f"k={k} folds left fold(s) {empty} without patients; use fewer folds")
    return out


def lockbox_folds(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``fold`` column: 0 for the lockbox patients (``selection.lockbox``), 1 for the
    development patients: ``run(..., folds="lockbox")`` trains on these and tests on fold 0 alone."""
    return df.assign(fold=np.where(selection.lockbox(df).to_numpy(), 0, 1))


def test_folds(folds) -> int:
    """How many folds ``run`` tests on: ``folds``, or 1 for ``"lockbox"``."""
    return 1 if folds == "lockbox" else int(folds)


def fold_split(folded: pd.DataFrame, fold: int, seed: int = 42, val: float = VAL_SHARE) -> pd.DataFrame:
    """The index with a ``split`` column for one fold: its patients are ``test``; of the others,
    ~``val`` are ``val`` (by patient, stratified, seeded by ``seed`` and the fold), the rest ``train``."""
    test = folded["fold"] == fold
    rest = folded[~test]
    if rest["patient"].nunique() < 2:
        raise ValueError(f"fold {fold} leaves {rest['patient'].nunique()} patient(s) for training and "
                         "validation; at least 2 are needed: use fewer folds")
    out = folded.copy()
    out["split"] = "test"
    out.loc[rest.index, "split"] = splits.split_by_patient(rest, val=val, test=0.0, seed=seed + fold)["split"]
    return out


def fold_parts(folded: pd.DataFrame, fold: int, seed: int, sample_size=None):
    """(the fold's split index, {split name: row numbers into the data})."""
    split = fold_split(folded, fold, seed)
    if sample_size:
        split = splits.sample(split, max_patches=int(sample_size), seed=seed)
    return split, {name: split.index[split["split"] == name].to_numpy() for name in ("train", "val", "test")}


def fold_counts(split: pd.DataFrame, at: dict) -> dict:
    """Patients, patches and IDC-positive patches of each part of a fold: ``train_patients``..."""
    return {**{f"{n}_patients": int(split.loc[at[n], "patient"].nunique()) for n in at},
            **{f"{n}_patches": len(at[n]) for n in at},
            **{f"{n}_positives": int(split.loc[at[n], "label"].sum()) for n in at}}


# --- data -------------------------------------------------------------------------------------

@dataclass
class LoadedData:
    """Every patch of a data directory in memory: the index and uint8 images in its row order."""

    data_dir: Path
    df: pd.DataFrame
    images: np.ndarray
    labels: np.ndarray
    slug: str
    generated: bool
    seconds: float = 0.0


def development(data: LoadedData) -> LoadedData:
    """``data`` without its lockbox patients (``selection.lockbox``), for choosing a recipe: the
    lockbox is scored once, after every choice. Its runs are stored apart (slug ``...-dev``)."""
    keep = ~selection.lockbox(data.df).to_numpy()
    return dataclasses.replace(data, df=data.df[keep].reset_index(drop=True), images=data.images[keep],
                               labels=data.labels[keep], slug=f"{data.slug}-dev")


def over_seeds(data: LoadedData, recipe, seeds, folds: int = 5, **options) -> pd.DataFrame:
    """Per (seed, fold) test scores of ``recipe`` cross-validated once per seed (folds and training
    seeds both follow it): the paired rows ``selection.forward_selection`` compares."""
    return pd.concat([run(data.data_dir, recipe, folds, seed, data=data, **options).per_fold.assign(seed=seed)
                      for seed in seeds], ignore_index=True)


def load(data_dir, out_dir=None) -> LoadedData:
    """Index ``data_dir`` (cached under ``out_dir/index``) and decode every patch once."""
    from ..config import is_generated
    from ..data import pipeline
    from ..data.cache import _slug, cached_index

    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist")
    start = time.perf_counter()
    df = cached_index(path, out_dir)[0].reset_index(drop=True)
    images, labels = pipeline.load_arrays(df)
    return LoadedData(path, df, images, labels, _slug(path), is_generated(path),
                      round(time.perf_counter() - start, 2))


def fold_views_frame(data: LoadedData, at: dict) -> pd.DataFrame:
    """A fold's validation then test patches (path, label, split): the rows of its ``views.csv``."""
    return pd.concat([data.df.loc[at[n], ["path", "label"]].assign(split=n) for n in ("val", "test")],
                     ignore_index=True)


def write_views(views: pd.DataFrame, fold_dir) -> pd.DataFrame:
    with atomic_path(Path(fold_dir) / "views.csv") as tmp:
        views.to_csv(tmp, index=False)
    return views


def fold_test_scores(data: LoadedData, at: dict, proba, threshold: float, fold_dir) -> dict:
    """The fold's test scores at ``threshold`` (its test predictions saved beside)."""
    scores = evaluate.scores(data.labels[at["test"]], proba, threshold)
    evaluate.save_predictions(data.df.loc[at["test"]], proba, Path(fold_dir) / "test_predictions.csv", "test")
    return {"test_positives": scores["positives"], **{m: scores[m] for m in REPORTED}}


# --- one cross-validation ---------------------------------------------------------------------

@dataclass
class CrossvalResult:
    recipe: Recipe
    per_fold: pd.DataFrame  # one row per fold: counts, scores, seconds
    summary: pd.DataFrame  # one row per metric: mean, sd, min, max
    out_dir: Path
    settings: dict = field(default_factory=dict)
    # the eight decisions' scores (:func:`decisions`), kept once computed: they depend only on the
    # folds' stored views, which every recipe scored from these models shares
    scored_decisions: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def history(self) -> pd.DataFrame:
        """Every epoch of every fold and member (train.fit's history.csv), for curves."""
        from ..train import read_history

        frames = [read_history(run).assign(recipe=self.recipe.name, fold=int(fold_dir.name[4:]),
                                           member=int(run.name[3:]))
                  for fold_dir in sorted(Path(self.out_dir).glob("fold*")) for run in sorted(fold_dir.glob("run*"))
                  if (run / "history.csv").is_file()]
        if not frames:
            return pd.DataFrame()
        history = pd.concat(frames, ignore_index=True)
        first = ["recipe", "fold", "member"]
        return history[first + [c for c in history.columns if c not in first]]

    def as_dict(self) -> dict:
        return {"recipe": self.recipe.as_dict(), **self.settings, "out_dir": str(self.out_dir),
                "per_fold": json.loads(self.per_fold.to_json(orient="records")),
                "mean": {m: _num(self.summary.loc[m, "mean"]) for m in self.summary.index},
                "sd": {m: _num(self.summary.loc[m, "sd"]) for m in self.summary.index},
                "seconds": {"cpu_total": round(float(self.per_fold["cpu_seconds"].sum()), 1),
                            "wall_total": round(float(self.per_fold["wall_seconds"].sum()), 1)}}

    def table(self) -> str:
        """Per-fold scores and seconds, then mean ± sd, as text."""
        cols = [*METRICS, "threshold", "test_patients", "test_patches", "cpu_seconds", "wall_seconds"]
        shown = self.per_fold.set_index("fold")[[c for c in cols if c in self.per_fold]]
        means = "  ".join(f"{m} {self.summary.loc[m, 'mean']:.3f} ± {self.summary.loc[m, 'sd']:.3f}"
                          for m in METRICS)
        total = self.per_fold[["cpu_seconds", "wall_seconds"]].sum()
        resumed = int(self.per_fold["resumed"].sum()) if "resumed" in self.per_fold else 0
        return (f"{self.recipe.name} (v{self.recipe.version}), {len(shown)} folds by patient:\n"
                f"{shown.to_string(float_format=lambda v: f'{v:.3f}')}\nmean ± sd: {means}\n"
                f"seconds: cpu {total['cpu_seconds']:.0f}, wall {total['wall_seconds']:.0f} in total"
                + (f" (at least: {resumed} fold(s) resumed, counted from the resume)" if resumed else ""))

    @classmethod
    def from_rows(cls, recipe: Recipe, rows, out_dir, settings: dict, **more) -> CrossvalResult:
        per_fold = pd.DataFrame(rows)
        return cls(recipe, per_fold, summarise(per_fold), Path(out_dir), settings, **more)

    def save_summary(self, root=None, **replaced) -> CrossvalResult:
        """Write ``summary.json`` (``as_dict`` with ``replaced`` keys) and ``summary.txt`` to ``root``."""
        root = Path(root or self.out_dir)
        write_text(root / "summary.json", json.dumps({**self.as_dict(), **replaced}, indent=2, default=float))
        write_text(root / "summary.txt", self.table() + "\n")
        return self


def _num(v):
    return None if pd.isna(v) else round(float(v), 4)


def summarise(per_fold: pd.DataFrame, metrics=REPORTED) -> pd.DataFrame:
    """Mean, standard deviation (over folds, ddof=1), min and max of each metric."""
    cols = [m for m in (*metrics, "epochs_run", "cpu_seconds", "wall_seconds") if m in per_fold]
    data = per_fold[cols].astype(float)
    return pd.DataFrame({"mean": data.mean(), "sd": data.std(ddof=1), "min": data.min(), "max": data.max()})


def _fingerprint(recipe, data: LoadedData, folds, seed, sample_size) -> str:
    return runs.fingerprint({"recipe": recipe.as_dict(), "data": data.slug, "patches": len(data.labels),
                             "positives": int(data.labels.sum()), "folds": folds, "seed": seed,
                             "sample_size": sample_size}, length=16)


def run_dir(out_dir, recipe, data: LoadedData, folds: int, seed: int, sample_size=None, epochs: bool = True) -> Path:
    """Where the folds of this cross-validation are stored (``epochs=False``: the colour baseline's)."""
    from ..config import ROOT

    tail = (f"{data.slug}-k{folds}-s{seed}" + (f"-e{recipe.epochs}" if epochs else "")
            + (f"-n{sample_size}" if sample_size else ""))
    return Path(out_dir or ROOT / "outputs") / "crossval" / f"{recipe.name}-v{recipe.version}" / tail


def run(data_dir, recipe, folds: int = 5, seed: int = 42, out_dir=None, epochs=None, sample_size=None,
        *, data: LoadedData | None = None, verbose: int = 2, log=_stderr, keep_models: bool = False,
        reuse: bool = True) -> CrossvalResult:
    """Cross-validate ``recipe`` (a name such as "original+tta", or a Recipe) over ``folds`` folds of
    the patients of ``data_dir`` (or ``data``, from :func:`load`); ``sample_size`` caps each fold's
    patches. Model files (~10 MB each) are kept only with ``keep_models``. With ``reuse``, a recipe
    that differs from one cross-validated before on these folds only in its decision is scored from
    that run's views (:func:`trained_alike`), and an ensemble takes its member 0 from the kept
    models of its one-member recipe (:func:`first_member_donor`)."""
    recipe = get_recipe(recipe, epochs=epochs)
    data = data or load(data_dir, out_dir)
    folded = lockbox_folds(data.df) if folds == "lockbox" else patient_folds(data.df, folds, seed)
    root = run_dir(out_dir, recipe, data, folds, seed, sample_size)
    key = _fingerprint(recipe, data, folds, seed, sample_size)
    log = log or (lambda message: None)
    scored = test_folds(folds)
    rows = [_done(root / f"fold{i}", key) for i in range(scored)]
    donor = trained_alike(recipe, data, folds, seed, out_dir, sample_size) if reuse and not any(rows) else None
    if donor is not None:
        log(f"{recipe.name} is trained as {donor.recipe.name} (v{donor.recipe.version}); only its decision differs: "
            f"scored from that run's folds ({donor.out_dir}), no training")
        return decided(donor, recipe, data).save_summary(root)
    first = first_member_donor(recipe, data, folds, seed, out_dir, sample_size) if reuse else None
    use = (f"each fold capped at {int(sample_size):,} of its {len(data.labels):,} patches, spread over its splits "
           "by patient") if sample_size else f"each fold uses all of its patches ({len(data.labels):,} usable in all)"
    held = folded.loc[folded["fold"] == 0, "patient"].nunique()
    log(f"{folds} folds of the {data.df['patient'].nunique()} patients of {data.data_dir}: {use}" if folds != "lockbox"
        else f"the lockbox's {held} patients of {data.data_dir}, scored once by a recipe trained on the other "
             f"{data.df['patient'].nunique() - held}: {use}")
    for i in range(scored):
        fold_dir = root / f"fold{i}"
        if rows[i] is not None:
            log(f"fold {i + 1}/{scored}: done before, skipped ({fold_dir})")
            continue
        with runs.claimed(fold_dir):  # a second process would resume this fold under this one's feet
            # a fold begun by an earlier process: its seconds before the interruption are not known here
            resumed = (fold_dir / "started.json").exists()
            copied = first is not None and _take_first_member(first, fold_dir, log)
            start, cpu = time.perf_counter(), time.process_time()
            split, at = fold_parts(folded, i, seed, sample_size)
            patients = {n: data.df.loc[at[n], "patient"].to_numpy() for n in at}
            log(f"fold {i + 1}/{scored}: training {recipe.name} on {len(at['train'])} patches "
                f"({len(set(patients['train']))} patients), validation {len(at['val'])}, "
                f"test {len(at['test'])} ({len(set(patients['test']))} patients)"
                + (f"; learns from {recipe.train_share:g} of its training {recipe.train_subset}"
                   if recipe.train_share < 1 else "") + f":\n{splits.counts_table(split)}")
            predictor = train_recipe(recipe, (data.images[at["train"]], data.labels[at["train"]]),
                                     (data.images[at["val"]], data.labels[at["val"]]), fold_dir,
                                     seed=seed + 1000 * i, cache_dir=root.parents[1], verbose=verbose, log=log,
                                     pretrain_seed=seed, val_patients=patients["val"], train_patients=patients["train"])
            views = score_views(predictor, data, at, fold_dir)
            test = (views["split"] == "test").to_numpy()
            proba = decision_proba(views, predictor.tta, recipe.context, predictor.context)[test]
            stain_run = predictor.info.get("stain_run", {})
            rows[i] = {"fold": i, **fold_counts(split, at),
                       # training: what the model learnt from, after the recipe's train_share
                       **{f"train_{n}": predictor.info[f"train_{n}"] for n in ("patients", "patches")},
                       **fold_test_scores(data, at, proba, predictor.threshold, fold_dir),
                       "epochs_run": float(np.mean([meta.get("epochs_run", np.nan) for _, meta in predictor.members])),
                       "stain_seconds": stain_run.get("seconds", 0.0),
                       "stain_fallbacks": stain_run.get("fallbacks", 0) + predictor.last_fallbacks,
                       "cpu_seconds": round(time.process_time() - cpu, 1),  # this run's, not a copied member's
                       "members_copied": int(copied),
                       "resumed": int(resumed),  # then the seconds are this process's part only
                       "wall_seconds": round(time.perf_counter() - start, 1)}
            runs.write_record(fold_dir / "done.json", key, {"row": rows[i]})
            if not keep_models:
                for _, meta in predictor.members:
                    (fold_dir / meta["file"]).unlink(missing_ok=True)
            log(f"fold {i + 1}/{scored}: " + ", ".join(f"{m} {rows[i][m]:.3f}" for m in METRICS)
                + f" ({rows[i]['wall_seconds']:.0f} s" + (", resumed: this process's part" if resumed else "") + ")")
        del predictor
        _release()
    settings = {"data_dir": str(data.data_dir), "generated": data.generated, "folds": folds, "seed": seed,
                "epochs": recipe.epochs, "sample_size": sample_size}
    return CrossvalResult.from_rows(recipe, rows, root, settings).save_summary()


def _stored_run(recipe: Recipe, data: LoadedData, folds: int, seed: int, out_dir, sample_size, fold_file: str):
    """(folder, recipe, per-fold rows, settings) of the first finished cross-validation on the same
    folds of another recipe trained as ``recipe`` is, every fold of which holds ``fold_file``; or None."""
    root = run_dir(out_dir, recipe, data, folds, seed, sample_size)
    for summary in sorted(root.parents[1].glob(f"*/{root.name}/summary.json")):
        folder = summary.parent
        try:
            doc = json.loads(summary.read_text())
            other = Recipe.from_dict(doc["recipe"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a cross-validation summary this version can read
        # a run scored from another ("scored_from") trained nothing of its own
        if folder == root or "scored_from" in doc or other.training_options != recipe.training_options:
            continue
        rows = [_done(folder / f"fold{i}", _fingerprint(other, data, folds, seed, sample_size))
                for i in range(test_folds(folds))]
        if all(row is not None and (folder / f"fold{i}" / fold_file).is_file() for i, row in enumerate(rows)):
            kept = ("data_dir", "generated", "folds", "seed", "epochs", "sample_size")
            return folder, other, rows, {k: doc[k] for k in kept if k in doc}
    return None


def trained_alike(recipe, data: LoadedData, folds: int, seed: int, out_dir=None,
                  sample_size=None) -> CrossvalResult | None:
    """A finished cross-validation on the same folds of a recipe trained as ``recipe`` is, with views."""
    found = _stored_run(get_recipe(recipe), data, folds, seed, out_dir, sample_size, "views.csv")
    return None if found is None else CrossvalResult.from_rows(found[1], found[2], found[0], found[3])


def first_member_donor(recipe, data: LoadedData, folds: int, seed: int, out_dir=None, sample_size=None) -> Path | None:
    """For an ensemble recipe, the folder of a finished cross-validation on the same folds of its
    one-member recipe that kept its models: they are, seed for seed, the ensemble's member 0."""
    recipe = get_recipe(recipe)
    if recipe.ensemble < 2 or recipe.members()[0] != recipe.model:
        return None
    single = dataclasses.replace(recipe, ensemble=1, ensemble_models=())
    found = _stored_run(single, data, folds, seed, out_dir, sample_size, "model.keras")
    return None if found is None else found[0]


def _take_first_member(donor: Path, fold_dir: Path, log) -> bool:
    """Copy the donor run's model of this fold (and its training log) in as member 0 of a fresh
    ensemble fold, so that ``recipe.train`` loads it instead of training it; whether it did."""
    if (fold_dir / "started.json").exists() or (fold_dir / "member0.keras").exists():
        return False  # begun before: recipe.train resumes it as it stands
    if (donor / fold_dir.name / "run0").is_dir():
        shutil.copytree(donor / fold_dir.name / "run0", fold_dir / "run0", dirs_exist_ok=True)
    with atomic_path(fold_dir / "member0.keras") as tmp:
        shutil.copy2(donor / fold_dir.name / "model.keras", tmp)
    log(f"{fold_dir.name}: member 0 is the model of {donor.parent.name}'s {fold_dir.name} "
        f"(same options, seed and patients): copied, not trained again")
    return True


def score_views(predictor: Predictor, data: LoadedData, at: dict, fold_dir) -> pd.DataFrame:
    """A fold's ``views.csv``: P(IDC) of each validation and test patch from one view (``single``) and
    over the 8 dihedral views (``tta``), whatever the recipe's decision: every decision is scored."""
    from ..data import stain

    views = fold_views_frame(data, at)
    done = stain.normalize(data.images[np.concatenate([at["val"], at["test"]])], predictor.stain)
    predictor.last_fallbacks = done.fallbacks
    views["single"], views["tta"] = predictor.predict_both(done.images, normalized=True)
    return write_views(views, fold_dir)


def _done(fold_dir: Path, key: str) -> dict | None:
    saved = runs.read_record(fold_dir / "done.json", key)
    return None if saved is None else saved["row"]


def _release():
    """Free the fold's models: a long cross-validation should not grow in memory."""
    import keras

    keras.backend.clear_session()
    gc.collect()


# --- decisions: a trained fold's views scored under each threshold rule, TTA and context ------

def decision_name(threshold: str, tta: bool, context: str = "none") -> str:
    return (f"{'threshold on validation' if threshold == 'validation' else 'threshold 0.5'}, "
            f"{'TTA' if tta else 'one view'}" + (", slide context" if context == "slide" else ""))


def decision_proba(views: pd.DataFrame, tta: bool, context: str = "none", fitted: dict | None = None) -> np.ndarray:
    """P(IDC) of each row of a fold's views under a decision: one view or the TTA mean, with slide
    ``context`` fitted on the fold's validation rows, or ``fitted`` (the saved predictor's)."""
    from . import context as slide

    proba = views["tta" if tta else "single"].to_numpy(dtype=float)
    if context == "none":
        return proba
    if context != "slide":
        raise ValueError(f"unknown context {context!r}: 'none' or 'slide'")
    patients = slide.patients_of(views["path"])
    if fitted is None:
        val = (views["split"] == "val").to_numpy()
        fitted = slide.fit(proba[val], patients[val], views["label"].to_numpy()[val])
    return slide.apply(fitted, proba, patients)


def _decide(views: pd.DataFrame, threshold: str, tta: bool, context: str = "none") -> dict:
    """The test scores of one fold's views under one decision: the cut at 0.5 ("fixed") or the
    F1-best one on the fold's validation patients ("validation"), never on its test patients."""
    proba = decision_proba(views, tta, context)
    val, test = (views["split"] == "val").to_numpy(), (views["split"] == "test").to_numpy()
    labels = views["label"].to_numpy()
    cut = 0.5 if threshold == "fixed" else evaluate.choose_threshold(labels[val], proba[val])
    scores = evaluate.scores(labels[test], proba[test], cut)
    return {m: scores[m] for m in REPORTED}


def fold_views(result: CrossvalResult, data: LoadedData | None = None) -> dict[int, pd.DataFrame]:
    """Each fold's ``views.csv``. A fold trained before views were kept is scored now from its kept
    models (``keep_models``; ``data`` is then loaded if not given)."""
    out, folded, s = {}, None, result.settings
    for fold in sorted(result.per_fold["fold"]):
        fold_dir = Path(result.out_dir) / f"fold{fold}"
        if (fold_dir / "views.csv").is_file():
            out[fold] = pd.read_csv(fold_dir / "views.csv")
            continue
        try:
            predictor = Predictor.load(fold_dir)
        except (FileNotFoundError, ValueError) as err:
            raise FileNotFoundError(f"{fold_dir}: no views.csv, and no kept models to score it from ({err}); "
                                    "this fold was trained by an older version: delete its done.json to train it "
                                    "again (with keep_models to keep the models)") from None
        data = data or load(s["data_dir"])
        folded = folded if folded is not None else patient_folds(data.df, s["folds"], s["seed"])
        out[fold] = score_views(predictor, data, fold_parts(folded, fold, s["seed"], s.get("sample_size"))[1], fold_dir)
        del predictor
        _release()
    return out


def decisions(result: CrossvalResult, data: LoadedData | None = None) -> pd.DataFrame:
    """The test scores of a cross-validation's models under each of ``DECISIONS``, a row per fold and decision."""
    if result.scored_decisions is None:
        result.scored_decisions = pd.DataFrame([
            {"fold": fold, "decision": decision_name(threshold, tta, context), "threshold_rule": threshold,
             "tta": tta, "context": context, **_decide(views, threshold, tta, context)}
            for fold, views in fold_views(result, data).items() for threshold, tta, context in DECISIONS])
    return result.scored_decisions.copy()


def decision_table(result: CrossvalResult, data: LoadedData | None = None) -> pd.DataFrame:
    """:func:`decisions` as one row per decision: mean and sd over folds, and the paired
    difference from threshold 0.5 with one view, patch alone (the decision of ``original``)."""
    per = decisions(result, data)
    ref = per[per["decision"] == decision_name("fixed", False)].set_index("fold")
    rows = {name: paired(group.set_index("fold"), ref) for name, group in per.groupby("decision", sort=False)}
    return pd.DataFrame(rows).T.rename_axis(f"{result.recipe.name}: decision")


def decided(result: CrossvalResult, recipe: Recipe, data: LoadedData | None = None) -> CrossvalResult:
    """The cross-validation of ``recipe``, which differs from ``result``'s only in its decision:
    ``result``'s models scored from the stored views, no training. Its seconds are the training's."""
    if recipe.training_options != result.recipe.training_options:
        raise ValueError(f"recipe {recipe.name!r} differs from {result.recipe.name!r} in more than the decision "
                         f"({', '.join(DECISION_OPTIONS)}); it has to be trained")
    per = decisions(result, data)
    name = decision_name(recipe.threshold, recipe.tta, recipe.context)
    chosen = per[per["decision"] == name].set_index("fold")[list(REPORTED)]
    rows = result.per_fold.set_index("fold").drop(columns=list(REPORTED), errors="ignore").join(chosen).reset_index()
    settings = {**result.settings, "scored_from": result.recipe.name}
    return CrossvalResult.from_rows(recipe, rows, result.out_dir, settings, scored_decisions=result.scored_decisions)


def test_proba(result: CrossvalResult, fold: int) -> pd.DataFrame:
    """A fold's test patches (path, label, proba) as ``result``'s recipe decides them."""
    fold_dir = Path(result.out_dir) / f"fold{fold}"
    if "scored_from" not in result.settings:
        return pd.read_csv(fold_dir / "test_predictions.csv")
    views = pd.read_csv(fold_dir / "views.csv")
    test = (views["split"] == "test").to_numpy()
    proba = decision_proba(views, result.recipe.tta, result.recipe.context)[test]
    return views.loc[test, ["path", "label"]].reset_index(drop=True).assign(proba=proba)


def view_ensemble(results, out_dir=None, name: str | None = None, threshold: str = "validation",
                  tta: bool = True, data: LoadedData | None = None, context: str = "none") -> CrossvalResult:
    """An ensemble of cross-validated recipes that costs no training: on each fold they share, the
    mean of their views (written to ``out_dir``, default ``crossval/ensembles/<name>/``), decided as
    ``threshold``, ``tta`` and ``context`` say. Its seconds are its members' training together."""
    if len(results) < 2:
        raise ValueError("an ensemble needs at least two cross-validated recipes")
    if threshold not in ("fixed", "validation"):
        raise ValueError(f"unknown threshold rule {threshold!r}: 'fixed' (0.5) or 'validation'")
    names = [r.recipe.name for r in results]
    shared = sorted(set.intersection(*(set(r.per_fold["fold"]) for r in results)))
    if not shared:
        raise ValueError(f"the recipes {', '.join(names)} share no finished fold")
    name = name or " & ".join(names)
    if out_dir is None:
        first_dir = Path(results[0].out_dir)
        out_dir = first_dir.parents[1] / "ensembles" / re.sub(r"[^\w+.-]+", "_", name) / first_dir.name
    views = [fold_views(r, data) for r in results]
    # a member decided from another member's run (crossval.decided) shares its folder and its seconds
    spent = {Path(r.out_dir).resolve(): r.per_fold.set_index("fold") for r in results}
    rows = []
    for fold in shared:
        first = views[0][fold]
        key = _patch_keys(first, results[0])
        for member, r, v in zip(names[1:], results[1:], views[1:]):
            if not _patch_keys(v[fold], r).equals(key) or not v[fold]["split"].equals(first["split"]):
                raise ValueError(f"fold {fold}: {member}'s validation or test patches differ from {names[0]}'s; "
                                 "an ensemble needs the same folds (data, folds and seed)")
        mean = first[["path", "label", "split"]].copy()
        for column in ("single", "tta"):
            mean[column] = np.mean([v[fold][column].to_numpy() for v in views], axis=0)
        write_views(mean, Path(out_dir) / f"fold{fold}")
        seconds = {k: float(sum(run.loc[fold, k] for run in spent.values())) for k in ("cpu_seconds", "wall_seconds")}
        rows.append({"fold": fold, **_decide(mean, threshold, tta, context), **seconds})
    recipe = dataclasses.replace(results[0].recipe, name=name, threshold=threshold, tta=tta, context=context)
    return CrossvalResult.from_rows(recipe, rows, out_dir,
                                    {**results[0].settings, "scored_from": " & ".join(names), "members": names})


def _patch_keys(frame: pd.DataFrame, result: CrossvalResult) -> pd.Series:
    """The patches' paths relative to the result's data folder: ``../data/x`` and its absolute path are one set."""
    root = result.settings.get("data_dir")
    return frame["path"].map(lambda p: os.path.relpath(p, root)) if root else frame["path"]


# --- paired comparisons of results on the same folds ------------------------------------------

def paired(folds: pd.DataFrame, ref: pd.DataFrame) -> dict:
    """Mean and sd over folds of each metric, and of its per-fold difference from ``ref`` (both
    indexed by fold; folds missing from either are left out of the difference)."""
    row = {}
    for m in METRICS:
        diff = (folds[m] - ref[m]).dropna()
        row.update({m: folds[m].mean(), f"{m}_sd": folds[m].std(ddof=1),
                    f"{m}_diff": diff.mean(), f"{m}_diff_sd": diff.std(ddof=1)})
    return row


def compare(results, base: int = 0) -> pd.DataFrame:
    """:func:`paired` per result against ``results[base]``, and its mean CPU seconds per fold."""
    folds = [r.per_fold.set_index("fold") for r in results]
    return pd.DataFrame({r.recipe.name: {**paired(f, folds[base]), "cpu_seconds": f["cpu_seconds"].mean()}
                         for r, f in zip(results, folds)}).T


def run_shares(data_dir, recipe, shares, subset: str = "patches", folds: int = 5, seed: int = 42, out_dir=None,
               epochs=None, sample_size=None, *, data: LoadedData | None = None, **run_options) -> list[CrossvalResult]:
    """The runs of a :func:`learning_curve`: ``recipe`` on each of ``shares`` of every fold's training
    split (by ``subset``: "patches" or "patients"), smallest first, then on all. A bad share fails first."""
    whole = get_recipe(recipe, epochs=epochs)
    chosen = [get_recipe(whole, train_share=share, train_subset=subset) for share in sorted(set(shares) - {1.0})]
    data = data or load(data_dir, out_dir)
    return [run(data_dir, r, folds, seed, out_dir, sample_size=sample_size, data=data, **run_options)
            for r in [*chosen, whole]]


def learning_curve(results) -> pd.DataFrame:
    """One row per share of the training split: what a fold learnt from, each metric's mean and sd,
    and the paired difference from the run on the whole training split (among ``results``)."""
    whole = [i for i, r in enumerate(results) if r.recipe.train_share == 1]
    if not whole:
        raise ValueError("a learning curve needs the run on the whole training split (train_share 1) "
                         f"among its runs; got shares {[r.recipe.train_share for r in results]}")
    table = compare(results, base=whole[0])
    table.insert(0, "train_subset", [r.recipe.train_subset if r.recipe.train_share < 1 else "all" for r in results])
    table.insert(1, "train_share", [r.recipe.train_share for r in results])
    for i, column in enumerate(("train_patches", "train_patients"), start=2):
        table.insert(i, column, [r.per_fold[column].mean() for r in results])
    return table.sort_values(["train_subset", "train_share"])


def registry_rows(results, notebook_split: str) -> list[dict]:
    """One registry row per cross-validated recipe: its mean scores over folds (task
    ``idc_crossval``, so notebook 14's single-split comparison leaves them out)."""
    return [{"run": f"crossval_{r.recipe.name}_v{r.recipe.version}", "model": r.settings.get("model", r.recipe.model),
             "task": "idc_crossval", "scored_on": notebook_split, "folds": len(r.per_fold),
             **{m: round(float(r.per_fold[m].mean()), 4) for m in METRICS},
             **{f"{m}_sd": round(float(r.per_fold[m].std(ddof=1)), 4) for m in METRICS},
             "train_seconds": round(float(r.per_fold["wall_seconds"].sum()), 1),
             "settings": json.dumps(r.settings if "model" in r.settings else r.recipe.as_dict(), default=str)}
            for r in results]
