"""Named, versioned training recipes: the seed project's CancerNet set-up (``original``), each
improvement ("ingredient") on top of it alone, and a ``best`` combination. A recipe is every choice
that turns patches into a classifier: ``get("original+class_weight+tta")``, ``get("best", epochs=5)``.

``train`` returns a :class:`Predictor`, saved as member file(s) plus ``model.json`` (recipe, stain
target, TTA, members, threshold, slide context): ``Predictor.load`` re-creates all of it, so
``python -m helpers evaluate`` needs no flags.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd

from .. import runs
from . import context as slide
from . import tta as dihedral
from ..data import splits
from ..data import stain as stain_mod
from ..data.splits import SUBSETS, training_subset
from ..io import json_safe


@dataclass(frozen=True)
class Recipe:
    """One training set-up. The defaults are the ``original`` baseline (the seed project's final
    CancerNet: Adagrad 0.0282, batch 64, natural class mix, threshold 0.5, Keras' BatchNorm)."""

    name: str = "original"
    version: int = 1
    # the model
    model: str = "cancernet"  # a name of helpers.models.MODELS; inputs stay [0, 255], CancerNet rescales
    head: str = "flatten"  # cancernet: "flatten" (original) or "gap" (GlobalAveragePooling2D)
    bn_momentum: float = 0.99  # cancernet's BatchNorm momentum (Keras' default, which the seed used)
    recalibrate_bn: int = 0  # training batches that refresh BN statistics before each validation
    # the optimisation
    optimizer: str = "adagrad"
    learning_rate: float = 0.0282
    schedule: str = "constant"  # or "warmup_cosine": linear warm-up, then cosine decay to 0
    warmup_epochs: float = 0.0
    batch_size: int = 64
    epochs: int = 20
    monitor: str = "val_loss"  # the best epoch, and early stopping
    patience: int = 5
    label_smoothing: float = 0.0
    ema: float = 0.0  # momentum of an exponential moving average of the weights, validated and kept (0: off)
    # the data
    class_weight: bool = False  # inverse-frequency class weights from the training split
    sampling: str = "natural"  # or "balanced": 50/50 batches (minority oversampled)
    augment: str = "none"  # a name of helpers.data.augment.AUGMENTATIONS, e.g. "histology"
    stain: str = "none"  # "reinhard" or "macenko", fitted on the training split
    train_share: float = 1.0  # of the training split, for a learning curve (splits.training_subset)
    train_subset: str = "patches"  # drawn as a share of each patient's patches, or of the patients
    # the decision
    threshold: str = "fixed"  # 0.5; or "validation": the F1-best cut on the validation split
    tta: bool = False  # average over the 8 dihedral views
    context: str = "none"  # or "slide": each patch read with its slide's other patches (helpers.recipes.context)
    ensemble: int = 1  # members (seeds seed, seed+1, ...), probabilities averaged
    ensemble_models: tuple = ()  # architectures of the members in turn; () = ``model`` for all
    # pretraining
    pretrain: str = "none"  # or "breakhis": CancerNet pretrained on BreakHis, then fine-tuned
    pretrain_epochs: int = 10  # never more than ``epochs``
    breakhis_dir: str | None = None  # None: the generated BreakHis-like set
    breakhis_profile: str = "smoke"  # the generated set's size
    fine_tune_at: int | None = None  # freeze the first N layers of ``model``'s backbone
    # ``model``'s start and build (the other architectures of ensemble_models are built by default)
    weights: str = "none"  # "none", "imagenet" or a weights file
    image_size: int | None = None  # the input side; None: the model's own
    build: dict = field(default_factory=dict)  # more keywords of models.build_model, e.g. {"l2": 1e-4}

    def __post_init__(self):
        object.__setattr__(self, "ensemble_models", tuple(self.ensemble_models or ()))
        _validate(self)

    @property
    def options(self) -> dict:
        """Every setting but the name and version."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("name", "version")}

    @property
    def training_options(self) -> dict:
        """The options that shape the trained models: all but the decision (``DECISION_OPTIONS``).
        Two recipes with equal training options can share one cross-validation's models."""
        return {k: v for k, v in self.options.items() if k not in DECISION_OPTIONS}

    def as_dict(self) -> dict:
        """JSON-ready: name, version and options (``LATER_OPTIONS`` only where not at their default)."""
        options = {k: v for k, v in self.options.items() if k not in LATER_OPTIONS or v != DEFAULTS[k]}
        options["ensemble_models"] = list(self.ensemble_models)
        return {"name": self.name, "version": self.version, "options": options}

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        options = {k: _renamed(v) if k == "augment" else v for k, v in _checked(d.get("options", {})).items()}
        return cls(name=_renamed(d["name"]), version=d["version"], **options)

    def members(self) -> list[str]:
        """The architecture of each ensemble member."""
        archs = self.ensemble_models or (self.model,)
        return [archs[i % len(archs)] for i in range(self.ensemble)]

    def input_size(self, arch: str) -> int:
        """The side member ``arch`` reads its patches at: ``image_size`` for ``model``, else arch's own."""
        from .. import models

        return models.input_size(arch, self.image_size if arch == self.model else None)


CHOICES = {
    "head": ("flatten", "gap"),
    "schedule": ("constant", "warmup_cosine"),
    "sampling": ("natural", "balanced"),
    "threshold": ("fixed", "validation"),
    "stain": ("none", *stain_mod.METHODS),
    "pretrain": ("none", "breakhis"),
    "monitor": ("val_loss", "val_auc", "val_accuracy", "val_f1"),
    "context": ("none", "slide"),
    "train_subset": SUBSETS,
}
# Options added after cross-validations had been stored (outputs/crossval): fingerprints hash
# as_dict(), so an option listed here is left out of it while at its default, the behaviour
# those runs were trained with, and an upgrade does not train every stored fold again.
# A new option with a behaviour-keeping default goes here.
LATER_OPTIONS = ("train_share", "train_subset", "weights", "image_size", "build")
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "version"))
DEFAULTS = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(Recipe)}
# build_model's keywords that a recipe sets as options of its own
BUILT_BY_OPTIONS = ("image_size", "weights", "fine_tune_at", "seed", "head", "bn_momentum")


