"""How long each notebook takes with PROFILE=full on one GPU: an ESTIMATE, not a measurement.

Nothing here ran on a GPU. For each notebook, ``WORKLOAD`` says what it trains and predicts
under the full profile (read from the notebook and the helpers it calls); each model's
forward-pass FLOPs per image come from TensorFlow's profiler (cached in ``flops.json``);
training costs 3 forward passes (forward + backward), or 1 where a frozen pretrained backbone
has no backward pass; a GPU delivers an assumed share of its fp16 peak (``UTILISATION``). Where
the host cannot feed images that fast (PNG decoding, one-thread augmentation, stain
normalisation), the host's rate measured on the 2-core reference machine sets the time
instead. ``python -m helpers.estimate`` prints the table; ``--measure`` re-measures this CPU.
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
    "thyroid_load": 1_038,  # thyroid.load_images to 224 px
    "thyroid_demo": 72,  # generated thyroid images (cropped + uncropped) per s
    "breakhis_demo": 44,  # generated BreakHis-like images per s
}
PARALLEL = {"index", "pack", "png", "memory", "thyroid_demo"}  # these scale with the host's cores
# CPU training images/s, ``measure_cpu()`` as above (batch 128, Adam, float32, no XLA), as the
# notebooks train: CancerNet from scratch (07), ResNet50 with its backbone frozen (03).
CPU_TRAINING = {"cancernet@50": 199.9, "resnet50@50": 185.5}
CPU_FROZEN = {"resnet50@50"}

# --- the data under PROFILE=full ----------------------------------------------------------------

PATCHES, POSITIVES = 277_524, 78_786  # the real IDC set, 279 patients
# splits.split_by_patient: test is 1 of round(1/0.15) = 7 patient folds, validation 1 of 6
# folds of the rest, so each is ~1/7 of the patches (patients differ in size: approximate).
VAL = TEST = round(PATCHES / 7)
TRAIN = PATCHES - VAL - TEST
BALANCED = 2 * round(TRAIN * POSITIVES / PATCHES)  # prepare_data balances the training split
RECAL = 20 * 128  # train.fit recalibrates learning BatchNorm layers on 20 batches per epoch
SEARCH_TRAIN, SEARCH_VAL = 35_000, 7_500  # tuning.budget("full"): 50,000 patches, 70% / 15%
# crossval: 5 folds by patient; of the other 4/5, validation is 1 of 7 patient folds
CV_TEST = round(PATCHES / 5)
CV_VAL = round((PATCHES - CV_TEST) / 7)
CV_TRAIN = PATCHES - CV_TEST - CV_VAL
# The generated BreakHis-like set of the full profile: 82 patients x 48 images, 4 tiles each
BREAKHIS_IMAGES = 82 * 48
BH_TRAIN, BH_VAL = round(0.7 * 4 * BREAKHIS_IMAGES), round(0.15 * 4 * BREAKHIS_IMAGES)
# The generated thyroid set of the full profile: 1,000 nodules x 8 images per version; test is
# 20% of the nodules, validation 15% of the rest (thyroid.split)
THYROID = 8_000
TH_TEST = round(0.2 * THYROID)
TH_VAL = round(0.15 * (THYROID - TH_TEST))
TH_TRAIN = THYROID - TH_TEST - TH_VAL


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


def _idc(model, runs=1, val=VAL, predict=VAL + TEST, **kw) -> Job:
    """Runs on the IDC split of prepare_data: the balanced training split, 50 epochs."""
    return Job(model, runs, 50, BALANCED, val, predict, **kw)


def _fold(runs=5, model="cancernet@50", val=CV_VAL, predict=CV_VAL + CV_TEST, **kw) -> Job:
    """Cross-validation runs (recipes.train): every patch of a fold, in memory, 20 epochs."""
    return Job(model, runs, 20, CV_TRAIN, val, predict, val_feed="memory", **kw)


_decode = ((BALANCED, "png"),)  # the training split, decoded once into the cache
_variants = ("cancernet@50", "cancernet@50 filters=[[16],[32,32],[64,64,64],[128,128,128]]",
             "cancernet@50 kernel_size=2", "cancernet@50 kernel_size=5", 'cancernet@50 downsample="stride"',
             "cancernet@75")
_tta = 8 * (CV_VAL + CV_TEST)  # 8 dihedral views of validation and test
_recal = CV_VAL + 20 * 64  # bn_fix: 20 batches of 64 training patches recalibrate BatchNorm each epoch
_thyroid = dict(feed="thyroid_aug", val_feed="memory")

WORKLOAD = {
    "00_data": Notebook((), ((2 * PATCHES, "index"), (PATCHES, "pack")),
                        "no training; the index decodes both copies of the archive's tree, pack decodes "
                        "every patch; the Kaggle download is not counted"),
    "01_eda": Notebook((), ((4_000, "pil"),), "no training; a 2,000-patch colour sample and one slide"),
    "02_vgg_style": Notebook((_idc("vgg_style@50"),), _decode,
                             "1 run from scratch on the balanced training split (~112,500 patches)"),
    "03_resnet50": Notebook((_idc("resnet50@50", val=VAL + RECAL, frozen=True),), _decode,
                            "ImageNet backbone frozen (FINE_TUNE_AT None): the head learns"),
    "04_inception_v3": Notebook((_idc("inception_v3@75", frozen=True),), _decode, "frozen backbone, 75 px"),
    "05_xception": Notebook((_idc("xception@71", frozen=True),), _decode, "frozen backbone, 71 px"),
    "06_mobilenet_v2": Notebook((_idc("mobilenet_v2@50", frozen=True),), _decode, "frozen backbone, 50 px"),
    "07_cancernet": Notebook((_idc("cancernet@50", val=VAL + RECAL),), _decode, "1 run from scratch"),
    "08_optimizers": Notebook((_idc("cancernet@50", 15, val=VAL + RECAL), _idc("cancernet@50", 6)), _decode,
                              "5 optimizers + 2 BatchNorm arms, x 3 seeds = 21 runs"),
    "09_regularization": Notebook(
        (_idc("cancernet@50", 18, val=VAL + RECAL),
         _idc("cancernet@50", 3, val=VAL + RECAL, feed="seed_aug"),
         _idc("cancernet@50", 3, val=VAL + RECAL, feed="histology_aug")), ((3 * BALANCED, "png"),),
        "6 regularisation + 2 augmentation arms, x 3 seeds = 24 runs; augmentation in one thread"),
    "10_architecture_variants": Notebook(tuple(_idc(k, 3, val=VAL + RECAL) for k in _variants),
                                         ((2 * BALANCED, "png"),),
                                         "6 CancerNet variants x 3 seeds = 18 runs"),
    "11_hyperparameter_search": Notebook(
        (Job("cancernet@50", 50, 5, SEARCH_TRAIN, SEARCH_VAL + RECAL, early_stop=False),
         Job("cancernet@50", 1, 50, BH_TRAIN, BH_VAL + RECAL, 2 * BH_VAL, val_feed="memory"),
         _idc("cancernet@50", val=VAL + RECAL)),
        ((SEARCH_TRAIN + BALANCED, "png"), (BREAKHIS_IMAGES, "breakhis_demo"), (BREAKHIS_IMAGES, "pil")),
        "2 searches x 25 trials x 5 epochs on 50,000 patches; BreakHis pretraining; 1 retraining"),
    "12_breakhis_pretraining": Notebook(
        (_idc("cancernet@50", 6, val=VAL + RECAL),), _decode,
        "scratch and BreakHis arms x 3 seeds; the pretraining is read back from 11"),
    "13_class_activation_maps": Notebook(
        (_idc("cancernet@50", val=VAL + RECAL), _idc("mobilenet_v2@50", val=VAL + RECAL, predict=0)),
        ((2 * BALANCED, "png"),),
        "train_or_load trains CancerNet and MobileNetV2, both from scratch; Grad-CAM of 256 patches"),
    "14_model_comparison": Notebook((), (), "no training: reads the registry and saved predictions"),
    "15_slide_heatmaps": Notebook((Job("cancernet@50", 1, 0, 0, 0, VAL + 2 * TEST),), (),
                                  "reads 13's CancerNet back; scores every patch of the test patients"),
    "16_thyroid_backbones": Notebook(
        tuple(Job(f"{m}@224", 1, 50, TH_TRAIN, TH_VAL, TH_VAL + TH_TEST, frozen=True, **_thyroid)
              for m in ("vgg16", "vgg19", "resnet50_gap", "resnet101", "efficientnet_b7")),
        ((THYROID, "thyroid_demo"), (3.2 * THYROID, "thyroid_load")),
        "5 frozen ImageNet backbones at 224 px on ~5,440 generated images; augmentation in one thread"),
    "17_thyroid_domain_shift": Notebook(
        (Job("cancernet@224", 2, 15, TH_TRAIN, TH_VAL + 640, 2 * TH_VAL + 3 * TH_TEST, **_thyroid),
         Job("cancernet@224", 1, 15, 2 * TH_TRAIN, 2 * TH_VAL + 640, 4 * TH_VAL + 3 * TH_TEST, **_thyroid)),
        ((6.4 * THYROID, "thyroid_load"),),
        "CancerNet from scratch at 224 px, batch 32, 15 epochs; 3 arms: cropped, uncropped, both"),
    "18_best_recipe": Notebook(
        # every fold predicts the 8 views of its validation and test patches (views.csv)
        (_fold(10 * 5, predict=_tta), _fold(model='cancernet@50 head="gap"', predict=_tta),
         _fold(feed="histology_aug", predict=_tta), _fold(val=_recal, predict=_tta), _fold(2 * 5, predict=_tta),
         # the second round, on seed+bn_fix+adam (its base and 8 ingredients, plus gap, histology, ensemble):
         # the recalibration batches on every validation pass
         _fold(9 * 5, val=_recal, predict=_tta), _fold(model='cancernet@50 head="gap"', val=_recal, predict=_tta),
         _fold(feed="histology_aug", val=_recal, predict=_tta), _fold(2 * 5, val=_recal, predict=_tta)),
        ((PATCHES, "pil"), (10 * PATCHES, "reinhard"), (10 * PATCHES, "macenko"), (16 * 12, "breakhis_demo")),
        "14 recipes on seed and 12 on seed+bn_fix+adam (its base included), x 5 folds on every patch, 20 epochs, batch 64; ensemble = "
        "3 members, the first the base's kept model (2 trained), 8 views predicted per fold; best is scored from seed+bn_fix+adam's folds; stain normalisation on the CPU"),
}


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

    from . import models

    model = models.build_model(name, image_size=image_size, weights=None, **build)
    try:
        return count_flops(model)
    finally:
        del model
        keras.backend.clear_session()


def needed_keys() -> list[str]:
    return sorted({job.model for nb in WORKLOAD.values() for job in nb.jobs} | set(CPU_TRAINING))


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
        raise FileNotFoundError(f"{path} is missing: python -m helpers.estimate --update-flops writes it")
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
    per_image = flops[job.model]
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


def estimate(gpu: str = "t4", workload: dict | None = None, flops: dict | None = None) -> pd.DataFrame:
    """One row per notebook: images trained, FLOPs, ESTIMATED hours on ``gpu`` (early stopping
    after EXPECTED_EPOCHS; ``hours_cap``: every epoch), what limits it, and the assumptions."""
    _gpu(gpu)
    workload = WORKLOAD if workload is None else workload
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


def table_markdown(gpus=("t4", "a100"), workload=None, flops=None) -> str:
    """The README table: one row per notebook and a total, hours for each GPU (an ESTIMATE)."""
    tables = {gpu: estimate(gpu, workload, flops) for gpu in gpus}
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


# --- measuring this CPU -------------------------------------------------------------------------

def measure_training(key, batch: int = 128, steps: int = 16, frozen: bool = False) -> float:
    """Training images/s of model ``key`` on this machine (random images, Adam, after a warm-up)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from . import models, train

    name, size, build = parse_key(key)
    model = models.build_model(name, image_size=size, weights=None, seed=0, **build)
    if frozen:
        model.get_layer(models.BACKBONE).trainable = False
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
    """``n`` IDC patches to time stain normalisation on: the real sample beside the repository if
    there (Macenko's cost depends on the tissue), else the generated demo set."""
    import numpy as np

    from . import config, pipeline

    for root in (config.ROOT.parent / "shared" / "data" / "idc-sample", config.demo_dir()):
        paths = sorted(root.rglob("*.png"))[:n]
        if len(paths) == n:
            return np.stack([pipeline.load_patch(p) for p in paths])
    raise FileNotFoundError("no IDC patches to measure on: run `python -m helpers make-demo` first")


