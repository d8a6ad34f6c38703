"""How long each notebook takes under a profile on one GPU: an ESTIMATE, not a measurement.

Nothing here ran on a GPU. For each notebook, ``profile_workload(profile)`` says what it trains
and predicts under that profile (read from the notebook and the helpers it calls; ``WORKLOAD`` is
the full profile's); each model's
forward-pass FLOPs per image come from TensorFlow's profiler (cached in ``flops.json``);
training costs 3 forward passes (forward + backward), or 1 where a frozen pretrained backbone
has no backward pass; a GPU delivers an assumed share of its fp16 peak (``UTILISATION``). Where
the host cannot feed images that fast (PNG decoding, one-thread augmentation, stain
normalisation), the host's rate measured on the 2-core reference machine sets the time
instead. ``python -m helpers.tools.estimate [--profile colab]`` prints the table; ``--measure``
re-measures this CPU; ``--colab-doc`` prints docs/colab.md.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

FLOPS_FILE = Path(__file__).with_name("flops.json")
NOTEBOOKS = ("00_data", "01_eda", "02_vgg_style", "03_resnet50", "04_inception_v3", "05_xception",
             "06_mobilenet_v2", "07_cancernet", "08_optimizers", "09_regularization",
             "10_architecture_variants", "11_hyperparameter_search", "12_breakhis_pretraining",
             "13_class_activation_maps", "14_model_comparison", "15_slide_heatmaps",
             "16_thyroid_backbones", "17_thyroid_domain_shift", "18_best_recipe")

# --- the GPUs and what share of their peak a Keras step reaches ---------------------------------

GPUS = {  # peak: dense fp16 tensor-core FLOP/s; cores: the host's, for its parallel input stages
    "t4": {"name": "NVIDIA T4 (Colab, 2 vCPUs)", "peak": 65e12, "cores": 2},
    "a100": {"name": "NVIDIA A100 (workstation, 8 cores)", "peak": 312e12, "cores": 8},
}
# Share of the peak a training or prediction step reaches with mixed precision and XLA (the
# series' GPU settings). ASSUMED, not measured here. The anchor ("dense_large"): NVIDIA's tuned
# TensorFlow ResNet50 (DeepLearningExamples, resnet50v1.5 README) trains at 2,375 img/s on an
# A100, 3 x 7.75 GFLOP x 2,375 = 18% of its peak, and predicts at 1,168 img/s on a T4, 14% (no T4
# training figure there); Keras' fit loop with tf.data is less tuned: 11% and 16%. Less work per
# step reaches less: at 50-75 px a backbone's late layers are 2x2 to 3x3 maps, the kernels are
# tiny and launch overhead dominates, more so on the A100, which needs more work to fill
# ("dense_small"). Depthwise convolutions (CancerNet, MobileNetV2, EfficientNet) cannot use the
# tensor cores and are memory-bound: EfficientNets train several times slower per FLOP than
# ResNets ("depthwise_large"), and CancerNet's 25 MFLOP per patch leaves a step of a few
# milliseconds that is mostly fixed cost ("small"). Each figure may be off by 2x either way.
UTILISATION = {
    "t4": {"dense_large": 0.11, "dense_small": 0.05, "depthwise_large": 0.03, "small": 0.015},
    "a100": {"dense_large": 0.16, "dense_small": 0.025, "depthwise_large": 0.05, "small": 0.005},
}
TRAIN_FACTOR = 3  # a training image costs forward + backward = 3 forward passes
FROZEN_FACTOR = 1  # a frozen backbone is only run forward; its few head FLOPs are left out
# Runs with early stopping (patience 5) stop 5 epochs after their best: on the real sample the
# runs in docs/measurements.md stopped after 8-19 of 20 epochs. ASSUMED for every run
# that can stop early; ``hours_cap`` counts every epoch up to the cap instead.
EXPECTED_EPOCHS = 15
EPOCH_OVERHEAD_S = 3  # per epoch: checkpoint, BackupAndRestore, callbacks (assumed)
RUN_OVERHEAD_S = 30  # per run: build, tracing and XLA compilation, loading the best epoch (assumed)
NOTEBOOK_OVERHEAD_S = 30  # start-up, imports, figures: 01_eda took 27 s in the smoke run

# --- the host: rates measured on the reference machine (2 cores, shared with other jobs) --------

# Images (or files) per second. Index and pack: ``make bench`` on the full-size set (2026-11-23,
# cold cache, alone on the machine, 6 processes); PIL, PNG and memory: docs/measurements.md
# (make bench on the real sample, 2026-11-22); the others ``measure_cpu()`` (best of 2 passes, 2026-11-23, under nice 19 while
# a cross-validation and other jobs ran: this process had 32% of the 2 cores, so these are low;
# the two passes differed by up to 2x).
HOST = {
    "index": 6_082,  # index.build_index: read and fully decode a file
    "pil": 5_733,  # a PIL loop into NumPy (crossval.load, load_arrays, BreakHis to_patches)
    "png": 8_664,  # tf.data PNG decoding: validation and test are decoded every epoch (not cached)
    "pack": 7_168,  # pipeline.pack
    "memory": 212_655,  # tf.data from arrays in memory: the cached training split
    "histology_aug": 1_324,  # augment "histology" at 50 px, in ONE thread (seeded, to repeat)
    "seed_aug": 1_223,  # augment "seed" at 50 px, one thread
    "thyroid_aug": 98,  # augment "seed_both_flips" at 224 px, one thread
    "reinhard": 1_736,  # stain.Normalizer at 50 px
    "macenko": 1_815,
    "thyroid_load": 1_038,  # thyroid.index.load_images to 224 px
    "thyroid_demo": 72,  # generated thyroid images (cropped + uncropped) per s
    "breakhis_demo": 44,  # generated BreakHis-like images per s
}
PARALLEL = {"index", "pack", "png", "memory", "thyroid_demo"}  # these scale with the host's cores
# CPU training images/s, ``measure_cpu()`` as above (batch 128, Adam, float32, no XLA), as the
# notebooks train: CancerNet from scratch (07), ResNet50 with its backbone frozen (03).
CPU_TRAINING = {"cancernet@50": 199.9, "resnet50@50": 185.5}
CPU_FROZEN = {"resnet50@50"}

# --- what a notebook does ----------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """``runs`` trainings alike: up to ``epochs`` epochs of ``train`` images, each followed by
    ``val`` predicted images, then ``predict`` images once (threshold, test, TTA, maps)."""

    model: str  # a key of flops.json: "cancernet@50", "cancernet@50 kernel_size=5"
    runs: int
    epochs: int
    train: int
    val: int
    predict: int = 0
    frozen: bool = False  # a frozen pretrained backbone: no backward pass through it
    early_stop: bool = True
    feed: str = "memory"  # the host rate (a key of HOST) of the training images
    val_feed: str = "png"  # and of the predicted ones


@dataclass(frozen=True)
class Notebook:
    jobs: tuple = ()
    data: tuple = ()  # (images, key of HOST): host work outside training
    note: str = ""


# --- the data and the settings of each profile ----------------------------------------------------

PATCHES, POSITIVES = 277_524, 78_786  # the real IDC set, 279 patients
SAMPLE_PATCHES, SAMPLE_POSITIVES = 9_563, 2_344  # the real sample shipped in data/idc-sample (230 patients)
RECIPE_EPOCHS, RECIPE_BATCH = 20, 64  # recipe.Recipe: a cross-validation's own epochs and batch
BACKBONES = ("vgg16", "vgg19", "resnet50_gap", "resnet101", "efficientnet_b7")  # notebook 16's
REGULARISATION_ARMS = 6  # notebook 09: none, L2 at 3 values, dropout, dropout + L2 (smoke: 1 L2 value)


@dataclass(frozen=True)
class Settings:
    """What the notebooks take, per profile, from tables other than ``config.PROFILES``. Mirrored
    here so that the estimate stays arithmetic (those modules import TensorFlow); the tests compare
    each with its source.

    ``search``: ``tuning.BUDGETS`` (trials per search, epochs per trial, patches);
    ``breakhis``: ``breakhis.generator.DEMO_SIZES`` (patients, images each); ``thyroid``:
    ``thyroid.generator.DEMO_SIZES`` (nodules, images each); ``thyroid_size``: ``thyroid.track.IMAGE_SIZE``; ``shift``:
    ``thyroid.track.SHIFT_SETTINGS`` (image size, epochs, batch); the rest notebook 18's settings
    cell: ``folds``, ``capped`` (the profile's epochs and sample per fold, else the recipes' own
    epochs and every patch), the two ablations' ingredients (None: all) and the learning curve's shares."""

    data: str  # "kaggle": the whole set; "sample": the shipped sample
    search: tuple
    breakhis: tuple
    thyroid: tuple
    thyroid_size: int
    shift: tuple
    folds: int
    capped: bool
    ingredients: tuple | None
    second_ingredients: tuple | None
    shares: tuple


SMOKE_INGREDIENTS = ("class_weight", "threshold", "bn_fix", "tta", "slide_context")
SETTINGS = {
    "smoke": Settings("sample", (3, 1, 600), (16, 12), (120, 3), 32, (32, 20, 32), 2, True,
                      SMOKE_INGREDIENTS, ("histology_aug", "threshold"), (0.5,)),
    "cpu": Settings("sample", (10, 3, 10_000), (40, 24), (300, 6), 128, (96, 20, 32), 5, False,
                    None, None, (0.125, 0.25, 0.5)),
    "full": Settings("kaggle", (25, 5, 50_000), (82, 48), (1000, 8), 224, (224, 15, 32), 5, False,
                     None, None, (0.125, 0.25, 0.5)),
    # PROPOSED for Colab (tuning, breakhis, thyroid, thyroid.track and notebook 18 have to follow):
    # searches of 8 trials of 3 epochs on 20,000 patches (a search's trials are mostly fixed costs);
    # the full-size BreakHis-like set; the thyroid set of cpu at the backbones' 224 px; notebook 18
    # as in smoke (2 folds, the profile's epochs and sample per fold) but without histology
    # augmentation, which runs in one thread on Colab's 2 vCPUs and lost on the real sample (the
    # decision-only ingredients cost no training).
    "colab": Settings("kaggle", (8, 3, 20_000), (82, 48), (300, 6), 224, (224, 10, 32), 2, True,
                      ("class_weight", "threshold", "bn_fix", "tta", "slide_context"), ("threshold",), (0.5,)),
}

# What each of recipe.INGREDIENTS costs in a cross-validation (the tests derive it from their
# options): "decision" is scored from the base's models without training; "gap" is another model;
# "histology" augments in one thread; "recal" recalibrates BatchNorm before each validation;
# "ensemble" trains 2 more members (the first is the base's); "reinhard" and "macenko" normalise
# the fold's patches on the CPU; "breakhis" generates a small BreakHis-like set to pretrain on;
# "plain" trains like the base.
INGREDIENT_COST = {
    "class_weight": "plain", "balanced_sampling": "plain", "threshold": "decision", "histology_aug": "histology",
    "dihedral_aug": "plain", "stain_reinhard": "reinhard", "stain_macenko": "macenko", "gap_head": "gap",
    "label_smoothing": "plain", "warmup": "plain", "tta": "decision", "slide_context": "decision",
    "ensemble": "ensemble", "breakhis": "breakhis", "bn_fix": "recal", "adam": "plain", "ema": "plain",
}
BEST_INGREDIENTS = ("bn_fix", "adam", "tta")  # recipe.BEST_INGREDIENTS


def profile_settings(profile: str) -> tuple[dict, Settings]:
    """(``config.PROFILES[profile]``, ``SETTINGS[profile]``); an unknown profile is named."""
    from .. import config

    if profile not in config.PROFILES or profile not in SETTINGS:
        known = sorted(set(config.PROFILES) & set(SETTINGS))
        raise ValueError(f"no estimate for profile {profile!r}; known: {', '.join(known)}")
    return config.PROFILES[profile], SETTINGS[profile]


def split_sizes(patches: int, positives: int, cap=None) -> tuple[int, int, int]:
    """(balanced training, validation, test) patches of ``experiment.prepare_data``: test is 1 of
    round(1/0.15) = 7 patient folds, validation 1 of 6 folds of the rest (patients differ in size:
    approximate); a cap takes 70% / 15% / 15% of it, the training part balanced."""
    val = test = round(patches / 7)
    train = patches - val - test
    train_positives = round(train * positives / patches)
    limit = train if cap is None else max(2, round(cap * 0.7))
    if cap is not None:
        val, test = min(val, max(2, round(cap * 0.15))), min(test, max(2, round(cap * 0.15)))
    return 2 * min(limit // 2, train_positives, train - train_positives), val, test


def fold_sizes(patches: int, folds: int, cap=None) -> tuple[int, int, int]:
    """(training, validation, test) patches of one cross-validation fold: test is 1 of ``folds``
    patient folds, validation 1 of 7 of the rest; a cap per fold keeps each part's share."""
    test = round(patches / folds)
    val = round((patches - test) / 7)
    train = patches - test - val
    if cap is not None and cap < patches:
        train, val, test = (round(cap * n / patches) for n in (train, val, test))
    return train, val, test


