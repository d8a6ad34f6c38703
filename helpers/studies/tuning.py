"""Hyperparameter search with keras-tuner over the models of the registry (notebook 11).

As in the seed project: a random search over optimizer, batch size and learning rate for CancerNet
(it found Adadelta batch 128 lr 0.00396 and Adagrad batch 64 lr 0.0282), then a Bayesian optimisation
over ``fine_tune_at`` and the learning rate of a pretrained model (fine_tune_at 5, lr 0.0346 on a
BreakHis-pretrained CancerNet); the trials as a table and plots; the best configuration retrained.

The tuner keeps its state in ``<output_dir>/tuner/<name>/``: the same search run again resumes
(finished trials are kept, an interrupted one runs again, a larger ``max_trials`` adds the missing
ones). Without a ``name`` the project is named by its settings, so other settings never mix scores.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import keras_tuner
import numpy as np
import pandas as pd

from .. import models, reference, runs, train
from ..io import write_text

TUNERS = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization}
DONE = "COMPLETED"
OBJECTIVE = keras_tuner.Objective("val_auc", "max")  # what a run monitors (train.Training's default)


class TuningError(RuntimeError):
    """A search that produced no usable trial, or a project that cannot be resumed."""


def _choice(hp, name, values):
    """A Choice over several values; Fixed for one, so it still shows in the table."""
    return hp.Choice(name, values) if len(values) > 1 else hp.Fixed(name, values[0])


class RegistryHyperModel(keras_tuner.HyperModel):
    """A compiled model of ``helpers.models`` whose training settings are hyperparameters.

    ``learning_rate`` (low, high) is sampled log-uniformly; ``optimizers`` (names of
    ``train.OPTIMIZERS``) and ``batch_sizes`` with one value are fixed, not tuned; ``fine_tune_at``
    None keeps the model's default freezing, (low, high) is an Int range, a list a Choice.

    Batch size as a hyperparameter: ``fit`` unbatches the training pipeline (after its cache and
    shuffle) and batches it with the trial's size, so one pipeline serves every trial and the patches
    are decoded once per search. The validation pipeline is used as given: its batch size changes no score.
    """

    def __init__(self, model_name="cancernet", *, image_size=None, weights=None,
                 learning_rate=(1e-4, 1e-1), optimizers=("adam",), batch_sizes=(64,),
                 fine_tune_at=None, seed=42, verbose=1):
        super().__init__(name=model_name)
        models.input_size(model_name)  # an unknown model fails here, not in every trial
        if weights == "imagenet" and not models.MODELS[model_name].pretrained:
            raise ValueError(f"{model_name!r} has no ImageNet weights: choose a backbone "
                             f"({', '.join(n for n, s in models.MODELS.items() if s.pretrained)}) or other weights")
        low, high = (float(v) for v in learning_rate)
        if not 0 < low < high:
            raise ValueError(f"learning_rate must be a range (low, high) with 0 < low < high, got {learning_rate}")
        names = [optimizers] if isinstance(optimizers, str) else list(optimizers)
        unknown = [n for n in names if n.lower() not in train.OPTIMIZERS]
        if not names or unknown:
            raise ValueError(f"unknown optimizer(s) {unknown or names}; choose among {sorted(train.OPTIMIZERS)}")
        sizes = [batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes)
        if not sizes or any(not isinstance(b, (int, np.integer)) or b < 1 for b in sizes):
            raise ValueError(f"batch_sizes must be positive integers, got {batch_sizes}")
        self.model_name, self.image_size, self.weights = model_name, image_size, weights
        self.learning_rate, self.optimizers, self.batch_sizes = (low, high), names, [int(b) for b in sizes]
        self.fine_tune_at = _check_fine_tune_at(fine_tune_at)
        self.seed, self.verbose = seed, verbose

    def describe(self) -> dict:
        """The search space and model, as plain values (kept beside the tuner's state)."""
        return {"model": self.model_name, "image_size": self.image_size,
                "weights": None if self.weights is None else str(self.weights),
                "learning_rate": list(self.learning_rate), "optimizers": self.optimizers,
                "batch_sizes": self.batch_sizes, "fine_tune_at": self.fine_tune_at, "seed": self.seed,
                "recalibrate_bn": train.Training.recalibrate_bn}

    @property
    def dimensions(self) -> int:
        """How many hyperparameters are tuned (a fixed one is not)."""
        return 1 + (len(self.optimizers) > 1) + (len(self.batch_sizes) > 1) + (self.fine_tune_at is not None)

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
        # Fresh BatchNorm statistics before each validation, as train.fit does: a trial of one
        # short epoch otherwise validates with moving averages still near mean 0 / variance 1,
        # predicts one class for every patch, and every trial gets the same score.
        recalibrate = train._recalibrate_callback(batches, train.Training.recalibrate_bn)
        kwargs["callbacks"] = [recalibrate, *(kwargs.get("callbacks") or [])]
        start = time.perf_counter()
        history = model.fit(batches, *args, shuffle=False, **kwargs)  # the pipeline shuffles
        if self.verbose:
            best = max(history.history.get(OBJECTIVE.name, [math.nan]))
            shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            print(f"{shown} -> best {OBJECTIVE.name} {best:.4f} ({time.perf_counter() - start:.0f} s)")
        return history


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

@dataclass(frozen=True)
class Budget:
    """How much one search may cost: trials, epochs per trial, the patch cap of its data,
    and how many of a Bayesian search's first trials are random."""

    max_trials: int
    epochs: int
    sample_size: int | None = None  # None: every patch
    initial_points: int | None = None  # None: 3 per tuned hyperparameter

    def __post_init__(self):
        if self.max_trials < 1 or self.epochs < 1:
            raise ValueError(f"max_trials and epochs must be at least 1, got {self.max_trials} and {self.epochs}")


BUDGETS = {
    "smoke": Budget(max_trials=3, epochs=1, sample_size=600, initial_points=2),
    "cpu": Budget(max_trials=10, epochs=3, sample_size=10_000, initial_points=4),
    "full": Budget(max_trials=25, epochs=5, sample_size=50_000, initial_points=6),
    "colab": Budget(max_trials=8, epochs=3, sample_size=20_000, initial_points=3),  # ~20 min on a T4 (estimate)
}


def budget(profile: str, max_trials=None, epochs=None, sample_size=None) -> Budget:
    """The profile's search budget; a value given (not None) wins, ``sample_size`` 0 means no cap.
    A Bayesian search keeps at least one trial for the Gaussian process when it has two or more."""
    if profile not in BUDGETS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(BUDGETS)}")
    base = BUDGETS[profile]
    trials = int(base.max_trials if max_trials is None else max_trials)
    epochs = int(base.epochs if epochs is None else epochs)
    cap = base.sample_size if sample_size is None else (int(sample_size) or None)
    return Budget(trials, epochs, cap, max(1, min(base.initial_points, trials - 1)))


