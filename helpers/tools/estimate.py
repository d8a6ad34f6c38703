"""How long each notebook takes under a profile on one GPU: an ESTIMATE, not a measurement.

Nothing here ran on a GPU. ``profile_workload(profile)`` says what each notebook trains and predicts
(read from the notebook and the helpers it calls); a model's forward FLOPs per image come from
TensorFlow's profiler (cached in ``flops.json``); training costs 3 forward passes, 1 behind a frozen
pretrained backbone; a GPU delivers an assumed share of its fp16 peak, unless the host (PNG decoding,
one-thread augmentation, stain normalisation, at rates measured on the 2-core reference machine)
cannot feed it that fast. ``python -m helpers.tools.estimate --help`` lists what it prints.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

FLOPS_FILE = Path(__file__).with_name("flops.json")

# --- the GPUs and what share of their peak a Keras step reaches ---------------------------------

# peak: dense fp16 tensor-core FLOP/s; cores: the host's (its parallel input stages scale with them);
# then the share of the peak a step reaches with mixed precision and XLA, by kind of model: ASSUMED,
# each may be off by 2x either way (docs/gpu.md). The anchor: NVIDIA's tuned TensorFlow ResNet50
# (DeepLearningExamples, resnet50v1.5 README) trains at 18% of an A100's peak and predicts at 14% of
# a T4's; Keras' fit loop with tf.data is less tuned ("dense_large"). Less work per step reaches
# less: at 50-75 px a backbone's late maps are 2x2 to 3x3 and launch overhead dominates, more so on
# the A100 ("dense_small"); depthwise convolutions cannot use the tensor cores and are memory-bound
# (EfficientNets: "depthwise_large"; CancerNet's steps of a few milliseconds are mostly fixed cost: "small").
GPUS = {
    "t4": dict(peak=65e12, cores=2, dense_large=0.11, dense_small=0.05, depthwise_large=0.03, small=0.015),
    "a100": dict(peak=312e12, cores=8, dense_large=0.16, dense_small=0.025, depthwise_large=0.05, small=0.005),
}
TRAIN_FACTOR = 3  # a training image costs forward + backward = 3 forward passes (1 behind a frozen backbone)
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
# (make bench on the real sample, 2026-11-22); the others ``measure_cpu()`` (best of 2 passes,
# 2026-11-23, under nice 19 while a cross-validation and other jobs ran: this process had 32% of
# the 2 cores, so these are low; the two passes differed by up to 2x).
HOST = {
    "index": 6_082,  # index.build_index: read and fully decode a file
    "pil": 5_733,  # a PIL loop into NumPy (crossval.load, load_arrays, BreakHis to_patches)
    "png": 8_664,  # tf.data PNG decoding: validation and test are decoded every epoch (not cached)
    "pack": 7_168,  # pipeline.pack
    "memory": 212_655,  # tf.data from arrays in memory: the cached training split
    "histology_aug": 1_324,  # augment "histology" at 50 px, in ONE thread (seeded, to repeat)
    "original_aug": 1_223,  # augment "original" at 50 px, one thread
    "thyroid_aug": 98,  # augment "original_both_flips" at 224 px, one thread
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


PATCHES, POSITIVES = 277_524, 78_786  # the real IDC set, 279 patients
SAMPLE_PATCHES, SAMPLE_POSITIVES = 9_563, 2_344  # the real sample shipped in data/idc-sample (230 patients)
# Mirrored from modules that import TensorFlow, so that the estimate stays arithmetic (the tests
# compare each with its source): recipe.Recipe's epochs and batch, tuning.BUDGETS (trials per
# search, epochs per trial, patches), what each of recipe.INGREDIENTS costs in a cross-validation
# ("decision": scored from the base's models without training; "gap": another model; "histology":
# augments in one thread; "recal": recalibrates BatchNorm before each validation; "ensemble": 2
# more members; "reinhard", "macenko": normalise the fold's patches on the CPU; "breakhis":
# generates a small BreakHis-like set to pretrain on; "plain" trains like the base) and
# careful's epochs; SMOKE_CANDIDATES and FULL_CANDIDATES are notebook 18's lists.
RECIPE_EPOCHS, RECIPE_BATCH, CAREFUL_EPOCHS = 20, 64, 40
SEARCH = {"smoke": (3, 1, 600), "cpu": (10, 3, 10_000), "full": (25, 5, 50_000), "colab": (8, 3, 20_000)}
INGREDIENT_COST = {
    "class_weight": "plain", "balanced_sampling": "plain", "threshold": "decision", "histology_aug": "histology",
    "dihedral_aug": "plain", "stain_reinhard": "reinhard", "stain_macenko": "macenko", "gap_head": "gap",
    "label_smoothing": "plain", "warmup": "plain", "tta": "decision", "slide_context": "decision",
    "ensemble": "ensemble", "breakhis": "breakhis", "bn_fix": "recal", "adam": "plain", "ema": "plain",
}
SMOKE_CANDIDATES = ("tta", "slide_context")
FULL_CANDIDATES = ("tta", "ema", "label_smoothing", "histology_aug", "stain_reinhard", "balanced_sampling",
                   "slide_context")
NOTEBOOK_18_CAP = 10_000  # notebook 18's cap on patches per fold in smoke and colab


def profile_settings(profile: str) -> tuple[dict, dict]:
    """(``config.PROFILES[profile]``, what the notebooks take from elsewhere under it)."""
    from .. import config
    from ..breakhis import generator as breakhis
    from ..thyroid import generator as thyroid
    from ..thyroid import track

    if profile not in SEARCH:  # SEARCH has a row for each of config.PROFILES (a test checks)
        raise ValueError(f"no estimate for profile {profile!r}; known: {', '.join(sorted(SEARCH))}")
    light = profile in ("smoke", "colab")  # notebook 18's settings cell: its budgets for a CPU and a T4
    return config.PROFILES[profile], dict(
        whole_set=profile in config.WHOLE_SET_PROFILES, search=SEARCH[profile],
        breakhis=breakhis.DEMO_SIZES[profile], thyroid=thyroid.DEMO_SIZES[profile],  # (patients, images each)
        thyroid_size=track.IMAGE_SIZE[profile], backbones=track.TRAINED_BACKBONES[profile],
        shift=tuple(track.SHIFT_SETTINGS[profile][k] for k in ("image_size", "epochs", "batch_size")),
        # notebook 18: folds; capped: the profile's epochs and sample per fold, else the recipes' own epochs and
        # every patch; the selection's candidates
        folds=2 if light else 5, capped=light, candidates=SMOKE_CANDIDATES if light else FULL_CANDIDATES)


def split_sizes(patches: int, positives: int, cap=None) -> tuple[int, int, int]:
    """(balanced training, validation, test) patches of ``experiment.prepare_data``: test is 1 of
    round(1/0.15) = 7 patient folds, validation 1 of 6 folds of the rest (patients differ in size:
    approximate); a cap takes 70% / 15% / 15% of it, the training part balanced."""
    val = round(patches / 7)  # test alike
    train = limit = patches - 2 * val
    train_positives = round(train * positives / patches)
    if cap is not None:
        limit, val = max(2, round(cap * 0.7)), min(val, max(2, round(cap * 0.15)))
    return 2 * min(limit // 2, train_positives, train - train_positives), val, val


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
    """One :class:`Notebook` per notebook, in order: what it trains, predicts and reads under ``profile``."""
    p, s = profile_settings(profile)
    epochs, seeds, cap, batch = p["epochs"], p["seeds"], p["sample_size"], p["batch_size"]
    patches, positives = (PATCHES, POSITIVES) if s["whole_set"] else (SAMPLE_PATCHES, SAMPLE_POSITIVES)
    balanced, val, test = split_sizes(patches, positives, cap)
    whole_val, whole_test = split_sizes(patches, positives)[1:]
    bn = 20 * batch  # train.fit recalibrates learning BatchNorm layers on 20 batches before each validation
    recal = val + bn

    def idc(model, runs=1, val=val, predict=val + test, **kw) -> Job:
        return Job(model, runs, epochs, balanced, val, predict, **kw)

    decode = ((balanced, "png"),)  # the training split, decoded once into the cache
    frozen = p["weights"] is not None  # ImageNet weights: notebooks 03-06 and 16 freeze the backbone
    arms = 6 - 2 * (profile == "smoke")  # 09: none, L2 at 3 values (1 in smoke), dropout, dropout + L2
    trials, trial_epochs, search_cap = s["search"]
    search_train, search_val, _ = split_sizes(patches, positives, search_cap)
    bh_images = s["breakhis"][0] * s["breakhis"][1]
    bh_train, bh_val = round(0.7 * 4 * bh_images), round(0.15 * 4 * bh_images)  # 4 tiles per image
    images = s["thyroid"][0] * s["thyroid"][1]  # thyroid.index.split: test 20% of the nodules, val 15% of the rest
    th_test = round(0.2 * images)
    th_val = round(0.15 * (images - th_test))
    th_train = images - th_test - th_val
    thyroid = dict(feed="thyroid_aug", val_feed="memory")
    shift_size, shift_epochs, shift_batch = s["shift"]
    variants = ("cancernet@50", "cancernet@50 filters=[[16],[32,32],[64,64,64],[128,128,128]]",
                "cancernet@50 kernel_size=2", "cancernet@50 kernel_size=5", 'cancernet@50 downsample="stride"',
                "cancernet@75")
    work = {
        "00_data": Notebook((), ((2 * patches, "index"), (patches, "pack")),
                            "no training; the index decodes both copies of the archive's tree, pack decodes "
                            "every patch; the Kaggle download is not counted"),
        "01_eda": Notebook((), ((4_000, "pil"),), "no training; a 2,000-patch colour sample and one slide"),
        "02_vgg_style": Notebook((idc("vgg_style@50"),), decode,
                                 f"1 run from scratch on the balanced training split (~{balanced:,} patches)"),
        "03_resnet50": Notebook((idc("resnet50@50", val=recal, frozen=frozen),), decode,
                                "ImageNet backbone frozen (FINE_TUNE_AT None): the head learns" if frozen
                                else "from scratch"),
        "07_cancernet": Notebook((idc("cancernet@50", val=recal),), decode, "1 run from scratch"),
        "08_optimizers": Notebook((idc("cancernet@50", 5 * seeds, val=recal), idc("cancernet@50", 2 * seeds)),
                                  decode, f"5 optimizers + 2 BatchNorm arms, x {seeds} seed(s) = {7 * seeds} runs"),
        "09_regularization": Notebook(
            (idc("cancernet@50", arms * seeds, val=recal), idc("cancernet@50", seeds, val=recal, feed="original_aug"),
             idc("cancernet@50", seeds, val=recal, feed="histology_aug")), ((3 * balanced, "png"),),
            f"{arms} regularisation + 2 augmentation arms, x {seeds} seed(s) = {(arms + 2) * seeds} runs; "
            "augmentation in one thread"),
        "10_architecture_variants": Notebook(tuple(idc(k, seeds, val=recal) for k in variants),
                                             ((2 * balanced, "png"),),
                                             f"6 CancerNet variants x {seeds} seed(s) = {6 * seeds} runs"),
        "11_hyperparameter_search": Notebook(
            (Job("cancernet@50", 2 * trials, trial_epochs, search_train, search_val + bn, early_stop=False),
             Job("cancernet@50", 1, epochs, bh_train, bh_val + bn, 2 * bh_val, val_feed="memory"),
             idc("cancernet@50", val=recal)),
            ((search_train + balanced, "png"), (bh_images, "breakhis_demo"), (bh_images, "pil")),
            f"2 searches x {trials} trials x {trial_epochs} epochs on {search_cap:,} patches; BreakHis "
            "pretraining; 1 retraining"),
        "12_breakhis_pretraining": Notebook((idc("cancernet@50", 2 * seeds, val=recal),), decode,
                                            f"scratch and BreakHis arms x {seeds} seed(s); the pretraining is "
                                            "read back from 11"),
        "13_class_activation_maps": Notebook(
            (idc("cancernet@50", val=recal), idc("mobilenet_v2@50", val=recal, predict=0)), ((2 * balanced, "png"),),
            "train_or_load trains CancerNet and MobileNetV2, both from scratch; Grad-CAM of 256 patches"),
        "14_model_comparison": Notebook((), (), "no training: reads the registry and saved predictions"),
        "15_slide_heatmaps": Notebook((Job("cancernet@50", 1, 0, 0, 0, whole_val + 2 * whole_test),), (),
                                      "reads 13's CancerNet back; scores every patch of the test patients"),
        "16_thyroid_backbones": Notebook(
            tuple(Job(f"{m}@{s['thyroid_size']}", 1, epochs, th_train, th_val, th_val + th_test, frozen=frozen,
                      **thyroid) for m in s["backbones"]),
            ((images, "thyroid_demo"), (3.2 * images, "thyroid_load")),
            f"{len(s['backbones'])} {'frozen ImageNet backbones' if frozen else 'backbones from scratch'} at "
            f"{s['thyroid_size']} px on ~{th_train:,} generated images; augmentation in one thread"),
        "17_thyroid_domain_shift": Notebook(
            (Job(f"cancernet@{shift_size}", 2, shift_epochs, th_train, th_val + 20 * shift_batch,
                 2 * th_val + 3 * th_test, **thyroid),
             Job(f"cancernet@{shift_size}", 1, shift_epochs, 2 * th_train, 2 * th_val + 20 * shift_batch,
                 4 * th_val + 3 * th_test, **thyroid)),
            ((6.4 * images, "thyroid_load"),),
            f"CancerNet from scratch at {shift_size} px, batch {shift_batch}, {shift_epochs} epochs; 3 arms: "
            "cropped, uncropped, both"),
        "18_best_recipe": best_recipe(patches, s["folds"], epochs if s["capped"] else None,
                                      min(cap, NOTEBOOK_18_CAP) if s["capped"] else None, s["candidates"]),
    }
    for name, model in (("04_inception_v3", "inception_v3@75"), ("05_xception", "xception@71"),
                        ("06_mobilenet_v2", "mobilenet_v2@50")):
        work[name] = Notebook((idc(model, frozen=frozen),), decode,
                              f"{'frozen backbone' if frozen else 'from scratch'}, {model.split('@')[1]} px")
    return dict(sorted(work.items()))


def best_recipe(patches: int, folds: int, epochs, cap, candidates, seeds: int = 2) -> Notebook:
    """Notebook 18, on the development patients (all but the lockbox's ``LOCKBOX_SHARE``): the fold
    loop of ``careful`` (one seed), then ``careful``, each trained candidate of a first selection
    round and ``best_v4`` cross-validated once per seed; then ``best_v4`` and ``careful`` trained on the
    development patients and scored on the lockbox, once per seed. ``epochs`` None: the recipes' own."""
    from ..recipes.selection import LOCKBOX_SHARE

    dev = round(patches * (1 - LOCKBOX_SHARE))
    train, val, test = fold_sizes(dev, folds, cap)
    recal = val + 20 * RECIPE_BATCH  # both recipes recalibrate BatchNorm before each validation
    trained = [c for c in candidates if INGREDIENT_COST[c] != "decision"]
    lock_train, lock_test = (train, test) if cap is not None else (dev - val, patches - dev)
    careful = dict(model='cancernet@50 head="gap"', epochs=epochs or CAREFUL_EPOCHS, feed="histology_aug",
                   val_feed="memory")
    best = dict(model="cancernet@50", epochs=epochs or RECIPE_EPOCHS, val_feed="memory")
    jobs = (Job(runs=(1 + seeds * (1 + len(trained))) * folds, train=train, val=recal, predict=8 * (val + test),
                **careful),
            Job(runs=seeds * folds, train=train, val=recal, predict=8 * (val + test), **best),
            *(Job(runs=seeds, train=lock_train, val=recal, predict=8 * (val + lock_test), **r)
              for r in (careful, best)))
    data = [(patches, "pil")] + [(folds * seeds * (train + val + test), INGREDIENT_COST[c])
                                 for c in trained if INGREDIENT_COST[c] in ("reinhard", "macenko")]
    on = "every patch" if cap is None else f"{train + val + test:,} patches"
    note = (f"careful's fold loop, then careful, {len(trained)} trained candidate(s) of {len(candidates)} and best_v4 "
            f"on {folds} development folds x {seeds} seeds on {on}; best_v4 and careful on the lockbox "
            f"x {seeds} seeds; {epochs or 'the recipes own'} epochs, batch {RECIPE_BATCH}; 8 views predicted per fold"
            + ("; stain normalisation on the CPU" if len(data) > 1 else ""))
    return Notebook(jobs, tuple(data), note)


# --- FLOPs --------------------------------------------------------------------------------------

def parse_key(key) -> tuple[str, int, dict]:
    """``"cancernet@50 kernel_size=5"`` (a key of flops.json) -> ("cancernet", 50, {"kernel_size": 5})."""
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


def needed_keys() -> list[str]:
    """The models flops.json counts: those of the GPU profiles (the CPU profiles' are scaled) and CPU_TRAINING's."""
    return sorted({job.model for profile in ("full", "colab") for nb in profile_workload(profile).values()
                   for job in nb.jobs} | set(CPU_TRAINING))


def update_flops(force: bool = False) -> dict:
    """Count every model of ``needed_keys()`` that flops.json lacks (all with ``force``) and rewrite it.
    Each is built once: EfficientNetB7 at 224 px takes a while on a CPU."""
    import keras

    from .. import models

    table = {} if force or not FLOPS_FILE.is_file() else load_flops()
    for key in needed_keys():
        if key not in table:
            name, size, build = parse_key(key)
            start = time.perf_counter()
            table[key] = count_flops(models.build_model(name, image_size=size, weights=None, **build))
            keras.backend.clear_session()
            print(f"{key}: {table[key]:,} FLOPs ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    FLOPS_FILE.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    return table


def load_flops() -> dict:
    if not FLOPS_FILE.is_file():
        raise FileNotFoundError(f"{FLOPS_FILE} is missing: python -m helpers.tools.estimate --update-flops writes it")
    return json.loads(FLOPS_FILE.read_text())


def image_flops(key, flops: dict) -> float:
    """Forward FLOPs of one image for model ``key``: counted in ``flops``, else scaled by area from
    the same model counted at the nearest other size (convolutions cost per pixel; the small dense
    head makes this a slight overestimate at smaller sizes)."""
    if key in flops:
        return flops[key]
    name, size, build = parse_key(key)
    others = [(abs(s - size), s, k) for k in flops for n, s, b in [parse_key(k)] if n == name and b == build]
    if not others:
        raise KeyError(f"no FLOPs for model {key!r} in flops.json: "
                       "python -m helpers.tools.estimate --update-flops counts it")
    _, counted, other = min(others)
    return flops[other] * (size / counted) ** 2


# --- the estimate -------------------------------------------------------------------------------

def kind(key) -> str:
    """The class of a model key whose share of a GPU's peak ``GPUS`` assumes."""
    name, size, _ = parse_key(key)
    if name in ("cancernet", "mobilenet_v2"):
        return "small"
    if name.startswith("efficientnet"):
        return "depthwise_large"
    return "dense_large" if size >= 160 else "dense_small"


def host_rate(key, gpu) -> float:
    """Images/s of a host stage beside ``gpu``: parallel stages scale with the host's cores."""
    return HOST[key] * GPUS[gpu]["cores"] / 2 if key in PARALLEL else HOST[key]


LIMITS = {"gpu_s": "GPU compute", "host_s": "host input", "data_s": "data handling", "overhead_s": "fixed costs"}


def notebook_cost(nb: Notebook, flops: dict, gpu: str, every_epoch: bool = False) -> dict:
    """Seconds of ``nb`` on ``gpu`` split by what limits them (each phase of a run waits for the
    slower of the GPU and the host), with the images trained and the FLOPs."""
    cost = dict.fromkeys([*LIMITS, "images", "flops"], 0)
    for job in nb.jobs:
        rate = GPUS[gpu]["peak"] * GPUS[gpu][kind(job.model)]
        per_image = image_flops(job.model, flops)
        epochs = job.epochs if every_epoch or not job.early_stop else min(job.epochs, EXPECTED_EPOCHS)
        factor = 1 if job.frozen else TRAIN_FACTOR
        for images, flop, feed, times in ((job.train, factor * per_image, job.feed, epochs),
                                          (job.val, per_image, job.val_feed, epochs),
                                          (job.predict, per_image, job.val_feed, 1)):
            compute, fed = images * flop / rate, images / host_rate(feed, gpu)
            cost["gpu_s" if compute >= fed else "host_s"] += job.runs * times * max(compute, fed)
        cost["overhead_s"] += job.runs * (epochs * EPOCH_OVERHEAD_S + RUN_OVERHEAD_S)
        cost["images"] += job.runs * epochs * job.train
        cost["flops"] += job.runs * per_image * (epochs * (job.train * factor + job.val) + job.predict)
    cost["data_s"] = sum(n / host_rate(key, gpu) for n, key in nb.data)
    cost["overhead_s"] += NOTEBOOK_OVERHEAD_S
    cost["seconds"] = cost["gpu_s"] + cost["host_s"] + cost["overhead_s"] + cost["data_s"]
    return cost


def estimate(gpu: str = "t4", workload: dict | None = None, flops: dict | None = None,
             profile: str = "full") -> pd.DataFrame:
    """One row per notebook: images trained, FLOPs, ESTIMATED hours on ``gpu`` (early stopping
    after EXPECTED_EPOCHS; ``hours_cap``: every epoch), what limits it, and the assumptions."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    workload = profile_workload(profile) if workload is None else workload
    flops = load_flops() if flops is None else flops
    rows = {}
    for name, nb in workload.items():
        cost = notebook_cost(nb, flops, gpu)
        rows[name] = {"train_images": int(cost["images"]), "flops": cost["flops"], "hours": cost["seconds"] / 3600,
                      "hours_cap": notebook_cost(nb, flops, gpu, every_epoch=True)["seconds"] / 3600,
                      "limited_by": LIMITS[max(LIMITS, key=cost.get)], "note": nb.note}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("notebook")


def table_markdown(profile: str = "full") -> str:
    """docs/gpu.md's table: one row per notebook and a total, hours for each GPU (an ESTIMATE)."""
    gpus = list(GPUS)
    tables = {gpu: estimate(gpu, profile=profile) for gpu in gpus}
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


def calibration_markdown() -> str:
    """The CPU measured against the assumed GPUs: img/s and effective FLOP/s of training."""
    flops = load_flops()
    head = ["model (training)", "FLOP per image", "CPU img/s (measured)", "CPU GFLOP/s",
            *(f"{g.upper()} TFLOP/s, img/s (assumed)" for g in GPUS)]
    rows = []
    for key, per_s in CPU_TRAINING.items():
        per_image = flops[key] * (1 if key in CPU_FROZEN else TRAIN_FACTOR)
        gpus = [GPUS[g]["peak"] * GPUS[g][kind(key)] for g in GPUS]
        rows.append([f"`{key}{' (frozen)' if key in CPU_FROZEN else ''}`", f"{per_image / 1e6:,.0f} M", f"{per_s:,.0f}",
                     f"{per_s * per_image / 1e9:,.0f}", *(f"{r / 1e12:.2f}, {r / per_image:,.0f}" for r in gpus)])
    return _markdown(head, rows)


def _markdown(head, rows) -> str:
    lines = [head, ["---"] * len(head), *rows]
    return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in lines)


def _hours(h) -> str:
    return f"{h:.2f}" if h < 1 else f"{h:.1f}" if h < 10 else f"{h:.0f}"


# --- Colab: links, the profile's table, docs/colab.md ---------------------------------------------

COLAB_NOTEBOOK_MINUTES, COLAB_SERIES_HOURS = 20, 3  # the colab profile's budget on one T4 (estimated)
PLACEHOLDER_REPO = "https://github.com/<owner>/<repo>"
# The first code cell of every notebook; {repo} is a placeholder there until a user sets it. On
# Colab, ``!`` runs a shell line, ``%cd`` moves the kernel, and the repository root on sys.path
# through the working directory makes ``import helpers`` work at once (the editable install's own
# hook only takes effect after a restart). Elsewhere the test is False.
COLAB_SETUP_CELL = """\
if "google.colab" in str(get_ipython()):  # Colab: clone this repository (or your fork) once, and work in it
    !test -d /content/idc || git clone -q --depth 1 {repo} /content/idc
    %cd /content/idc"""


def github_repo(repo_url) -> tuple[str, str]:
    """(owner, name) of a GitHub repository given as ``https://github.com/owner/name[.git]``,
    ``git@github.com:owner/name.git``, ``github.com/owner/name`` or ``owner/name``."""
    # GitHub account names are letters, digits and hyphens (<, > for the placeholder <owner>);
    # repository names may hold dots
    found = re.fullmatch(r"(?:(?:https?://)?(?:www\.)?github\.com/|git@github\.com:)?([A-Za-z0-9<>-]+)/([^/\s]+?)"
                         r"(?:\.git)?/?", str(repo_url).strip())
    if not found or found[2] in (".", ".."):
        raise ValueError(f"not a GitHub repository: {repo_url!r}; Colab opens notebooks from GitHub, "
                         "e.g. https://github.com/<owner>/<repo>")
    return found[1], found[2]


def colab_links(repo_url, branch: str = "main") -> dict:
    """{notebook: the URL that opens it from ``repo_url`` (its ``branch``) in Colab}."""
    owner, name = github_repo(repo_url)
    return {nb: f"https://colab.research.google.com/github/{owner}/{name}/blob/{branch}/notebooks/{nb}.ipynb"
            for nb in profile_workload()}


def colab_markdown(repo_url=PLACEHOLDER_REPO, branch: str = "main") -> str:
    """The page docs/colab.md, written by this function (tests compare the file with it): one row per
    notebook with its Colab link, ESTIMATED minutes on a T4 under ``colab``, what limits it and the
    assumptions, and a total in hours."""
    p, s = profile_settings("colab")
    t4, links = estimate("t4", profile="colab"), colab_links(repo_url, branch)
    idc = t4.drop(index=["16_thyroid_backbones", "17_thyroid_domain_shift"])
    owner, name = github_repo(repo_url)
    rows = [[f"`{nb}`", f"[open]({links[nb]})", f"{row['hours'] * 60:.0f}", row["limited_by"], row["note"]]
            for nb, row in t4.iterrows()]
    rows.append(["**total**", "", f"**{_hours(t4['hours'].sum())} h**", "", ""])
    table = _markdown(["notebook", "open in Colab", "T4 min (estimate)", "limited by", "assumptions"], rows)
    return (Path(__file__).parent / "templates" / "colab.md").read_text().format(
        minutes=COLAB_NOTEBOOK_MINUTES, hours=COLAB_SERIES_HOURS, owner=owner, name=name, branch=branch,
        settings=", ".join(f"`{k}={v!r}`" for k, v in p.items()), table=table,
        setup_cell=textwrap.indent(COLAB_SETUP_CELL.format(repo=f"https://github.com/{owner}/{name}"), "   "),
        longest=f"{idc['hours'].max() * 60:.0f}", longest_nb=idc["hours"].idxmax(), series=_hours(t4["hours"].sum()),
        **s)


# --- measuring this CPU -------------------------------------------------------------------------

def measure_training(key, batch: int = 128, steps: int = 16) -> float:
    """Training images/s of model ``key`` on this machine (random images, Adam, after a warm-up), its
    backbone frozen if ``CPU_FROZEN`` says so."""
    import keras
    import numpy as np
    import tensorflow as tf

    from .. import models, train
    from .bench import step_seconds

    name, size, build = parse_key(key)
    model = models.build_model(name, image_size=size, weights=None, seed=0, **build)
    for layer in models.backbone_layers(model) if key in CPU_FROZEN else ():
        layer.trainable = False
    train.compile_model(model, "adam")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 2, batch), 2)
    return batch / step_seconds(model, tf.data.Dataset.from_tensors((x, y)).repeat(), steps)