def _validate(r: Recipe):
    from ..data.augment import AUGMENTATIONS
    from ..models import MODELS
    from ..train import OPTIMIZERS

    for key, allowed in {**CHOICES, "augment": tuple(AUGMENTATIONS), "optimizer": tuple(OPTIMIZERS)}.items():
        if getattr(r, key) not in allowed:
            raise ValueError(f"recipe option {key}={getattr(r, key)!r} is not one of {', '.join(allowed)}")
    for arch in (r.model, *r.ensemble_models):
        if arch not in MODELS:
            raise ValueError(f"recipe model {arch!r} is not in helpers.models.MODELS ({', '.join(MODELS)})")
    for key in ("ensemble", "epochs", "batch_size", "pretrain_epochs"):
        if int(getattr(r, key)) < 1:
            raise ValueError(f"recipe option {key} must be at least 1, got {getattr(r, key)}")
    if r.weights != "none" and r.pretrain != "none":
        raise ValueError(f"recipe {r.name!r}: weights={r.weights!r} and pretrain={r.pretrain!r} both give "
                         "the starting weights; choose one")
    if not isinstance(r.build, dict) or set(r.build) & set(BUILT_BY_OPTIONS):
        raise ValueError(f"recipe {r.name!r}: build takes keywords of models.build_model other than "
                         f"{', '.join(BUILT_BY_OPTIONS)} (the recipe's own), got {r.build!r}")
    if not 0 < r.train_share <= 1:
        raise ValueError(f"recipe {r.name!r}: train_share must be in (0, 1], got {r.train_share}")
    if not 0 <= r.label_smoothing < 1 or r.learning_rate <= 0 or r.warmup_epochs < 0 or not 0 <= r.ema < 1:
        raise ValueError(f"recipe {r.name!r}: label_smoothing and ema must be in [0, 1), learning_rate > 0, "
                         f"warmup_epochs >= 0; got {r.label_smoothing}, {r.ema}, {r.learning_rate}, {r.warmup_epochs}")


# "original" (the recipe and its augmentation) was called "seed" until that word was kept for random
# seeds: model.json files and cross-validations stored before still say "seed", "seed+tta", ...
_OLD_NAME = re.compile(r"(^|& )seed(?=$|[+\[ _])")


def _renamed(name: str) -> str:
    return _OLD_NAME.sub(r"\1original", name)


def _checked(options: dict) -> dict:
    for k in options:
        if k not in OPTION_NAMES:
            raise ValueError(f"unknown recipe option {k!r}; options: {', '.join(OPTION_NAMES)}")
    return options


# --- the ingredients and the named recipes -----------------------------------------------