def measure_host(n: int = 2048) -> dict:
    """The host rates of HOST that README does not give, measured here (images/s)."""
    import tempfile

    import numpy as np
    import tensorflow as tf

    from . import augment, breakhis, stain, thyroid

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
        out["thyroid_demo"] = _rate(lambda: thyroid.make_demo(Path(tmp, "th"), 20, 4, seed=0), 80)
        df, _ = thyroid.build_index(Path(tmp, "th"))
        out["thyroid_load"] = _rate(lambda: thyroid.load_images(df, 224), len(df))
        out["breakhis_demo"] = _rate(lambda: breakhis.make_demo(Path(tmp, "bh"), 2, 8, seed=0), 16)
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

    parser = argparse.ArgumentParser(prog="python -m helpers.estimate", description=__doc__.splitlines()[0])
    parser.add_argument("--update-flops", action="store_true", help="count the models flops.json lacks")
    parser.add_argument("--force", action="store_true", help="with --update-flops: count every model again")
    parser.add_argument("--measure", action="store_true", help="measure this CPU (minutes) and print it")
    args = parser.parse_args(argv)
    if args.update_flops:
        update_flops(force=args.force)
    if args.measure:
        print(json.dumps(measure_cpu(), indent=1))
        return 0
    print("ESTIMATED hours with PROFILE=full on one GPU (an estimate, not a measurement):\n")
    print(table_markdown())
    print("\nCalibration: CPU measured on the 2-core reference machine, GPU assumed (UTILISATION):\n")
    print(calibration_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