def profile_workload(profile: str = "full") -> dict:
    """One :class:`Notebook` per notebook: what it trains, predicts and reads under ``profile``,
    read from the notebooks and the helpers they call (``config.PROFILES`` and ``SETTINGS``)."""
    p, s = profile_settings(profile)
    epochs, seeds, cap, batch = p["epochs"], p["seeds"], p["sample_size"], p["batch_size"]
    patches, positives = (PATCHES, POSITIVES) if s.data == "kaggle" else (SAMPLE_PATCHES, SAMPLE_POSITIVES)
    balanced, val, test = split_sizes(patches, positives, cap)
    whole_val, whole_test = split_sizes(patches, positives)[1:]
    recal = 20 * batch  # train.fit recalibrates learning BatchNorm layers on 20 batches per epoch

    def idc(model, runs=1, val=val, predict=val + test, **kw) -> Job:
        return Job(model, runs, epochs, balanced, val, predict, **kw)

    decode = ((balanced, "png"),)  # the training split, decoded once into the cache
    variants = ("cancernet@50", "cancernet@50 filters=[[16],[32,32],[64,64,64],[128,128,128]]",
                "cancernet@50 kernel_size=2", "cancernet@50 kernel_size=5", 'cancernet@50 downsample="stride"',
                "cancernet@75")
    arms = REGULARISATION_ARMS - 2 * (profile == "smoke")

    trials, trial_epochs, search_cap = s.search
    search_train, search_val, _ = split_sizes(patches, positives, search_cap)
    bh_images = s.breakhis[0] * s.breakhis[1]
    bh_train, bh_val = round(0.7 * 4 * bh_images), round(0.15 * 4 * bh_images)  # 4 tiles per image
    # thyroid.index.split: test is 20% of the nodules, validation 15% of the rest
    images = s.thyroid[0] * s.thyroid[1]
    th_test = round(0.2 * images)
    th_val = round(0.15 * (images - th_test))
    th_train = images - th_test - th_val
    thyroid = dict(feed="thyroid_aug", val_feed="memory")
    shift_size, shift_epochs, shift_batch = s.shift
    th_recal = 20 * shift_batch
    backbones = BACKBONES[:3] if profile == "smoke" else BACKBONES  # thyroid.track.TRAINED_BACKBONES
    frozen = p["weights"] is not None  # ImageNet weights: notebooks 03-06 and 16 freeze the backbone

    return {
        "00_data": Notebook((), ((2 * patches, "index"), (patches, "pack")),
                            "no training; the index decodes both copies of the archive's tree, pack decodes "
                            "every patch; the Kaggle download is not counted"),
        "01_eda": Notebook((), ((4_000, "pil"),), "no training; a 2,000-patch colour sample and one slide"),
        "02_vgg_style": Notebook((idc("vgg_style@50"),), decode,
                                 f"1 run from scratch on the balanced training split (~{balanced:,} patches)"),
        "03_resnet50": Notebook((idc("resnet50@50", val=val + recal, frozen=frozen),), decode,
                                "ImageNet backbone frozen (FINE_TUNE_AT None): the head learns" if frozen
                                else "from scratch"),
        "04_inception_v3": Notebook((idc("inception_v3@75", frozen=frozen),), decode,
                                    f"{'frozen backbone' if frozen else 'from scratch'}, 75 px"),
        "05_xception": Notebook((idc("xception@71", frozen=frozen),), decode,
                                f"{'frozen backbone' if frozen else 'from scratch'}, 71 px"),
        "06_mobilenet_v2": Notebook((idc("mobilenet_v2@50", frozen=frozen),), decode,
                                    f"{'frozen backbone' if frozen else 'from scratch'}, 50 px"),
        "07_cancernet": Notebook((idc("cancernet@50", val=val + recal),), decode, "1 run from scratch"),
        "08_optimizers": Notebook((idc("cancernet@50", 5 * seeds, val=val + recal), idc("cancernet@50", 2 * seeds)),
                                  decode, f"5 optimizers + 2 BatchNorm arms, x {seeds} seed(s) = {7 * seeds} runs"),
        "09_regularization": Notebook(
            (idc("cancernet@50", arms * seeds, val=val + recal),
             idc("cancernet@50", seeds, val=val + recal, feed="seed_aug"),
             idc("cancernet@50", seeds, val=val + recal, feed="histology_aug")), ((3 * balanced, "png"),),
            f"{arms} regularisation + 2 augmentation arms, x {seeds} seed(s) = {(arms + 2) * seeds} runs; "
            "augmentation in one thread"),
        "10_architecture_variants": Notebook(tuple(idc(k, seeds, val=val + recal) for k in variants),
                                             ((2 * balanced, "png"),),
                                             f"6 CancerNet variants x {seeds} seed(s) = {6 * seeds} runs"),
        "11_hyperparameter_search": Notebook(
            (Job("cancernet@50", 2 * trials, trial_epochs, search_train, search_val + recal, early_stop=False),
             Job("cancernet@50", 1, epochs, bh_train, bh_val + recal, 2 * bh_val, val_feed="memory"),
             idc("cancernet@50", val=val + recal)),
            ((search_train + balanced, "png"), (bh_images, "breakhis_demo"), (bh_images, "pil")),
            f"2 searches x {trials} trials x {trial_epochs} epochs on {search_cap:,} patches; BreakHis "
            "pretraining; 1 retraining"),
        "12_breakhis_pretraining": Notebook(
            (idc("cancernet@50", 2 * seeds, val=val + recal),), decode,
            f"scratch and BreakHis arms x {seeds} seed(s); the pretraining is read back from 11"),
        "13_class_activation_maps": Notebook(
            (idc("cancernet@50", val=val + recal), idc("mobilenet_v2@50", val=val + recal, predict=0)),
            ((2 * balanced, "png"),),
            "train_or_load trains CancerNet and MobileNetV2, both from scratch; Grad-CAM of 256 patches"),
        "14_model_comparison": Notebook((), (), "no training: reads the registry and saved predictions"),
        "15_slide_heatmaps": Notebook((Job("cancernet@50", 1, 0, 0, 0, whole_val + 2 * whole_test),), (),
                                      "reads 13's CancerNet back; scores every patch of the test patients"),
        "16_thyroid_backbones": Notebook(
            tuple(Job(f"{m}@{s.thyroid_size}", 1, epochs, th_train, th_val, th_val + th_test, frozen=frozen,
                      **thyroid) for m in backbones),
            ((images, "thyroid_demo"), (3.2 * images, "thyroid_load")),
            f"{len(backbones)} {'frozen ImageNet backbones' if frozen else 'backbones from scratch'} at {s.thyroid_size} px on "
            f"~{th_train:,} generated images; augmentation in one thread"),
        "17_thyroid_domain_shift": Notebook(
            (Job(f"cancernet@{shift_size}", 2, shift_epochs, th_train, th_val + th_recal,
                 2 * th_val + 3 * th_test, **thyroid),
             Job(f"cancernet@{shift_size}", 1, shift_epochs, 2 * th_train, 2 * th_val + th_recal,
                 4 * th_val + 3 * th_test, **thyroid)),
            ((6.4 * images, "thyroid_load"),),
            f"CancerNet from scratch at {shift_size} px, batch {shift_batch}, {shift_epochs} epochs; 3 arms: "
            "cropped, uncropped, both"),
        "18_best_recipe": best_recipe(s, epochs if s.capped else RECIPE_EPOCHS, cap if s.capped else None, patches),
    }


