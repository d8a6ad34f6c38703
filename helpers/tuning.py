"""Hyperparameter search with keras-tuner over the models of the registry.

Two searches, as in the seed project: a random search over batch size and
learning rate for CancerNet (it found Adadelta batch 128 lr 0.00396 and Adagrad
batch 64 lr 0.0282), and a Bayesian optimisation over ``fine_tune_at`` and the
learning rate of a pretrained model (on a BreakHis-pretrained CancerNet it found
fine_tune_at 5, lr 0.0346). Then the trials as a table and a plot, and the best
configuration, ready to retrain with.

The tuner keeps its state in ``<output_dir>/tuner/<name>/``: run the same search
again and it resumes. Finished trials are not run again, an interrupted trial
runs again, and a larger ``max_trials`` adds only the missing trials.

Batch size as a hyperparameter: ``prepare_data`` bakes its batch size into the
pipelines, so ``RegistryHyperModel.fit`` unbatches the training pipeline and
batches it again with the trial's batch size. tf.data's ``unbatch`` sits after
the pipeline's cache and shuffle, so one pipeline serves every batch size and
the patches are decoded once per search, not once per trial.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import keras_tuner
import numpy as np
import pandas as pd

from . import models, train
from .io import write_text

TUNERS = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization}
DONE = "COMPLETED"


class TuningError(RuntimeError):
    """A search that produced no usable trial, or a project that cannot be resumed."""


def _choice(hp, name, values):
    """A Choice over several values; Fixed for one, so it still shows in the table."""
    values = list(values)
    return hp.Choice(name, values) if len(values) > 1 else hp.Fixed(name, values[0])


class RegistryHyperModel(keras_tuner.HyperModel):
    """A compiled model of ``helpers.models`` whose training settings are hyperparameters.

    learning_rate  (low, high): sampled log-uniformly, as a rate's effect scales
                   with its order of magnitude.
    optimizers     names for ``train.make_optimizer``; one name is fixed, not tuned.
    batch_sizes    batch sizes to choose from; one value is fixed, not tuned.
    fine_tune_at   None: the model's default freezing. (low, high): an Int range of
                   layers to freeze; a list: a Choice among those counts.
    weights        for ``build_model``: None (random init) or a path to a weights file.

    ``fit`` takes the training pipeline batched or not and batches it with the
    trial's batch size (see the module's docstring); the validation pipeline is
    used as given, since its batch size changes no score.
    """

    def __init__(self, model_name="cancernet", *, image_size=None, weights=None,
                 learning_rate=(1e-4, 1e-1), optimizers=("adam",), batch_sizes=(64,),
                 fine_tune_at=None, seed=42, objective="val_auc", verbose=1):
        super().__init__(name=model_name)
        models.input_size(model_name)  # an unknown model fails here, not in every trial
        self.model_name, self.image_size, self.weights = model_name, image_size, weights
        self.learning_rate = _check_range(learning_rate)
        self.optimizers = _check_optimizers(optimizers)
        self.batch_sizes = _check_batch_sizes(batch_sizes)
        self.fine_tune_at = _check_fine_tune_at(fine_tune_at)
        self.seed, self.objective, self.verbose = seed, objective, verbose

    def describe(self) -> dict:
        """The search space and model, as plain values (kept beside the tuner's state)."""
        return {"model": self.model_name, "image_size": self.image_size,
                "weights": None if self.weights is None else str(self.weights),
                "learning_rate": list(self.learning_rate), "optimizers": self.optimizers,
                "batch_sizes": self.batch_sizes, "fine_tune_at": self.fine_tune_at, "seed": self.seed}

    @property
    def dimensions(self) -> int:
        """How many hyperparameters are tuned (a fixed one is not)."""
        return (1 + (len(self.optimizers) > 1) + (len(self.batch_sizes) > 1)
                + (self.fine_tune_at is not None))

    def _space(self, hp) -> dict:
        # Declared in build and read again in fit: every value is sampled before the
        # first build, so even the first trial draws its batch size at random.
        values = {
            "learning_rate": hp.Float("learning_rate", *self.learning_rate, sampling="log"),
            "optimizer": _choice(hp, "optimizer", self.optimizers),
            "batch_size": _choice(hp, "batch_size", self.batch_sizes),
        }
        if isinstance(self.fine_tune_at, tuple):
            values["fine_tune_at"] = hp.Int("fine_tune_at", *self.fine_tune_at)
        elif self.fine_tune_at is not None:
            values["fine_tune_at"] = hp.Choice("fine_tune_at", self.fine_tune_at)
        return values

    def build(self, hp):
        import keras

        values = self._space(hp)
        keras.utils.set_random_seed(self.seed)  # trials differ by their hyperparameters only
        model = models.build_model(self.model_name, image_size=self.image_size, weights=self.weights,
                                   fine_tune_at=values.get("fine_tune_at"))
        return train.compile_model(model, values["optimizer"], values["learning_rate"])

    def fit(self, hp, model, train_ds, *args, **kwargs):
        import tensorflow as tf

        values = self._space(hp)
        if train_ds.element_spec[0].shape.rank == 4:  # already batched
            train_ds = train_ds.unbatch()
        batches = train_ds.batch(values["batch_size"]).prefetch(tf.data.AUTOTUNE)
        start = time.perf_counter()
        history = model.fit(batches, *args, shuffle=False, **kwargs)  # the pipeline shuffles
        if self.verbose:
            best = (min if _direction(self.objective) == "min" else max)(
                history.history.get(self.objective, [math.nan]))
            print(f"{_format(values)} -> best {self.objective} {best:.4f} "
                  f"({time.perf_counter() - start:.0f} s)")
        return history


def _direction(objective: str) -> str:
    return "min" if "loss" in objective else "max"


def _format(values: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


# --- checks: one clear error naming the bad value -----------------------------

def _check_range(learning_rate):
    low, high = (float(v) for v in learning_rate)
    if not 0 < low < high:
        raise ValueError(f"learning_rate must be a range (low, high) with 0 < low < high, got {learning_rate}")
    return low, high


def _check_optimizers(optimizers):
    names = [optimizers] if isinstance(optimizers, str) else list(optimizers)
    unknown = [n for n in names if n.lower() not in train.OPTIMIZERS]
    if not names or unknown:
        raise ValueError(f"unknown optimizer(s) {unknown or names}; choose among {sorted(train.OPTIMIZERS)}")
    return names


def _check_batch_sizes(batch_sizes):
    sizes = [batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes)
    if not sizes or any(not isinstance(b, (int, np.integer)) or b < 1 for b in sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {batch_sizes}")
    return [int(b) for b in sizes]


def _check_fine_tune_at(fine_tune_at):
    if fine_tune_at is None:
        return None
    if isinstance(fine_tune_at, tuple) and len(fine_tune_at) == 2 and 0 <= fine_tune_at[0] < fine_tune_at[1]:
        return tuple(int(v) for v in fine_tune_at)
    if isinstance(fine_tune_at, list) and fine_tune_at and all(int(v) >= 0 for v in fine_tune_at):
        return [int(v) for v in fine_tune_at]
    raise ValueError(f"fine_tune_at must be None, a range (low, high) with 0 <= low < high, "
                     f"or a list of layer counts, got {fine_tune_at!r}")


# --- the searches ------------------------------------------------------------

def random_search(data, output_dir, name: str, *, max_trials: int = 10, epochs: int = 2,
                  objective: str = "val_auc", seed: int = 42, overwrite: bool = False,
                  verbose: int = 1, model_name: str = "cancernet", batch_sizes=(32, 64, 128),
                  **space):
    """Random search (Bergstra & Bengio 2012) over learning rate and batch size.

    ``data`` is ``experiment.prepare_data``'s output for this model; ``space``
    holds the other arguments of ``RegistryHyperModel`` (learning_rate,
    optimizers, weights, fine_tune_at). Returns the tuner, searched.
    """
    hypermodel = RegistryHyperModel(model_name, image_size=data.image_size, batch_sizes=batch_sizes,
                                    seed=seed, objective=objective, verbose=verbose, **space)
    return _search("random", hypermodel, data, output_dir, name, max_trials=max_trials, epochs=epochs,
                   overwrite=overwrite)


def bayesian_search(data, output_dir, name: str, *, fine_tune_at, weights=None, max_trials: int = 10,
                    epochs: int = 2, objective: str = "val_auc", seed: int = 42, overwrite: bool = False,
                    verbose: int = 1, model_name: str = "cancernet", num_initial_points=None, **space):
    """Bayesian optimisation (a Gaussian process) over ``fine_tune_at`` and the learning rate.

    ``weights`` is the pretrained model to fine-tune (a file path; None trains
    from a random start, which only makes sense for a demonstration). The first
    ``num_initial_points`` trials (default 3 per tuned hyperparameter) are random;
    later ones are chosen by the process fitted to the scores so far.
    keras-tuner's own default counts fixed hyperparameters too (12 random trials
    for this space), which would leave a 10-trial search without any Bayesian step.
    """
    hypermodel = RegistryHyperModel(model_name, image_size=data.image_size, weights=weights,
                                    fine_tune_at=fine_tune_at, seed=seed, objective=objective,
                                    verbose=verbose, **space)
    return _search("bayesian", hypermodel, data, output_dir, name, max_trials=max_trials, epochs=epochs,
                   overwrite=overwrite, num_initial_points=num_initial_points or 3 * hypermodel.dimensions)


def _search(kind, hypermodel, data, output_dir, name, *, max_trials, epochs, overwrite, **options):
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"name must be a plain folder name, got {name!r}")
    if max_trials < 1 or epochs < 1:
        raise ValueError(f"max_trials and epochs must be at least 1, got {max_trials} and {epochs}")
    if data.preprocess is not models.preprocess_for(hypermodel.model_name):
        raise ValueError(f"the data were prepared with another preprocessing than {hypermodel.model_name!r} "
                         "needs: prepare_data(cfg, preprocess=models.preprocess_for(name))")
    directory = Path(output_dir) / "tuner"
    settings = json.loads(json.dumps({  # as read back from the file: tuples become lists
        "kind": kind, "space": hypermodel.describe(), "epochs": epochs,
        "objective": hypermodel.objective, "data": _fingerprint(data)}))
    _check_resumable(directory / name, settings, overwrite)
    objective = keras_tuner.Objective(hypermodel.objective, _direction(hypermodel.objective))
    tuner = TUNERS[kind](hypermodel, objective=objective,
                         max_trials=max_trials, executions_per_trial=1, seed=hypermodel.seed,
                         directory=str(directory), project_name=name, overwrite=overwrite,
                         **options)
    write_text(directory / name / "search.json", json.dumps(settings, indent=2))
    try:
        # verbose=0 reaches the oracle too: its per-trial display would print a table
        # and clear the notebook cell's output after every trial.
        tuner.search(_unbatched(data), validation_data=data.val, epochs=epochs,
                     class_weight=data.class_weight, verbose=0)
    except RuntimeError as exc:  # keras-tuner stops after 3 consecutive failed trials
        if "consecutive failures" not in str(exc):
            raise
    check_trials(tuner)
    return tuner


def _unbatched(data):
    """The training pipeline one patch at a time, with its length: unbatch() loses the
    length, and Keras then warns at the end of every trial that the input ran out."""
    import tensorflow as tf

    n = len(data.part("train"))
    return data.train.unbatch().apply(tf.data.experimental.assert_cardinality(n))


def _fingerprint(data) -> str:
    """Which patches trained and validated: a rerun on other data must not resume."""
    used = data.index[data.index["split"].isin(["train", "val"])]
    key = "|".join(sorted(used["path"].astype(str))) + f"|{data.image_size}"
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _check_resumable(project, settings, overwrite):
    saved = project / "search.json"
    if overwrite or not saved.is_file():
        return
    old = json.loads(saved.read_text())
    changed = sorted(k for k in settings if old.get(k) != settings[k])
    if changed:
        raise TuningError(f"the tuner project {project} was searched with other {', '.join(changed)} "
                          f"({', '.join(f'{k}={old.get(k)}' for k in changed)}); resuming would mix "
                          "scores that do not compare: choose another name, or pass overwrite=True")


def check_trials(tuner) -> None:
    """Raise if no trial finished with a score (keras-tuner itself stays silent).

    A trial that raises is marked failed and the search goes on; only three
    failures in a row stop it, and then with a RuntimeError.
    """
    trials = list(tuner.oracle.trials.values())
    if any(t.status == DONE and _finite(t.score) for t in trials):
        return
    failed = [t for t in trials if t.message]
    first = _last_line(failed[0].message) if failed else "no error was kept"
    hint = (" keras-tuner imports tensorboard in every trial with the TensorFlow backend: "
            "pip install tensorboard." if "tensorboard" in first else "")
    raise TuningError(f"none of the {len(trials)} trials in {tuner.project_dir} finished with a score; "
                      f"the first failure: {first}.{hint} Fix it, then rerun with overwrite=True "
                      "(failed trials count towards max_trials).")


def _finite(score) -> bool:
    return score is not None and math.isfinite(score)


def _last_line(message: str) -> str:
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# --- what the search found ------------------------------------------------------

def trials_table(tuner) -> pd.DataFrame:
    """One row per trial, best first: trial, status, the hyperparameters, score,
    best_epoch (1-based) and, for a failed trial, its error.

    ``table.attrs`` holds the objective's name and direction for ``trials_plot``.
    """
    objective = tuner.oracle.objective
    rows = []
    for trial in tuner.oracle.trials.values():
        done = trial.status == DONE and _finite(trial.score)
        rows.append({"trial": trial.trial_id, "status": trial.status, **trial.hyperparameters.values,
                     "score": trial.score if done else math.nan,
                     "best_epoch": trial.best_step + 1 if done else pd.NA,
                     "error": "" if done else _last_line(trial.message or "")})
    table = pd.DataFrame(rows)
    if table.empty:
        raise TuningError(f"the tuner in {tuner.project_dir} holds no trial yet: run the search first")
    table = table.sort_values("score", ascending=objective.direction == "min", na_position="last",
                              kind="stable").reset_index(drop=True)
    table.attrs.update(objective=objective.name, direction=objective.direction)
    return table


def best_config(tuner) -> dict:
    """The best trial's hyperparameters, e.g. {"learning_rate", "optimizer", "batch_size"}.

    Retrain with them: ``batch_size`` goes to the data (``config.resolve(...,
    batch_size=)``), ``optimizer`` and ``learning_rate`` to ``train.fit``, and
    ``fine_tune_at`` (if searched) to ``models.build_model``.
    """
    check_trials(tuner)
    best = trials_table(tuner).iloc[0]
    return dict(tuner.oracle.get_trial(best["trial"]).hyperparameters.values)


def trials_plot(table: pd.DataFrame, x: str = "learning_rate", hue: str | None = "batch_size",
                source: str = ""):
    """Score against ``x`` (log axis for the learning rate), coloured by ``hue``;
    the best trial ringed. ``source`` names the data and split the scores come from."""
    import matplotlib.pyplot as plt

    from .plots import title_with_source

    missing = [c for c in (x, hue) if c is not None and c not in table]
    if missing:
        raise ValueError(f"no column {missing[0]!r} in the trials table; it has {list(table.columns)}")
    done = table[np.isfinite(table["score"].astype(float))]
    objective = table.attrs.get("objective", "score")
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [(None, done)] if hue is None else list(done.groupby(hue, sort=True))
    for value, part in groups:
        ax.scatter(part[x], part["score"], s=40, alpha=0.85, label=None if hue is None else f"{hue} {value}")
    if len(done):
        best = done.iloc[0]
        ax.scatter([best[x]], [best["score"]], s=220, facecolors="none", edgecolors="k", linewidths=1.5,
                   label=f"best: {x} {best[x]:.3g}, {objective} {best['score']:.3f}")
    if x == "learning_rate":
        ax.set_xscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(f"best {objective} of the trial")
    ax.legend(fontsize=8, loc="best")
    failed = len(table) - len(done)
    title = f"{len(done)} trials" + (f" ({failed} failed, not shown)" if failed else "")
    title_with_source(ax, f"Hyperparameter search: {title}", source or "source not given")
    return fig


# --- why random search: Bergstra & Bengio (2012), figure 1 ----------------------

def _design_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    side = math.isqrt(n)
    if side * side != n or n < 4:
        raise ValueError(f"n must be a square number of points (4, 9, 16, ...), got {n}")
    ticks = (np.arange(side) + 0.5) / side
    grid = np.array([(a, b) for a in ticks for b in ticks])
    return grid, np.random.default_rng(seed).uniform(0, 1, size=(n, 2))


def grid_vs_random_figure(n: int = 9, seed: int = 3):
    """``n`` grid points beside ``n`` random points over two parameters of which only
    the horizontal one matters: projected on it, the grid tries sqrt(n) values, random n."""
    import matplotlib.pyplot as plt

    grid, rand = _design_points(n, seed)
    xs = np.linspace(0, 1, 400)
    effect = lambda v: np.exp(-((v - 0.7) / 0.07) ** 2)  # noqa: E731 - a narrow optimum the grid misses
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [1, 2.5]})
    for col, (label, points) in enumerate((("grid", grid), ("random", rand))):
        top, main = axes[0, col], axes[1, col]
        top.plot(xs, effect(xs), color="#55a868")
        top.scatter(points[:, 0], effect(points[:, 0]), color="k", s=18, zorder=3)
        top.set_yticks([])
        top.set_ylabel("score", fontsize=9)
        top.set_title(f"{label}: {len(np.unique(points[:, 0].round(9)))} distinct values "
                      f"of the important parameter,\nbest effect reached {effect(points[:, 0]).max():.2f}",
                      fontsize=10)
        main.scatter(points[:, 0], points[:, 1], color="#4c72b0", s=30, label=label)
        main.set_label(label)  # the tests find each design's points by this label
        for v in points[:, 0]:
            main.axvline(v, ymax=0.04, color="k", lw=1)
        main.set_xlim(0, 1)
        main.set_ylim(0, 1)
        main.set_xlabel("important parameter (e.g. learning rate)")
        main.set_ylabel("unimportant parameter")
    fig.suptitle(f"{n} trials: grid vs random search (after Bergstra & Bengio 2012)", fontsize=11)
    fig.tight_layout()
    return fig