# Each ingredient: the options it changes on top of a recipe. Measured one at a time on top
# of ``original`` by cross-validation, with the same folds and seeds (docs/recipes.md).
INGREDIENTS: dict[str, dict] = {
    "class_weight": {"class_weight": True},
    "balanced_sampling": {"sampling": "balanced"},
    "threshold": {"threshold": "validation"},
    "histology_aug": {"augment": "histology"},
    "dihedral_aug": {"augment": "dihedral"},  # histology_aug's rotations and flips, no colour jitter
    "stain_reinhard": {"stain": "reinhard"},
    "stain_macenko": {"stain": "macenko"},
    "gap_head": {"head": "gap"},
    "label_smoothing": {"label_smoothing": 0.1},
    "warmup": {"schedule": "warmup_cosine", "warmup_epochs": 1.0},
    "tta": {"tta": True},
    "slide_context": {"context": "slide"},
    "ensemble": {"ensemble": 3},
    "breakhis": {"pretrain": "breakhis"},
    "bn_fix": {"bn_momentum": 0.9, "recalibrate_bn": 20},  # notebook 08's fix of the seed's BatchNorm
    "adam": {"optimizer": "adam", "learning_rate": 1e-3},
    "ema": {"ema": 0.99},  # an average over the last ~100 steps, about one epoch of the real sample's folds
}

# ``best`` is ``BEST_BASE`` plus ``BEST_INGREDIENTS``, chosen on the development patients alone
# (helpers.recipes.selection; figures and dates: docs/measurements.md). v5 = ``careful`` + TTA: careful
# beat v4 on 3 development folds x 2 seeds by more than its noise, then TTA beat careful there. v4, whose
# ingredients were chosen on the folds it was reported on, stays as ``best_v4``. Edit these and bump
# BEST_VERSION together, so that stored folds of the old ``best`` are not reused.
BEST_BASE = "careful"
BEST_INGREDIENTS: tuple = ("tta",)
BEST_VERSION = 5
# The model card ``train --recipe best`` writes into model.json (measured: docs/measurements.md).
BEST_CARD = {
    "what": "best v5 = careful + TTA: CancerNet with a global-average-pooling head, BatchNorm momentum 0.9 "
            "recalibrated before each validation, class weights, dihedral flips and rotations with colour "
            "jitter, Adam from 2e-3 with cosine decay over 40 epochs, the epoch with the best validation "
            "ROC-AUC (patience 15), the F1-best threshold on the validation patients, the mean of 8 views",
    "chosen": "on the 188 development patients of data/idc-sample (3 folds by patient x seeds 42 and 43, "
              "40 epochs): careful beat best v4 in ROC-AUC by +0.024 (one-sided 95% lower bound +0.002); "
              "TTA then beat careful by +0.003 (bound +0.001); slide context did not",
    "scored_on": "the lockbox: the 42 patients (1,320 patches) of data/idc-sample no choice was made on, "
                 "each seed trained on the 188 development patients (about 15% of them for validation)",
    "figures": {"seeds": [42, 43], "f1": "0.732 ± 0.012", "balanced_accuracy": "0.830 ± 0.017",
                "roc_auc": "0.904 ± 0.005", "best_v4_on_the_same_patients": "F1 0.698 ± 0.023, balanced "
                "accuracy 0.819 ± 0.014, ROC-AUC 0.895 ± 0.009"},
    "measured": "2026-12-07, 2 CPU cores; docs/measurements.md",
}


DECISION_OPTIONS = ("threshold", "tta", "context")  # change only how a trained model's outputs become a decision


def decision_only(ingredient: str) -> bool:
    """Whether ``ingredient`` needs no training of its own (``crossval.decisions`` scores it)."""
    return set(INGREDIENTS[ingredient]) <= set(DECISION_OPTIONS)


def best_base() -> str:
    """The recipe ``best`` is trained as (``"careful"`` for v5): a further selection's base."""
    return "+".join([BEST_BASE, *(i for i in BEST_INGREDIENTS if not decision_only(i))])


def with_ingredient(base, ingredient: str) -> Recipe:
    """``base`` (a Recipe or a name) plus one ingredient, named ``<base>+<ingredient>``."""
    base = get(base) if isinstance(base, str) else base
    if ingredient not in INGREDIENTS:
        raise ValueError(f"unknown ingredient {ingredient!r}; known ingredients: {', '.join(INGREDIENTS)}")
    return dataclasses.replace(base, name=f"{base.name}+{ingredient}", **INGREDIENTS[ingredient])


RECIPES: dict[str, Recipe] = {
    "original": Recipe(),
    # A plain recipe trained to convergence, which beat best v4 on unseen patients in a test outside
    # the project (issue 26), and then on the development patients: best v5.
    "careful": Recipe(name="careful", head="gap", bn_momentum=0.9, recalibrate_bn=20, optimizer="adam",
                      learning_rate=2e-3, schedule="warmup_cosine", epochs=40, monitor="val_auc", patience=15,
                      class_weight=True, augment="dihedral_colour", threshold="validation"),
    "best_v4": dataclasses.replace(reduce(with_ingredient, ("bn_fix", "adam", "tta"), Recipe()), name="best_v4",
                                   version=4),
}
RECIPES["best"] = dataclasses.replace(reduce(with_ingredient, BEST_INGREDIENTS, RECIPES[BEST_BASE]), name="best",
                                      version=BEST_VERSION)