def best_recipe(s: Settings, epochs: int, cap, patches: int) -> Notebook:
    """Notebook 18: an ablation of single ingredients on ``seed``, a second on ``best``'s base,
    ``best`` itself (scored from the second's base: it adds only TTA), a learning curve of
    ``best`` on shares of each fold's training patches; every run on every fold."""
    train, val, test = fold_sizes(patches, s.folds, cap)
    fold_patches = train + val + test
    views = 8 * (val + test)  # every fold predicts the 8 views of its validation and test patches (views.csv)
    recal_val = val + 20 * RECIPE_BATCH  # bn_fix: 20 batches recalibrate BatchNorm before each validation
    first = list(INGREDIENT_COST) if s.ingredients is None else list(s.ingredients)
    second = ([i for i in INGREDIENT_COST if i not in BEST_INGREDIENTS] if s.second_ingredients is None
              else list(s.second_ingredients))
    runs: dict = {}  # (model, feed, validated with recalibration) -> trainings per fold
    data = [(patches, "pil")]  # crossval.load decodes every patch once
    breakhis = False
    for base_recal, chosen in ((False, first), (True, second)):
        runs[("cancernet@50", "memory", base_recal)] = runs.get(("cancernet@50", "memory", base_recal), 0) + 1
        for name in chosen:
            cost = INGREDIENT_COST[name]
            if cost == "decision":
                continue
            key = ('cancernet@50 head="gap"' if cost == "gap" else "cancernet@50",
                   "histology_aug" if cost == "histology" else "memory", base_recal or cost == "recal")
            runs[key] = runs.get(key, 0) + (2 if cost == "ensemble" else 1)
            if cost in ("reinhard", "macenko"):
                data.append((s.folds * fold_patches, cost))
            breakhis |= cost == "breakhis"
    if breakhis:
        data.append((16 * 12, "breakhis_demo"))  # recipes' breakhis_profile "smoke": 16 patients x 12
    jobs = [Job(model, n * s.folds, epochs, train, recal_val if recal else val, views, val_feed="memory", feed=feed)
            for (model, feed, recal), n in runs.items()]
    shares = [x for x in s.shares if x < 1]
    jobs += [Job("cancernet@50", s.folds, epochs, round(x * train), recal_val, views, val_feed="memory")
             for x in shares]
    trained = sum(runs.values())
    stain = any(key in ("reinhard", "macenko") for _, key in data)
    note = (f"{len(first)} ingredients on seed and {len(second)} on seed+bn_fix+adam ({trained} trainings with the "
            f"bases, ensembles count 2, decision-only ones none), best scored from its base, a learning curve on "
            f"{len(shares)} share(s); x {s.folds} folds on {'every patch' if cap is None else f'{fold_patches:,} patches'},"
            f" {epochs} epochs, batch {RECIPE_BATCH}; 8 views predicted per fold"
            + ("; stain normalisation on the CPU" if stain else ""))
    return Notebook(tuple(jobs), tuple(data), note)


