"""Studies: runs that differ in one thing only, on the same split, seeds and epochs.

``run_study`` trains each ``Variant`` once per seed on one patient split, scores it (threshold chosen
on validation), collects every epoch into one long history table and writes one registry row per
run. A finished run is read back on a rerun with the same settings; an interrupted one resumes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import evaluate, models, results, runs, train
from ..io import write_text
from . import experiment


@dataclass
class Variant:
    """One arm of a study: what differs from the other arms, and nothing else."""

    name: str
    model: str = "cancernet"
    build: dict = field(default_factory=dict)  # keywords of models.build_model
    training: train.Training = train.Training()
    image_size: int | None = None  # None: the model's own input size
    augment: str = "none"  # a name of helpers.data.augment.AUGMENTATIONS


@dataclass
class Study:
    runs: pd.DataFrame  # one row per (variant, seed): the registry rows
    history: pd.DataFrame  # long: variant, seed, epoch, metric, split, value
    split_note: str

    def summary(self, columns=("val_f1", "val_balanced_accuracy", "f1", "balanced_accuracy",
                               "roc_auc", "gap")) -> pd.DataFrame:
        """Mean and standard deviation over seeds, one row per variant, in study order."""
        cols = [c for c in columns if c in self.runs]
        grouped = self.runs.groupby("variant", sort=False)
        table = grouped[cols].mean().round(3)
        if self.runs["seed"].nunique() > 1:
            table = table.join(grouped[cols].std().round(3).add_suffix("_sd"))
        extra = grouped[["params", "images_per_s", "epochs_run"]].mean().round(0).astype("Int64")
        return table.join(extra).loc[list(dict.fromkeys(self.runs["variant"]))]

    def with_arm(self, other: Study, variant: str, name: str, first: bool = False) -> Study:
        """This study with ``variant`` of ``other`` as one more arm named ``name`` (first or last):
        an arm two studies share is trained once."""
        def joined(mine, theirs):
            arm = theirs[theirs["variant"] == variant].assign(variant=name)
            return pd.concat([arm, mine] if first else [mine, arm], ignore_index=True)

        return Study(joined(self.runs, other.runs), joined(self.history, other.history), self.split_note)


def long_history(history: pd.DataFrame, variant: str, seed: int) -> pd.DataFrame:
    """A run's history (one column per metric, ``val_`` for validation) as long rows."""
    long = history.melt(id_vars="epoch", var_name="column")
    validation = long["column"].str.startswith("val_")
    return pd.DataFrame({"variant": variant, "seed": seed, "epoch": long["epoch"] + 1,
                         "metric": long["column"].str.removeprefix("val_"),
                         "split": np.where(validation, "validation", "training"), "value": long["value"]})


def run_study(cfg, study: str, notebook: str, variants: list[Variant], seeds=None, prepare=None) -> Study:
    """Train every variant once per seed on one patient split; record every run.

    ``seeds`` default to the profile's count (``cfg.seeds``) from ``cfg.seed``; the split always
    uses ``cfg.seed``, so only the training differs by seed. ``prepare(image_size, augment) ->
    experiment.Data`` replaces the IDC data (the thyroid track's); ``Data.extra["build"]`` adds
    keywords to every build and ``Data.extra["key"]`` tells its data apart in the fingerprint.
    """
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    seeds = list(seeds) if seeds is not None else cfg.training_seeds()
    data_cache: dict = {}
    rows, histories, split_note = [], [], ""
    for variant in variants:
        size = models.input_size(variant.model, variant.image_size)
        key = (size, variant.model if models.preprocess_for(variant.model) else None, variant.augment)
        if key not in data_cache:
            data_cache[key] = prepare(size, variant.augment) if prepare is not None else experiment.prepare_data(
                cfg, variant.model, size, augment=variant.augment)
        data = data_cache[key]
        split_note = data.split_note
        for seed in seeds:
            row, history = _run_once(cfg, study, variant, seed, data)
            rows.append(row)
            histories.append(long_history(history, variant.name, seed))
    scored_on = rows[0]["scored_on"] if rows else "val"
    results.record(cfg, notebook, rows, split=f"{scored_on} split, {split_note}")
    return Study(pd.DataFrame(rows), pd.concat(histories, ignore_index=True), split_note)


def _run_dir(output_dir, study: str, variant: str, seed: int) -> Path:
    return Path(output_dir) / "runs" / study / f"{variant}_seed{seed}"


def _run_once(cfg, study, variant, seed, data):
    run = f"{study}_{variant.name}_seed{seed}"
    run_dir = _run_dir(cfg.output_dir, study, variant.name, seed)
    done = run_dir / "done.json"
    fingerprint = experiment.run_key(cfg, variant.training, split_seed=cfg.seed, seed=seed,
                                     data_key=data.extra.get("key", ""), name=variant.name, model=variant.model,
                                     build=variant.build, image_size=variant.image_size, augment=variant.augment)
    saved = runs.read_record(done, fingerprint)
    if saved is not None:
        print(f"{run}: finished earlier with these settings, read back")
        return saved["row"], train.read_history(run_dir)
    print(f"{run}: training")
    model = models.build_model(variant.model, image_size=data.image_size, seed=seed,
                               **{**data.extra.get("build", {}), **variant.build})
    result = experiment.train_on(model, data, run_dir, variant.training, epochs=cfg.epochs, seed=seed,
                                 name=variant.name, key=fingerprint)
    best = result.best_model(model)
    assessment = experiment.assess(best, data)
    history = result.history
    params = {"study": study, "variant": variant.name, "seed": seed, "image_size": data.image_size,
              "augment": variant.augment, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
              "settings": json.dumps({"build": variant.build, "training": asdict(variant.training)}, default=str)}
    row = experiment.registry_row(run, variant.model, result, assessment, params,
                                  models.count_params(model)["total"])
    last = history.iloc[-1]  # the gap: how much the run overfits at its last epoch
    row.update(task=data.extra.get("task", "idc"), gap=round(float(last["accuracy"] - last["val_accuracy"]), 4),
               max_val_loss=float(np.nanmax(history["val_loss"])) if "val_loss" in history else None)
    experiment.save_model(best, run_dir / "best.keras")
    if assessment["test"] is not None:  # read back by test_predictions: no model reload for a ROC curve
        evaluate.save_predictions(data.part("test"), assessment["pred"]["test"], run_dir / "test_predictions.csv",
                                  "test")
    # The sidecar tells the web app (and evaluate) what the saved model expects.
    sidecar = {"model": variant.model, "image_size": data.image_size, "threshold": row["threshold"],
               "task": row["task"], "class_names": data.extra.get("class_names"),
               "generated": bool(cfg.generated), "run": run}
    write_text(run_dir / "best.json", json.dumps({k: v for k, v in sidecar.items() if v is not None}, indent=2))
    runs.write_record(done, fingerprint, {"row": row})
    return row, history


def run_path(study: Study, variant: str, output_dir) -> Path:
    """The folder of a variant's first-seed run (where ``_run_once`` keeps its files)."""
    row = study.runs[study.runs["variant"] == variant].iloc[0]
    return _run_dir(output_dir, row["study"], variant, int(row["seed"]))


def test_predictions(study: Study, variant: str, output_dir) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of a variant's first seed on the test split, as its run saved them."""
    path = run_path(study, variant, output_dir) / "test_predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no test predictions at {path}: was the study run with a test split?")
    table = pd.read_csv(path)
    return table["label"].to_numpy(), table["proba"].to_numpy()