def get(name, **overrides) -> Recipe:
    """The recipe ``name`` (a key of RECIPES, or one plus ingredients: ``"original+tta+ensemble"``, or a
    Recipe) with ``overrides`` of its options; one other than ``epochs`` is added to the name:
    ``get("original", ensemble=2, epochs=3).name == "original[ensemble=2]"``."""
    if isinstance(name, Recipe):
        recipe = name
    else:
        base, *extras = _renamed(str(name)).split("+")
        if base not in RECIPES:
            raise ValueError(f"unknown recipe {base!r}; known recipes: {', '.join(RECIPES)} "
                             f"(add ingredients with '+', e.g. original+tta; ingredients: {', '.join(INGREDIENTS)})")
        recipe = reduce(with_ingredient, extras, RECIPES[base])
    overrides = {k: v for k, v in _checked(overrides).items() if v is not None}
    if not overrides:
        return recipe
    # The name says what was overridden, so that such a run gets its own crossval folder and
    # row instead of retraining into, and overwriting, the folds of the named recipe. Epochs are
    # left out: they are the CPU budget, and already name the folder (crossval.run_dir).
    new = dataclasses.replace(recipe, **overrides)
    shown = ",".join(f"{k}={_shown(getattr(new, k))}" for k in overrides
                     if k != "epochs" and getattr(new, k) != getattr(recipe, k))
    return dataclasses.replace(new, name=f"{recipe.name}[{shown}]") if shown else new


def _shown(value) -> str:
    """An option's value in a recipe's name, which names cross-validation's folder: no '/' or space."""
    if isinstance(value, dict):
        return "-".join(f"{k}:{_shown(v)}" for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return "-".join(map(_shown, value))
    return str(value).replace("/", "_").replace(" ", "")


def describe() -> pd.DataFrame:
    """One row per ingredient: the options it changes and their values in ``original``."""
    original = RECIPES["original"]
    rows = [{"ingredient": name, "changes": ", ".join(f"{k}: {getattr(original, k)!r} -> {v!r}" for k, v in ch.items()),
             "in best": all(getattr(RECIPES["best"], k) == v for k, v in ch.items())}
            for name, ch in INGREDIENTS.items()]
    return pd.DataFrame(rows).set_index("ingredient")


# --- training -----------------------------------------------------------------------------

def learning_rate(recipe: Recipe, steps_per_epoch: int):
    """The recipe's learning rate: a float, or (``warmup_cosine``) a linear rise from 0 over
    ``warmup_epochs``, then a cosine decay to 0 by the end of ``epochs``."""
    if recipe.schedule == "constant":
        return recipe.learning_rate
    import keras

    total = max(1, int(recipe.epochs * steps_per_epoch))
    warmup = min(total - 1, int(round(recipe.warmup_epochs * steps_per_epoch)))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, total - warmup), alpha=0.0,
        warmup_target=recipe.learning_rate, warmup_steps=warmup)


def build_member(recipe: Recipe, arch: str, weights=None):
    """A fresh ``arch`` with CancerNet's knobs (head, BatchNorm) and ``recipe.model``'s own options."""
    from .. import models

    knobs = {"head": recipe.head, "bn_momentum": recipe.bn_momentum} if arch == "cancernet" else {}
    if arch == recipe.model:
        knobs.update(recipe.build, fine_tune_at=recipe.fine_tune_at)
    return models.build_model(arch, image_size=recipe.input_size(arch), weights=weights, **knobs)


def datasets(recipe: Recipe, arch: str, train_xy, val_xy, seed: int):
    """(train, validation) tf.data pipelines from uint8 arrays for member ``arch``."""
    from .. import hardware, models
    from ..data import augment, pipeline

    common = dict(batch_size=hardware.global_batch(recipe.batch_size), image_size=recipe.input_size(arch),
                  preprocess=models.preprocess_for(arch), one_hot=True)
    train_ds = pipeline.make_dataset(images=train_xy[0], labels=train_xy[1], shuffle=True, seed=seed,
                                     augment=augment.by_name(recipe.augment, seed=seed),
                                     balance=recipe.sampling == "balanced", **common)
    return train_ds, pipeline.make_dataset(images=val_xy[0], labels=val_xy[1], **common)