WORKLOAD = profile_workload("full")


# --- FLOPs --------------------------------------------------------------------------------------

def model_key(name, image_size, **build) -> str:
    """The key of a model in flops.json: ``"cancernet@50"``, ``"cancernet@50 kernel_size=5"``."""
    extra = [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in sorted(build.items())]
    return " ".join([f"{name}@{int(image_size)}", *extra])


def parse_key(key) -> tuple[str, int, dict]:
    head, *extra = key.split(" ")
    name, size = head.split("@")
    return name, int(size), {k: json.loads(v) for k, v in (e.split("=", 1) for e in extra)}


def count_flops(model) -> int:
    """Forward-pass FLOPs of one input of a built Keras model, counted by TensorFlow's profiler
    on the frozen graph of a concrete function: a multiply-add is 2 FLOPs, an element-wise op
    one per element, an op the profiler has no rule for 0."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph

    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    _, graph_def = convert_variables_to_constants_v2_as_graph(concrete)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(),
                                             cmd="op", options=options)
    return int(info.total_float_ops)


def model_flops(name, image_size, **build) -> int:
    """Forward FLOPs of one image for ``models.build_model(name, image_size, weights=None, **build)``."""
    import keras

    from .. import models

    model = models.build_model(name, image_size=image_size, weights=None, **build)
    try:
        return count_flops(model)
    finally:
        del model
        keras.backend.clear_session()


GPU_PROFILES = ("full", "colab")  # flops.json counts their models; the CPU profiles' are scaled (image_flops)


def needed_keys() -> list[str]:
    return sorted({job.model for profile in GPU_PROFILES for nb in profile_workload(profile).values() for job in nb.jobs}
                  | set(CPU_TRAINING))


def update_flops(force: bool = False, path=FLOPS_FILE) -> dict:
    """Count every model of WORKLOAD that ``path`` lacks (all with ``force``) and rewrite it.
    Each is built once: EfficientNetB7 at 224 px takes a while on a CPU."""
    table = {} if force or not Path(path).is_file() else load_flops(path)
    for key in needed_keys():
        if key not in table:
            name, size, build = parse_key(key)
            start = time.perf_counter()
            table[key] = model_flops(name, size, **build)
            print(f"{key}: {table[key]:,} FLOPs ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    Path(path).write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    return table


def load_flops(path=FLOPS_FILE) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing: python -m helpers.tools.estimate --update-flops writes it")
    return json.loads(Path(path).read_text())


# --- the estimate -------------------------------------------------------------------------------

def kind(key) -> str:
    """The UTILISATION class of a model key."""
    name, size, _ = parse_key(key)
    if name in ("cancernet", "mobilenet_v2"):
        return "small"
    if name.startswith("efficientnet"):
        return "depthwise_large"
    return "dense_large" if size >= 160 else "dense_small"


def _gpu(gpu) -> dict:
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    return GPUS[gpu]


def host_rate(key, gpu) -> float:
    """Images/s of a host stage beside ``gpu``: parallel stages scale with the host's cores."""
    rate = HOST[key]
    return rate * _gpu(gpu)["cores"] / 2 if key in PARALLEL else rate