def measure_host(n: int = 2048) -> dict:
    """The host rates of HOST that ``make bench`` does not give, measured here (images/s), on
    patches of the real sample (Macenko's cost depends on the tissue)."""
    import tempfile

    import numpy as np
    import tensorflow as tf

    from .. import config
    from ..breakhis.generator import make_demo as make_breakhis_demo
    from ..data import augment, pipeline, stain
    from ..thyroid.generator import make_demo as make_thyroid_demo
    from ..thyroid.index import build_index, load_images
    from .bench import timed

    patches = np.stack([pipeline.load_patch(p) for p in sorted(config.SAMPLE_DIR.rglob("*.png"))[:n]])
    out = {}
    for key, name, size, count in (("histology_aug", "histology", 50, n), ("original_aug", "original", 50, n),
                                   ("thyroid_aug", "original_both_flips", 224, n // 8)):
        x = np.asarray(tf.image.resize(tf.cast(patches[:count], tf.float32), (size, size)), np.float32)
        ds = augment.apply(tf.data.Dataset.from_tensor_slices((x, np.zeros(count))).batch(128), name, seed=0,
                           parallel=False)
        next(iter(ds))  # traces the augmentation
        out[key] = count / timed(lambda: [None for _ in ds])[1]  # noqa: B023 (called at once)
    for method in stain.METHODS:
        normalizer = stain.Normalizer(stain.fit_target(patches, method))
        out[method] = n / timed(lambda: normalizer(patches))[1]  # noqa: B023
    with tempfile.TemporaryDirectory() as tmp:
        out["thyroid_demo"] = 80 / timed(lambda: make_thyroid_demo(Path(tmp, "th"), 20, 4, seed=0))[1]
        df, _ = build_index(Path(tmp, "th"))
        out["thyroid_load"] = len(df) / timed(lambda: load_images(df, 224))[1]
        out["breakhis_demo"] = 16 / timed(lambda: make_breakhis_demo(Path(tmp, "bh"), 2, 8, seed=0))[1]
    return {k: round(v) for k, v in out.items()}


def measure_cpu(passes: int = 2) -> dict:
    """Everything this module measures, best of ``passes`` (other jobs slow a pass down): host
    rates, CPU training throughput, and the share of the machine's cores this process had
    meanwhile (below 1: other jobs ran, and the rates are lower than on an idle machine)."""
    import os

    wall, cpu = time.perf_counter(), time.process_time()
    runs = [measure_host() for _ in range(passes)]
    host = {key: max(run[key] for run in runs) for key in runs[0]}
    training = {key: round(max(measure_training(key) for _ in range(passes)), 1) for key in CPU_TRAINING}
    share = (time.process_time() - cpu) / ((time.perf_counter() - wall) * (os.cpu_count() or 1))
    return {"host": host, "training": training, "cpu_share": round(share, 2), "date": time.strftime("%Y-%m-%d")}


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
    print("\nCalibration: CPU measured on the 2-core reference machine, GPU assumed (GPUS):\n")
    print(calibration_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