def pretrained_breakhis(recipe: Recipe, cache_dir, seed: int = 42) -> Path:
    """The BreakHis-pretrained ``recipe.model`` (``breakhis.track.pretrain``, cached in ``cache_dir``)."""
    from .. import config
    from ..breakhis.generator import resolve_dir
    from ..breakhis.track import pretrain
    from ..data import source

    root = resolve_dir(recipe.breakhis_dir, recipe.breakhis_profile)
    profile = recipe.breakhis_profile if recipe.breakhis_profile in config.PROFILES else "smoke"
    cfg = source.resolve(profile, data_dir=root, output_dir=cache_dir, batch_size=recipe.batch_size,
                         epochs=min(recipe.pretrain_epochs, recipe.epochs), seed=seed, make_demo=False)
    return Path(pretrain(cfg, root, recipe.model).path)


def _fingerprint(recipe: Recipe, seed: int, train_xy, val_xy) -> str:
    """The recipe, the seed, the labels and every ~64th image of each split."""
    arrays = [a for x, y in (train_xy, val_xy) for a in (np.asarray(y), np.asarray(x[:: max(1, len(x) // 64)]))]
    return runs.fingerprint({"recipe": recipe.as_dict(), "seed": seed}, *arrays, length=16)


def train(recipe, train_xy, val_xy, out_dir, *, seed: int = 42, cache_dir=None, verbose: int = 2,
          log=print, pretrain_seed: int | None = None, val_patients=None, train_patients=None) -> Predictor:
    """Train ``recipe`` on ``train_xy`` = (uint8 images (n, 50, 50, 3), labels), choose the best
    epoch (and the threshold, slide context) on ``val_xy``; save the member(s) and ``model.json``
    in ``out_dir``. A rerun with the same recipe, seed and data resumes; other settings start afresh.
    The BreakHis-pretrained model (``cache_dir``, ``pretrain_seed``) does not depend on the IDC split:
    cross-validation pretrains once for all folds. ``val_patients`` / ``train_patients`` (each
    patch's patient) are needed by slide context / a share of the training split."""
    import keras

    from .. import evaluate
    from .. import train as tr
    from ..io import atomic_path

    recipe = get(recipe)
    out_dir = Path(out_dir)
    (x_train, y_train), (x_val, y_val) = train_xy, val_xy
    y_train, y_val = np.asarray(y_train, dtype=np.int32), np.asarray(y_val, dtype=np.int32)
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError(f"recipe {recipe.name!r} needs training and validation patches; "
                         f"got {len(x_train)} and {len(x_val)}")
    if recipe.context == "slide" and (val_patients is None or len(val_patients) != len(y_val)):
        raise ValueError(f"recipe {recipe.name!r} reads patches with their slide: train() needs val_patients, "
                         f"the patient of each of the {len(y_val)} validation patches")
    if recipe.train_share < 1:
        if train_patients is None or len(train_patients) != len(y_train):
            raise ValueError(f"recipe {recipe.name!r} learns from a share of the training split: train() needs "
                             f"train_patients, the patient of each of the {len(y_train)} training patches")
        kept = training_subset(train_patients, recipe.train_share, recipe.train_subset, seed)
        x_train, y_train, train_patients = x_train[kept], y_train[kept], np.asarray(train_patients)[kept]
    print_ = log or (lambda *a, **k: None)
    key = _fingerprint(recipe, seed, (x_train, y_train), (x_val, y_val))
    started = out_dir / "started.json"
    if started.is_file() and runs.read_record(started, key) is None:
        print_(f"{out_dir}: left by other settings, starting afresh")
        for old in [*out_dir.glob("member*.keras"), out_dir / "model.keras", out_dir / "model.json"]:
            old.unlink(missing_ok=True)
        for run in out_dir.glob("run*"):
            shutil.rmtree(run, ignore_errors=True)
    runs.write_record(started, key, {"recipe": recipe.as_dict(), "seed": seed})

    info = {"train_patches": len(y_train), "train_positives": int(y_train.sum()),
            **({} if train_patients is None else {"train_patients": int(len(np.unique(train_patients)))}),
            "val_patches": len(y_val), "val_positives": int(y_val.sum())}
    target = None
    if recipe.stain != "none":
        target = stain_mod.fit_target(x_train, recipe.stain, seed=seed)
        done_train, done_val = map(stain_mod.Normalizer(target).normalize, (x_train, x_val))
        x_train, x_val = done_train.images, done_val.images
        info["stain_run"] = {"seconds": round(done_train.seconds + done_val.seconds, 2),
                             "fallbacks": done_train.fallbacks + done_val.fallbacks,
                             "patches": len(y_train) + len(y_val)}
    weights = None if recipe.weights == "none" else recipe.weights
    if recipe.pretrain == "breakhis":
        weights = pretrained_breakhis(recipe, cache_dir or out_dir, seed if pretrain_seed is None else pretrain_seed)
        info["pretrained"] = str(weights)

    archs, members = recipe.members(), []
    steps = math.ceil(len(y_train) / recipe.batch_size)
    for m, arch in enumerate(archs):
        file = "model.keras" if len(archs) == 1 else f"member{m}.keras"
        meta = {"file": file, "model": arch, "image_size": recipe.input_size(arch), "seed": seed + m}
        path = out_dir / file
        if path.is_file():
            print_(f"{out_dir.name}: member {m} ({arch}) trained before, loaded")
            best = _load_model(path)
        else:
            print_(f"{out_dir.name}: training member {m + 1}/{len(archs)} ({arch}, recipe {recipe.name}, "
                   f"{len(y_train)} patches, {recipe.epochs} epochs)")
            keras.utils.set_random_seed(seed + m)  # the initial weights too, whatever ran before in this process
            model = build_member(recipe, arch, weights if arch == recipe.model else None)
            train_ds, val_ds = datasets(recipe, arch, (x_train, y_train), (x_val, y_val), seed + m)
            averaged = {"use_ema": True, "ema_momentum": recipe.ema} if recipe.ema else {}
            optimizer = tr.make_optimizer(recipe.optimizer, learning_rate(recipe, steps), **averaged)
            training = tr.Training(optimizer, label_smoothing=recipe.label_smoothing, monitor=recipe.monitor,
                                   patience=recipe.patience, recalibrate_bn=recipe.recalibrate_bn)
            result = tr.fit(model, train_ds, val_ds, out_dir / f"run{m}", training, epochs=recipe.epochs,
                            seed=seed + m, key=f"{key}-member{m}", name=arch, train_patches=len(y_train),
                            verbose=verbose, class_weight=tr.class_weights(y_train) if recipe.class_weight else None)
            best = result.best_model(model)
            with atomic_path(path) as tmp:
                best.save(tmp)
            shutil.rmtree(out_dir / f"run{m}" / "checkpoints", ignore_errors=True)  # ~10 MB each; saved above
        members.append((best, {**meta, **_member_log(out_dir / f"run{m}")}))

    predictor = Predictor(members, recipe, stain=target)
    proba = predictor.predict(x_val, normalized=True)
    if recipe.context == "slide":
        predictor.context = slide.fit(proba, val_patients, y_val)
        proba = slide.apply(predictor.context, proba, val_patients)
    if recipe.threshold == "validation":
        predictor.threshold = evaluate.choose_threshold(y_val, proba)
        predictor.threshold_source = "chosen on validation at training"
    info["val"] = evaluate.scores(y_val, proba, predictor.threshold)
    predictor.info = info
    predictor.save(out_dir)
    return predictor


def _member_log(run_dir) -> dict:
    try:
        saved = json.loads((Path(run_dir) / "train.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: saved[k] for k in ("epochs_run", "seconds") if k in saved}


# --- prediction ---------------------------------------------------------------------------

@dataclass
class Predictor:
    """A trained recipe: ``predict(uint8 images)`` is P(IDC) per patch, with stain normalisation,
    TTA, the ensemble average and slide context applied as at training; ``>= threshold`` decides.
    A model file saved without a recipe (a notebook's) is a one-member predictor with no recipe."""

    members: list  # [(keras model, {"file", "model", "image_size", "seed", ...}), ...]
    recipe: Recipe | None
    stain: dict | None = None
    threshold: float = 0.5
    threshold_source: str = "fixed at 0.5 by the recipe"
    context: dict | None = None  # the fitted slide-context model (helpers.recipes.context), if the recipe has one
    info: dict = field(default_factory=dict)  # training counts and scores (model.json)
    last_fallbacks: int = 0  # patches the last predict() left un-normalised

    @property
    def tta(self) -> bool:
        return bool(self.recipe and self.recipe.tta)

    def config(self) -> dict:
        """What model.json holds to re-create this predictor (JSON-ready): ``CONFIG_KEYS``."""
        return {"recipe": self.recipe.as_dict(), "stain": self.stain, "tta": self.tta,
                "members": [dict(meta) for _, meta in self.members],
                "threshold": float(self.threshold), "threshold_source": self.threshold_source,
                "context": self.context}

    def predict(self, images, batch_size: int = 256, normalized: bool = False, tta: bool | None = None,
                patients=None) -> np.ndarray:
        """P(IDC) for uint8 patches (n, 50, 50, 3); ``normalized``: the stain step was done;
        ``tta`` overrides the recipe's (to score the other decision, as cross-validation does).
        A predictor with slide context needs ``patients``, the patient of each patch."""
        if self.context is not None and patients is None:
            raise ValueError(f"recipe {self.recipe.name!r} reads each patch with the other patches of its slide: "
                             "pass patients=, the patient of each patch")
        run = dihedral.predict_tta if (self.tta if tta is None else tta) else dihedral.predict_batches
        proba = self._mean_over_members(run, images, batch_size, normalized)[:, 1]
        return proba if self.context is None else slide.apply(self.context, proba, patients)

    def predict_both(self, images, batch_size: int = 256, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """P(IDC) from one view and averaged over the 8 dihedral views, from a single pass over the
        8 views (the first of them is the one view)."""
        every = self._mean_over_members(dihedral.predict_views, images, batch_size, normalized)[..., 1]
        return every[0], every.mean(axis=0)

    def _mean_over_members(self, run, images, batch_size: int, normalized: bool) -> np.ndarray:
        from .. import models

        images = np.asarray(images)
        if self.stain is not None and not normalized:
            done = stain_mod.normalize(images, self.stain)
            images, self.last_fallbacks = done.images, done.fallbacks
        # a model file saved without a recipe may not say which model it is: then no preprocessing
        outs = [run(model, images, batch_size, meta["image_size"],
                    meta["model"] and models.preprocess_for(meta["model"])) for model, meta in self.members]
        return np.mean(outs, axis=0)

    def save(self, out_dir) -> Path:
        """Write any member not on disk yet, then ``model.json`` (config, old-style keys, info)."""
        from ..io import atomic_path, write_text

        out_dir = Path(out_dir)
        for model, meta in self.members:
            if not (out_dir / meta["file"]).is_file():
                with atomic_path(out_dir / meta["file"]) as tmp:
                    model.save(tmp)
        first = self.members[0][1]
        doc = {"model": first["model"], "image_size": first["image_size"], **self.info, **self.config()}
        return write_text(out_dir / "model.json", json.dumps(doc, indent=2, default=float))

    @classmethod
    def load(cls, path) -> Predictor:
        """From a folder, its ``model.json``, or a model file. A model.json that names a recipe
        re-creates it; any other model file (a notebook's ``.keras``, maybe with a sidecar ``.json``
        of ``threshold``, ``model``, ``image_size``) is one member, decided at the sidecar's
        threshold, else 0.5."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        # OUT/model.keras -> OUT/model.json, even where an ensemble wrote member0.keras... instead
        sidecar = folder / "model.json" if path.is_dir() else path.with_suffix(".json")
        doc = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        if "recipe" in doc and "members" in doc:
            info = {k: v for k, v in doc.items() if k not in ("model", "image_size", *CONFIG_KEYS)}
            return cls([(_load_model(folder / meta["file"]), meta) for meta in doc["members"]],
                       Recipe.from_dict(doc["recipe"]), stain=doc.get("stain"), threshold=float(doc["threshold"]),
                       threshold_source=doc.get("threshold_source", ""), context=doc.get("context"), info=info)
        file = sidecar.with_suffix(".keras") if path.is_dir() or path.suffix == ".json" else path
        model = _load_model(file)
        meta = {"file": file.name, "model": doc.get("model"),
                "image_size": doc.get("image_size") or int(model.input_shape[1])}
        source = (doc.get("threshold_source", f"saved in {sidecar.name}") if "threshold" in doc
                  else "0.5: no threshold saved with the model")
        return cls([(model, meta)], None, threshold=float(doc.get("threshold", 0.5)), threshold_source=source)


CONFIG_KEYS = ("recipe", "stain", "tta", "members", "threshold", "threshold_source", "context")


def _load_model(file: Path):
    import keras

    if not file.is_file():
        raise FileNotFoundError(f"model file {file} does not exist")
    try:
        return keras.models.load_model(file)
    except Exception as exc:  # a truncated or foreign file: one clear line, not Keras' traceback
        raise ValueError(f"model file {file} does not load: {exc}") from exc


# --- the command line: train / evaluate with a recipe ----------------------------------------

def train_to_dir(recipe, data_dir, out_dir, *, seed: int = 42, split_dir=None, sample_size=None,
                 verbose: int = 2, log=print, profile: str | None = None) -> dict:
    """Train ``recipe`` on ``data_dir`` split by patient (70/15/15 with ``seed``, or the lists in
    ``split_dir``), every usable patch unless ``sample_size`` caps them; write the member(s) and
    model.json (with each split's ``counts``) to ``out_dir``; score the test patients if there are
    any. Returns model.json's content. ``profile`` is only recorded (the caller applied it)."""
    from .. import evaluate
    from ..config import is_generated
    from ..data import pipeline
    from ..data.cache import cached_index

    recipe = get(recipe)
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist")
    splits.check_cap(sample_size)
    df, _ = cached_index(data_dir, out_dir)
    split_df, note = splits.split_index(df, seed, split_dir)
    why = [] if len(split_df) == len(df) else [f"patients on none of the lists in {split_dir} left out"]
    if sample_size:
        split_df = splits.sample(split_df, max_patches=int(sample_size), seed=seed)
        why.append(f"capped at {int(sample_size):,} patches")
    split_df = split_df.reset_index(drop=True)
    log(f"{splits.used_patches_line(len(split_df), len(df), data_dir, '; '.join(why))}; split {note}; "
        f"recipe {recipe.name} (v{recipe.version}), model {recipe.model}, {recipe.epochs} epochs at most:\n"
        f"{splits.counts_table(split_df)}")
    for line in splits.check_classes(split_df, f"{data_dir}, {note}"):  # before decoding anything
        log(line)
    images, labels = pipeline.load_arrays(split_df)
    part = {name: (split_df["split"] == name).to_numpy() for name in ("train", "val", "test")}
    start = time.perf_counter()
    patients = split_df["patient"].to_numpy()
    predictor = train(recipe, (images[part["train"]], labels[part["train"]]),
                      (images[part["val"]], labels[part["val"]]), out_dir, seed=seed, verbose=verbose, log=log,
                      val_patients=patients[part["val"]], train_patients=patients[part["train"]])
    if not 0.02 <= predictor.threshold <= 0.98:  # the F1-best cut at an extreme: probabilities crowd one end
        log(f"warning: the threshold chosen on validation is {predictor.threshold:.4f}: the model's probabilities "
            "are crowded at one end; its test scores rest on that cut")
    test = None
    if part["test"].any():
        proba = predictor.predict(images[part["test"]], patients=patients[part["test"]])
        test = evaluate.scores(labels[part["test"]], proba, predictor.threshold)
    predictor.info.update({"data_dir": str(data_dir), "generated": is_generated(data_dir), "split": note,
                           "seed": seed, "profile": profile, "max_patches": int(sample_size) if sample_size else None,
                           "patches_available": len(df), "counts": splits.split_counts(split_df),
                           "seconds": round(time.perf_counter() - start, 1), "test": test})
    if recipe.name == "best" and recipe.version == BEST_VERSION:
        predictor.info["card"] = BEST_CARD  # what best is, how it was chosen, where it was scored
    predictor.info = json_safe(predictor.info)
    predictor.save(out_dir)
    return json.loads((Path(out_dir) / "model.json").read_text())


def evaluate_dir(model_path, data_dir, threshold: float | None = None, batch_size: int = 256,
                 log=None) -> dict:
    """Score every patch under ``data_dir`` with the model at ``model_path`` (``Predictor.load``) as it
    was trained (each patient folder read as one slide); ``threshold`` overrides the saved one. ``log``
    gets the counts scored, before scoring."""
    from .. import evaluate
    from ..data import pipeline
    from ..data.index import build_index

    predictor = Predictor.load(model_path)
    source = predictor.threshold_source
    if threshold is not None:
        predictor.threshold, source = float(threshold), "given"
    df, report = build_index(data_dir)
    scored = df.assign(split="test")
    if log:
        log(f"{splits.used_patches_line(len(df), len(df), data_dir, 'every patient a test patient')}:\n"
            f"{splits.counts_table(scored)}")
    images, labels = pipeline.load_arrays(df)
    proba = predictor.predict(images, batch_size=batch_size, patients=df["patient"].to_numpy())
    per = evaluate.per_patient(df, proba, predictor.threshold)
    r = predictor.recipe
    return {"model_path": str(model_path), "recipe": r.name if r else None, "recipe_version": r.version if r else None,
            "model": predictor.members[0][1]["model"], "members": len(predictor.members), "tta": predictor.tta,
            "stain": predictor.stain["method"] if predictor.stain else None,
            "slide_context": predictor.context is not None, "stain_fallbacks": predictor.last_fallbacks,
            "data_dir": str(data_dir), "threshold": float(predictor.threshold), "threshold_source": source,
            "files_seen": report.files_seen, "skipped": report.skipped, "counts": splits.split_counts(scored),
            **evaluate.scores(labels, proba, predictor.threshold),
            "per_patient": json.loads(per.to_json(orient="records"))}