def job_cost(job: Job, flops: dict, gpu: str, every_epoch: bool = False) -> dict:
    """Seconds of ``job`` on ``gpu`` split by what limits them, with its images and FLOPs."""
    rate = _gpu(gpu)["peak"] * UTILISATION[gpu][kind(job.model)]
    per_image = image_flops(job.model, flops)
    epochs = job.epochs if every_epoch or not job.early_stop else min(job.epochs, EXPECTED_EPOCHS)
    factor = FROZEN_FACTOR if job.frozen else TRAIN_FACTOR
    phases = [  # (images, FLOPs per image, host key, times per run): each phase waits for the slower side
        (job.train, factor * per_image, job.feed, epochs),
        (job.val, per_image, job.val_feed, epochs),
        (job.predict, per_image, job.val_feed, 1),
    ]
    gpu_s = host_s = 0.0
    for images, cost, feed, times in phases:
        compute, fed = images * cost / rate, images / host_rate(feed, gpu)
        if compute >= fed:
            gpu_s += times * compute
        else:
            host_s += times * fed
    return {"gpu_s": job.runs * gpu_s, "host_s": job.runs * host_s,
            "overhead_s": job.runs * (epochs * EPOCH_OVERHEAD_S + RUN_OVERHEAD_S),
            "images": job.runs * epochs * job.train,
            "flops": job.runs * per_image * (epochs * (job.train * factor + job.val) + job.predict)}


def notebook_cost(nb: Notebook, flops: dict, gpu: str, every_epoch: bool = False) -> dict:
    costs = [job_cost(job, flops, gpu, every_epoch) for job in nb.jobs]
    total = {k: sum(c[k] for c in costs) for k in ("gpu_s", "host_s", "overhead_s", "images", "flops")}
    total["data_s"] = sum(n / host_rate(key, gpu) for n, key in nb.data)
    total["overhead_s"] += NOTEBOOK_OVERHEAD_S
    total["seconds"] = total["gpu_s"] + total["host_s"] + total["overhead_s"] + total["data_s"]
    return total