def random_search(data, output_dir, budget: Budget, name: str | None = None, *, overwrite: bool = False,
                  model_name: str = "cancernet", batch_sizes=(32, 64, 128), **space):
    """Random search (Bergstra & Bengio 2012) over learning rate, batch size and optimizer.

    ``data``: ``experiment.prepare_data``'s output for this model; ``space``: the other arguments of
    ``RegistryHyperModel``. ``name`` None names the project by its settings. Returns the tuner, searched.
    """
    hypermodel = RegistryHyperModel(model_name, image_size=data.image_size, batch_sizes=batch_sizes, **space)
    return _search("random", hypermodel, data, output_dir, name, budget, overwrite)


def bayesian_search(data, output_dir, budget: Budget, name: str | None = None, *, fine_tune_at,
                    overwrite: bool = False, model_name: str = "cancernet", **space):
    """Bayesian optimisation (a Gaussian process) over ``fine_tune_at`` and the learning rate.

    ``weights`` (in ``space``) is the pretrained model to fine-tune (a file; None: a random start, for
    a demonstration only). The budget's first ``initial_points`` trials (None: 3 per tuned hyperparameter)
    are random: keras-tuner's own default counts fixed hyperparameters too (12 random trials for
    this space), which would leave a 10-trial search without any Bayesian step.
    """
    hypermodel = RegistryHyperModel(model_name, image_size=data.image_size, fine_tune_at=fine_tune_at, **space)
    return _search("bayesian", hypermodel, data, output_dir, name, budget, overwrite,
                   num_initial_points=budget.initial_points or 3 * hypermodel.dimensions)