LIMITS = {"gpu_s": "GPU compute", "host_s": "host input", "data_s": "data handling",
          "overhead_s": "fixed costs"}


def image_flops(key, flops: dict) -> float:
    """Forward FLOPs of one image for model ``key``: counted in ``flops``, else scaled by area from
    the same model counted at the nearest other size (convolutions cost per pixel; the small dense
    head makes this a slight overestimate at smaller sizes)."""
    if key in flops:
        return flops[key]
    name, size, build = parse_key(key)
    others = [(abs(s - size), s, k) for k in flops for n, s, b in [parse_key(k)] if n == name and b == build]
    if not others:
        raise KeyError(f"no FLOPs for model {key!r} in flops.json: python -m helpers.tools.estimate --update-flops counts it")
    _, counted, other = min(others)
    return flops[other] * (size / counted) ** 2


def estimate(gpu: str = "t4", workload: dict | None = None, flops: dict | None = None,
             profile: str = "full") -> pd.DataFrame:
    """One row per notebook: images trained, FLOPs, ESTIMATED hours on ``gpu`` (early stopping
    after EXPECTED_EPOCHS; ``hours_cap``: every epoch), what limits it, and the assumptions."""
    _gpu(gpu)
    workload = profile_workload(profile) if workload is None else workload
    flops = load_flops() if flops is None else flops
    rows = []
    for name, nb in workload.items():
        cost = notebook_cost(nb, flops, gpu)
        rows.append({"notebook": name, "train_images": int(cost["images"]), "flops": cost["flops"],
                     "hours": cost["seconds"] / 3600,
                     "hours_cap": notebook_cost(nb, flops, gpu, every_epoch=True)["seconds"] / 3600,
                     "limited_by": LIMITS[max(LIMITS, key=cost.get)], "note": nb.note})
    return pd.DataFrame(rows).set_index("notebook")


def calibration(flops: dict | None = None) -> pd.DataFrame:
    """The CPU measured against the assumed GPUs: img/s and effective FLOP/s of training."""
    flops = load_flops() if flops is None else flops
    rows = []
    for key, per_s in CPU_TRAINING.items():
        per_image = flops[key] * (FROZEN_FACTOR if key in CPU_FROZEN else TRAIN_FACTOR)
        row = {"model": key + (" (frozen)" if key in CPU_FROZEN else ""), "train_flop_per_image": per_image,
               "cpu_img_s": per_s, "cpu_gflop_s": per_s * per_image / 1e9}
        for gpu in GPUS:
            effective = GPUS[gpu]["peak"] * UTILISATION[gpu][kind(key)]
            row[f"{gpu}_tflop_s"] = effective / 1e12
            row[f"{gpu}_img_s"] = effective / per_image
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def table_markdown(gpus=("t4", "a100"), workload=None, flops=None, profile: str = "full") -> str:
    """The README table: one row per notebook and a total, hours for each GPU (an ESTIMATE)."""
    tables = {gpu: estimate(gpu, workload, flops, profile) for gpu in gpus}
    first, g0 = tables[gpus[0]], gpus[0].upper()
    head = ["notebook", "images trained", "PFLOP", *(f"{g.upper()} h" for g in gpus),
            f"{g0} h, no early stop", f"{g0} limited by", "assumptions"]
    rows = [[f"`{name}`", f"{row['train_images']:,}", f"{row['flops'] / 1e15:.1f}",
             *(_hours(tables[g].loc[name, "hours"]) for g in gpus), _hours(row["hours_cap"]),
             row["limited_by"], row["note"]] for name, row in first.iterrows()]
    rows.append(["**total**", f"{first['train_images'].sum():,}", f"{first['flops'].sum() / 1e15:.0f}",
                 *(f"**{_hours(tables[g]['hours'].sum())}**" for g in gpus), _hours(first["hours_cap"].sum()),
                 "", ""])
    return _markdown(head, rows)


def calibration_markdown(flops=None) -> str:
    """``calibration()`` as a markdown table."""
    table = calibration(flops)
    head = ["model (training)", "FLOP per image", "CPU img/s (measured)", "CPU GFLOP/s",
            *(f"{g.upper()} TFLOP/s, img/s (assumed)" for g in GPUS)]
    rows = [[f"`{name}`", f"{row['train_flop_per_image'] / 1e6:,.0f} M", f"{row['cpu_img_s']:,.0f}",
             f"{row['cpu_gflop_s']:,.0f}",
             *(f"{row[f'{g}_tflop_s']:.2f}, {row[f'{g}_img_s']:,.0f}" for g in GPUS)]
            for name, row in table.iterrows()]
    return _markdown(head, rows)


def _markdown(head, rows) -> str:
    lines = [head, ["---"] * len(head), *rows]
    return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in lines)


def _hours(h) -> str:
    return f"{h:.2f}" if h < 1 else f"{h:.1f}" if h < 10 else f"{h:.0f}"


# --- Colab: links, the profile's table, docs/colab.md ---------------------------------------------

THYROID_NOTEBOOKS = ("16_thyroid_backbones", "17_thyroid_domain_shift")  # the others are the IDC track
COLAB_NOTEBOOK_MINUTES, COLAB_SERIES_HOURS = 20, 3  # the colab profile's budget on one T4 (estimated)
PLACEHOLDER_REPO = "https://github.com/<owner>/<repo>"
# The notebooks' first code cell (IPython: ``!`` runs a shell line, ``%cd`` moves the kernel, and the
# repository root on sys.path through the working directory makes ``import helpers`` work at once;
# the editable install's own hook only takes effect after a restart). Elsewhere the test is False.
# The first code cell of every notebook; {repo} is a placeholder there until a user sets it.
COLAB_SETUP_CELL = """\
if "google.colab" in str(get_ipython()):  # Colab: clone this repository (or your fork) once, and work in it
    !test -d /content/idc || git clone -q --depth 1 {repo} /content/idc
    %cd /content/idc"""


def github_repo(repo_url) -> tuple[str, str]:
    """(owner, name) of a GitHub repository given as ``https://github.com/owner/name[.git]``,
    ``git@github.com:owner/name.git``, ``github.com/owner/name`` or ``owner/name``."""
    import re

    text = str(repo_url).strip()
    # GitHub account names are letters, digits and hyphens (<, > for the placeholder <owner>);
    # repository names may hold dots
    found = re.fullmatch(r"(?:(?:https?://)?(?:www\.)?github\.com/|git@github\.com:)?([A-Za-z0-9<>-]+)/([^/\s]+?)"
                         r"(?:\.git)?/?", text)
    if not found or found[2] in (".", ".."):
        raise ValueError(f"not a GitHub repository: {repo_url!r}; Colab opens notebooks from GitHub, "
                         "e.g. https://github.com/<owner>/<repo>")
    return found[1], found[2]


def colab_links(repo_url, branch: str = "main") -> dict:
    """{notebook: the URL that opens it from ``repo_url`` (its ``branch``) in Colab}."""
    owner, name = github_repo(repo_url)
    return {nb: f"https://colab.research.google.com/github/{owner}/{name}/blob/{branch}/notebooks/{nb}.ipynb"
            for nb in NOTEBOOKS}


def colab_table(repo_url=PLACEHOLDER_REPO, profile: str = "colab", gpu: str = "t4", branch: str = "main") -> str:
    """One row per notebook: its Colab link, ESTIMATED minutes on ``gpu`` under ``profile``, what
    limits it and the assumptions; a total in hours."""
    table, links = estimate(gpu, profile=profile), colab_links(repo_url, branch)
    g = gpu.upper()
    head = ["notebook", "open in Colab", f"{g} min (estimate)", "limited by", "assumptions"]
    rows = [[f"`{name}`", f"[open]({links[name]})", f"{row['hours'] * 60:.0f}", row["limited_by"], row["note"]]
            for name, row in table.iterrows()]
    rows.append(["**total**", "", f"**{_hours(table['hours'].sum())} h**", "", ""])
    return _markdown(head, rows)


def colab_markdown(repo_url=PLACEHOLDER_REPO, branch: str = "main") -> str:
    """The page docs/colab.md, written by this function (tests compare the file with it)."""
    import textwrap

    p, s = profile_settings("colab")
    t4 = estimate("t4", profile="colab")
    idc = t4.drop(index=list(THYROID_NOTEBOOKS))
    settings = ", ".join(f"`{k}={v!r}`" for k, v in p.items())
    owner, name = github_repo(repo_url)
    return f"""# The series on Colab: `PROFILE = "colab"`

<!-- Written by `python -m helpers.tools.estimate --colab-doc > docs/colab.md`; tests/test_estimate.py
checks that this file is what that command prints. Edit helpers/tools/estimate.py, not this file. -->

For instructors who re-run the notebooks on a free Colab GPU (one NVIDIA T4, 2 vCPUs). The profile
`colab` runs every notebook on the whole Kaggle set (277,524 patches of 279 patients) in a budget
sized for a class: by the estimate below, each IDC notebook in about {COLAB_NOTEBOOK_MINUTES} minutes and the whole
series in about {COLAB_SERIES_HOURS} hours. It sets {settings}.

## Open a notebook

Each link opens a notebook of `{owner}/{name}` (branch `{branch}`) in Colab. For your fork, replace
`<owner>/<repo>`, or print the links with
`python -m helpers.tools.estimate --colab-links https://github.com/<owner>/<repo>`:
every link is `https://colab.research.google.com/github/<owner>/<repo>/blob/{branch}/notebooks/NN_name.ipynb`.

## Run it on a T4

1. *Runtime → Change runtime type → T4 GPU*.
2. Run the first code cell: on Colab it clones the repository into `/content/idc` and works there;
   elsewhere it does nothing. The next cell's `notebook.setup()` installs the requirements Colab lacks
   (keras-tuner, scikit-plot, torchstain; Colab's own TensorFlow stays). For a fork, put its URL in the first cell:
   ```python
{textwrap.indent(COLAB_SETUP_CELL.format(repo=f"https://github.com/{owner}/{name}"), "   ")}
   ```
3. In the parameters cell set `PROFILE = "colab"`. With `DATA_DIR = None` the profile takes the
   whole Kaggle set: `helpers.data.download.download_idc()` fetches it once per session (public, no
   token) and checks it. Any value left at `None` takes the profile's. A token is asked for only
   if Kaggle refuses the download; offline, the call fails with one line that says how to give
   `DATA_DIR` by hand.
4. *Runtime → Run all*. Some notebooks read what earlier ones wrote (12 reads 11's BreakHis
   pretraining, 15 reads 13's CancerNet, 14 the results registry of all): run them in order in one
   session, or set `OUTPUT_DIR` to a folder on Google Drive, since `/content` is gone with the session.

## How long: an estimate, not a measurement

No notebook has run on a Colab T4 here. `helpers.tools.estimate` computes these minutes from what each
notebook trains and predicts under `colab`, the models' FLOPs, an assumed share of the T4's peak
and host rates measured on a 2-core machine; each figure may be off by 2x either way. The longest
IDC notebook takes {idc['hours'].max() * 60:.0f} min (`{idc['hours'].idxmax()}`); the series {_hours(t4['hours'].sum())} h.

{colab_table(repo_url, branch=branch)}

Besides `config.PROFILES`, the profile sets (`helpers.tools.estimate.SETTINGS`): hyperparameter searches
of {s.search[0]} trials x {s.search[1]} epochs on {s.search[2]:,} patches; the generated BreakHis-like set of
{s.breakhis[0]} patients x {s.breakhis[1]} images; the generated thyroid set of {s.thyroid[0]} nodules x {s.thyroid[1]} images at
{s.thyroid_size} px; notebook 18 on {s.folds} folds with the profile's epochs and sample per fold. Reprint this table:
`python -m helpers.tools.estimate --profile colab`.
"""