def _search(kind, hypermodel, data, output_dir, name, budget, overwrite, **options):
    import tensorflow as tf

    if data.preprocess is not models.preprocess_for(hypermodel.model_name):
        raise ValueError(f"the data were prepared with another preprocessing than {hypermodel.model_name!r} "
                         f"needs: prepare_data(cfg, {hypermodel.model_name!r})")
    directory = Path(output_dir) / "tuner"
    used = data.index[data.index["split"].isin(["train", "val"])]  # other data must not resume
    settings = json.loads(json.dumps({  # as read back from the file: tuples become lists
        "kind": kind, "space": hypermodel.describe(), "epochs": budget.epochs, "objective": OBJECTIVE.name,
        "data": runs.fingerprint(sorted(used["path"].astype(str)), data.image_size)}))
    if name is None:  # named by everything but max_trials: same settings resume, other ones start anew
        name = f"{kind}_{hypermodel.model_name}_{runs.fingerprint(settings, length=10)}"
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"name must be a plain folder name, got {name!r}")
    saved = directory / name / "search.json"
    old = json.loads(saved.read_text()) if saved.is_file() and not overwrite else settings
    if changed := sorted(k for k in settings if old.get(k) != settings[k]):
        raise TuningError(f"the tuner project {directory / name} was searched with other {', '.join(changed)} "
                          f"({', '.join(f'{k}={old.get(k)}' for k in changed)}); resuming would mix "
                          "scores that do not compare: choose another name, or pass overwrite=True")
    tuner = TUNERS[kind](hypermodel, objective=OBJECTIVE, max_trials=budget.max_trials, executions_per_trial=1,
                         seed=hypermodel.seed, directory=str(directory), project_name=name, overwrite=overwrite,
                         **options)
    write_text(saved, json.dumps(settings, indent=2))
    # One patch at a time, with its length: unbatch() loses the length, and Keras then warns at the
    # end of every trial that the input ran out.
    patches = data.train.unbatch().apply(tf.data.experimental.assert_cardinality(len(data.part("train"))))
    try:
        with warnings.catch_warnings():
            # The Gaussian process fitted to a few trials often pins a length scale at its bound
            # and says so after every trial; the search goes on all the same.
            warnings.filterwarnings("ignore", message="The optimal value found for dimension",
                                    module="sklearn.gaussian_process")
            # verbose=0 reaches the oracle too: its per-trial display would print a table
            # and clear the notebook cell's output after every trial.
            tuner.search(patches, validation_data=data.val, epochs=budget.epochs, class_weight=data.class_weight,
                         verbose=0)
    except RuntimeError as exc:  # keras-tuner stops after 3 consecutive failed trials
        if "consecutive failures" not in str(exc):
            raise
    check_trials(tuner)
    return tuner


def check_trials(tuner) -> None:
    """Raise if no trial finished with a score (keras-tuner itself stays silent: a trial that raises
    is marked failed and the search goes on; only three failures in a row stop it)."""
    trials = list(tuner.oracle.trials.values())
    if any(t.status == DONE and _finite(t.score) for t in trials):
        return
    first = next((_last_line(t.message) for t in trials if t.message), "no error was kept")
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
    """One row per trial, best first: trial, status, the hyperparameters, score, best_epoch
    (1-based) and a failed trial's error; ``attrs`` hold the objective's name and direction."""
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
    """The best trial's hyperparameters, as ``retrain_best`` takes them."""
    check_trials(tuner)
    best = trials_table(tuner).iloc[0]
    return dict(tuner.oracle.get_trial(best["trial"]).hyperparameters.values)


def _trials_figure(table: pd.DataFrame, columns, size):
    """(figure, axes, the finished trials best first, the objective's name); a column the table
    lacks is refused by name."""
    import matplotlib.pyplot as plt

    if missing := [c for c in columns if c is not None and c not in table]:
        raise ValueError(f"no column {missing[0]!r} in the trials table; it has {list(table.columns)}")
    fig, ax = plt.subplots(figsize=size)
    return fig, ax, table[np.isfinite(table["score"].astype(float))], table.attrs.get("objective", "score")