# --- measuring this CPU -------------------------------------------------------------------------

def measure_training(key, batch: int = 128, steps: int = 16, frozen: bool = False) -> float:
    """Training images/s of model ``key`` on this machine (random images, Adam, after a warm-up)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from .. import models, train

    name, size, build = parse_key(key)
    model = models.build_model(name, image_size=size, weights=None, seed=0, **build)
    if frozen:
        for layer in models.backbone_layers(model):
            layer.trainable = False
    train.compile_model(model, "adam")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 2, batch), 2)
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(2), verbose=0)  # traces the step
    start = time.perf_counter()
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(steps), verbose=0)
    return steps * batch / (time.perf_counter() - start)


def _rate(run, n) -> float:
    start = time.perf_counter()
    run()
    return n / (time.perf_counter() - start)


def _patches(n):
    """``n`` IDC patches to time stain normalisation on: the real sample shipped in the repository
    (Macenko's cost depends on the tissue), else the generated demo set."""
    import numpy as np

    from .. import config
    from ..data import pipeline

    for root in (config.SAMPLE_DIR, config.demo_dir()):
        paths = sorted(root.rglob("*.png"))[:n]
        if len(paths) == n:
            return np.stack([pipeline.load_patch(p) for p in paths])
    raise FileNotFoundError("no IDC patches to measure on: run `python -m helpers make-demo` first")


def measure_host(n: int = 2048) -> dict:
    """The host rates of HOST that README does not give, measured here (images/s)."""
    import tempfile

    import numpy as np
    import tensorflow as tf

    from ..breakhis.generator import make_demo as make_breakhis_demo
    from ..data import augment, stain
    from ..thyroid.generator import make_demo as make_thyroid_demo
    from ..thyroid.index import build_index, load_images

    patches = _patches(n)
    out = {}
    for key, name, size in (("histology_aug", "histology", 50), ("seed_aug", "seed", 50),
                            ("thyroid_aug", "seed_both_flips", 224)):
        count = n if size == 50 else n // 8
        x = tf.image.resize(tf.cast(patches[:count], tf.float32), (size, size)) if size != 50 else patches
        ds = tf.data.Dataset.from_tensor_slices((np.asarray(x, np.float32), np.zeros(count))).batch(128)
        ds = augment.apply(ds, name, seed=0, parallel=False)
        next(iter(ds))  # traces the augmentation
        out[key] = _rate(lambda ds=ds: [None for _ in ds], count)
    for method in stain.METHODS:
        normalizer = stain.Normalizer.fit(patches, method)
        out[method] = _rate(lambda nz=normalizer: nz(patches), n)
    with tempfile.TemporaryDirectory() as tmp:
        out["thyroid_demo"] = _rate(lambda: make_thyroid_demo(Path(tmp, "th"), 20, 4, seed=0), 80)
        df, _ = build_index(Path(tmp, "th"))
        out["thyroid_load"] = _rate(lambda: load_images(df, 224), len(df))
        out["breakhis_demo"] = _rate(lambda: make_breakhis_demo(Path(tmp, "bh"), 2, 8, seed=0), 16)
    return {k: round(v) for k, v in out.items()}


def measure_cpu(passes: int = 2) -> dict:
    """Everything this module measures, best of ``passes`` (other jobs slow a pass down): host
    rates, CPU training throughput, and the share of the machine's cores this process had
    meanwhile (below 1: other jobs ran, and the rates are lower than on an idle machine)."""
    import os

    wall, cpu = time.perf_counter(), time.process_time()
    host, training = {}, {}
    for _ in range(passes):
        for key, value in measure_host().items():
            host[key] = max(value, host.get(key, 0))
        for key in CPU_TRAINING:
            rate = round(measure_training(key, frozen=key in CPU_FROZEN), 1)
            training[key] = max(rate, training.get(key, 0))
    share = (time.process_time() - cpu) / ((time.perf_counter() - wall) * (os.cpu_count() or 1))
    return {"host": host, "training": training, "cpu_share": round(share, 2),
            "date": time.strftime("%Y-%m-%d")}


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.tools.estimate", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full", help="the profile to estimate (default: full)")
    parser.add_argument("--update-flops", action="store_true", help="count the models flops.json lacks")
    parser.add_argument("--force", action="store_true", help="with --update-flops: count every model again")
    parser.add_argument("--measure", action="store_true", help="measure this CPU (minutes) and print it")
    parser.add_argument("--colab-links", metavar="REPO_URL", help="print each notebook's Open-in-Colab link")
    parser.add_argument("--colab-doc", action="store_true", help="print docs/colab.md")
    parser.add_argument("--branch", default="main", help="with --colab-links or --colab-doc")
    args = parser.parse_args(argv)
    try:
        if args.colab_links:
            print("\n".join(f"{nb}  {url}" for nb, url in colab_links(args.colab_links, args.branch).items()))
            return 0
        if args.colab_doc:
            print(colab_markdown(branch=args.branch), end="")
            return 0
        profile_settings(args.profile)
    except ValueError as exc:  # a wrong profile or repository: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.update_flops:
        update_flops(force=args.force)
    if args.measure:
        print(json.dumps(measure_cpu(), indent=1))
        return 0
    print(f"ESTIMATED hours with PROFILE={args.profile} on one GPU (an estimate, not a measurement):\n")
    print(table_markdown(profile=args.profile))
    print("\nCalibration: CPU measured on the 2-core reference machine, GPU assumed (UTILISATION):\n")
    print(calibration_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