def _axis(ax, which: str, name: str) -> None:
    """The axis labelled by ``name``; a learning rate's on a log scale labelled at 1, 2 and 5 times each
    power of ten, in plain numbers (0.002, not 2x10^-3): the default labels of a short log range overlap."""
    from matplotlib import ticker

    getattr(ax, f"set_{which}label")(name.replace("_", " "))
    if name == "learning_rate":
        getattr(ax, f"set_{which}scale")("log")
        axis = getattr(ax, f"{which}axis")
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def trials_plot(table: pd.DataFrame, x: str = "learning_rate", hue: str | None = "batch_size",
                source: str = ""):
    """Score against ``x``, coloured by ``hue``, the best trial ringed. ``source`` names the data and
    split the scores come from."""
    from ..plots import title_with_source

    fig, ax, done, objective = _trials_figure(table, (x, hue), (7, 4))
    for value, part in [(None, done)] if hue is None else done.groupby(hue, sort=True):
        ax.scatter(part[x], part["score"], s=40, alpha=0.85, label=None if hue is None else f"{hue} {value}")
    if len(done):
        best = done.iloc[0]
        ax.scatter([best[x]], [best["score"]], s=220, facecolors="none", edgecolors="k", linewidths=1.5,
                   label=f"best: {x} {best[x]:.3g}, {objective} {best['score']:.3f}")
    _axis(ax, "x", x)
    ax.set_ylabel(f"best {objective} of the trial")
    ax.legend(fontsize=8, loc="best")
    failed = len(table) - len(done)
    title = f"{len(done)} trials" + (f" ({failed} failed, not shown)" if failed else "")
    title_with_source(ax, f"Hyperparameter search: {title}", source or "source not given")
    return fig


def search_map(table: pd.DataFrame, x: str = "fine_tune_at", y: str = "learning_rate", source: str = ""):
    """Where a search tried (``x`` against ``y``), coloured by score and numbered in trial order, the best
    ringed: a Bayesian search's later trials gather where the earlier ones scored well."""
    from ..plots import title_with_source

    fig, ax, done, objective = _trials_figure(table, (x, y), (7, 4.2))
    points = ax.scatter(done[x], done[y], c=done["score"], cmap="viridis", s=70, edgecolors="k", linewidths=0.5)
    for _, row in done.iterrows():
        ax.annotate(str(int(row["trial"]) + 1), (row[x], row[y]), xytext=(9, 6), textcoords="offset points",
                    fontsize=8)
    if len(done):
        best = done.iloc[0]
        ax.scatter([best[x]], [best[y]], s=260, facecolors="none", edgecolors="k", linewidths=1.5,
                   label=f"best: {x} {best[x]:.3g}, {y} {best[y]:.3g}")
        ax.legend(fontsize=8, loc="best")
    _axis(ax, "x", x)
    _axis(ax, "y", y)
    fig.colorbar(points, ax=ax, label=f"best {objective} of the trial")
    title_with_source(ax, f"Where the search tried ({len(done)} trials, numbered in order)",
                      source or "source not given")
    return fig


def grid_vs_random_figure(n: int = 9, seed: int = 3):
    """Why random search (Bergstra & Bengio 2012, figure 1): ``n`` grid points beside ``n`` random points
    over two parameters of which only the horizontal one matters; projected on it, the grid tries
    sqrt(n) values, random search n."""
    import matplotlib.pyplot as plt

    side = math.isqrt(n)
    if side * side != n or n < 4:
        raise ValueError(f"n must be a square number of points (4, 9, 16, ...), got {n}")
    ticks = (np.arange(side) + 0.5) / side
    designs = {"grid": np.array([(a, b) for a in ticks for b in ticks]),
               "random": np.random.default_rng(seed).uniform(0, 1, size=(n, 2))}
    xs = np.linspace(0, 1, 400)
    effect = lambda v: np.exp(-((v - 0.7) / 0.07) ** 2)  # noqa: E731 - a narrow optimum the grid misses
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [1, 2.5]})
    for col, (label, points) in enumerate(designs.items()):
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
        main.set(xlim=(0, 1), ylim=(0, 1), xlabel="important parameter (e.g. learning rate)",
                 ylabel="unimportant parameter")
    fig.suptitle(f"{n} trials: grid vs random search (after Bergstra & Bengio 2012)", fontsize=11)
    fig.tight_layout()
    return fig


# --- notebook 11: the data to search on, and what the search found ---------------

def search_data(cfg, model_name: str, budget: Budget):
    """The model's data capped at the budget's sample size: the same patient split as the full runs."""
    from .experiment import prepare_data

    return prepare_data(replace(cfg, sample_size=budget.sample_size), model_name)


# CancerNet's first two blocks (13 layers) and the first convolution of the third: the seed
# searched within its convolutional layers, and found 5 (block 1 frozen).
CANCERNET_FREEZABLE = 15


def default_fine_tune_range(model_name: str) -> tuple[int, int]:
    """(0, N): CancerNet's convolutional layers worth freezing, or every layer of a backbone."""
    if model_name == "cancernet":
        return 0, CANCERNET_FREEZABLE
    model = models.build_model(model_name)
    body = models.backbone_layers(model) if models.MODELS[model_name].pretrained else model.layers
    return 0, len(body)


def retrain_best(cfg, best: dict, notebook: str, *, model_name: str = "cancernet", weights=None,
                 name: str = "best", study_name: str = "hyperparameter_search"):
    """Train ``best`` (``best_config``'s dict) once at the profile's full epochs and data, as a
    one-variant study: a registry row, a history for the curves, and a rerun reads it back."""
    from . import study

    build = {k: v for k, v in (("weights", None if weights is None else str(weights)),
                                ("fine_tune_at", best.get("fine_tune_at"))) if v is not None}
    training = train.Training(optimizer=best["optimizer"], learning_rate=float(best["learning_rate"]))
    variant = study.Variant(name, model=model_name, build=build, training=training)
    final = replace(cfg, batch_size=int(best.get("batch_size", cfg.batch_size)))
    return study.run_study(final, study_name, notebook, [variant], seeds=[cfg.seed])


# The seed project's findings (reference.ORIGINAL_IDC): CancerNet, random patch split.
ORIGINAL_OPTIMIZERS = {"adagrad": "Adagrad batch 64, lr 0.0282", "adadelta": "Adadelta batch 128, lr 0.00396"}
# CancerNet's, with lr 0.0346, on a BreakHis-pretrained CancerNet
ORIGINAL_FINE_TUNE_AT = reference.ORIGINAL_FINE_TUNE_AT["cancernet"]


def original_check(random_table: pd.DataFrame, bayes_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Does the seed's finding hold here? One row per finding: the seed's value, the best trial's,
    the best score overall and among trials of the seed's choice (Adagrad or Adadelta; fine_tune_at
    within one layer of 5), and whether the best trial is of the seed's choice."""
    def row(finding, seed, table, column, chosen, describe):
        done = table[np.isfinite(table["score"].astype(float))]
        if done.empty:
            raise TuningError("no finished trial to compare with the seed project")
        best, mine = done.iloc[0], done[chosen(done[column])]
        return {"finding": finding, "seed project": seed, "best trial here": describe(best),
                "best score": round(float(best["score"]), 4),
                "best score of the seed's choice": round(float(mine["score"].iloc[0]), 4) if len(mine)
                else "not tried", "holds here": "yes" if bool(chosen(pd.Series([best[column]]))[0]) else "no"}

    rows = [row("optimizer (random search)", " or ".join(ORIGINAL_OPTIMIZERS.values()), random_table, "optimizer",
                lambda c: c.str.lower().isin(ORIGINAL_OPTIMIZERS),
                lambda b: f"{b['optimizer']} batch {b['batch_size']}, lr {b['learning_rate']:.3g}")]
    if bayes_table is not None:
        rows.append(row("fine_tune_at (Bayesian search)", f"{ORIGINAL_FINE_TUNE_AT}, lr 0.0346", bayes_table,
                        "fine_tune_at", lambda c: (c.astype(int) - ORIGINAL_FINE_TUNE_AT).abs() <= 1,
                        lambda b: f"{int(b['fine_tune_at'])}, lr {b['learning_rate']:.3g}"))
    table = pd.DataFrame(rows).set_index("finding")
    table.attrs["objective"] = random_table.attrs.get("objective", "score")
    return table


