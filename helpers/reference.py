"""Published figures to set beside ours, each with the split it was measured on.

A result on a random patch split is not comparable with one on a patient split:
patches of one patient are near-duplicates, so a random split leaks.
"""

from __future__ import annotations

import pandas as pd

# The seed project (IDC), from its slides. Accuracies unless named otherwise.
SEED_IDC = [
    {"model": "vgg_style", "setting": "50 epochs", "train": None, "val": None, "test": 0.76,
     "f1": 0.74, "split": "random patches", "note": "1,110 test patches; F1 of IDC(+)"},
    {"model": "resnet50", "setting": "ImageNet, new head", "train": 0.993, "val": 0.696, "test": 0.732,
     "f1": None, "split": "random patches", "note": ""},
    {"model": "xception", "setting": "BreakHis-pretrained, 100 frozen, 21 epochs", "train": 0.999,
     "val": 0.784, "test": None, "f1": None, "split": "random patches", "note": ""},
    {"model": "mobilenet_v2", "setting": "from scratch", "train": 0.978, "val": 0.734, "test": None,
     "f1": None, "split": "random patches", "note": ""},
    {"model": "mobilenet_v2", "setting": "ImageNet, 50 frozen, 10 epochs", "train": 0.957, "val": 0.804,
     "test": None, "f1": None, "split": "random patches", "note": ""},
    {"model": "mobilenet_v2", "setting": "BreakHis, 100 frozen, stopped at 66", "train": 0.797,
     "val": 0.811, "test": 0.765, "f1": None, "split": "random patches", "note": ""},
    {"model": "cancernet", "setting": "Adadelta bs128 lr 0.00396 / Adagrad bs64 lr 0.0282", "train": None,
     "val": None, "test": 0.796, "f1": 0.789, "split": "random patches", "note": "~5.5k balanced patches"},
    {"model": "cancernet", "setting": "BreakHis + Bayesian fine_tune_at=5, lr 0.0346", "train": 0.821,
     "val": 0.818, "test": 0.789, "f1": None, "split": "random patches", "note": ""},
]

# The seed project's fine_tune_at per model (SEED_IDC): CancerNet's first block (5 layers),
# the first 100 layers of MobileNetV2 and of Xception.
SEED_FINE_TUNE_AT = {"cancernet": 5, "mobilenet_v2": 100, "xception": 100}

# Published results on the benchmark's patient split (84/29 train+val, 49 test).
LITERATURE_IDC = [
    {"model": "Cruz-Roa et al. 2014 (3-layer CNN)", "f1": 0.718, "balanced_accuracy": 0.842,
     "split": "by patient, 113/49"},
    {"model": "Janowczyk & Madabhushi 2016 (AlexNet, 32x32)", "f1": 0.765, "balanced_accuracy": 0.847,
     "split": "by patient, same lists"},
]


def seed_rows(model: str) -> pd.DataFrame:
    """The seed project's figures for ``model`` (empty if it gave none)."""
    rows = [r for r in SEED_IDC if r["model"] == model]
    return pd.DataFrame(rows, columns=list(SEED_IDC[0]))


# The thyroid project (seed 001), from its slides: accuracy on the given test folder.
SEED_THYROID = [
    {"model": "vgg19", "trained on": "uncropped", "tested on": "uncropped", "test accuracy": "> 0.80",
     "note": "best of five; best checkpoint VGG19-010-0.4609-0.8172", "split": "the given folders"},
    {"model": "resnet101", "trained on": "uncropped", "tested on": "uncropped", "test accuracy": "> 0.80",
     "note": "second", "split": "the given folders"},
    {"model": "vgg16", "trained on": "uncropped", "tested on": "uncropped", "test accuracy": "> 0.80",
     "note": "third", "split": "the given folders"},
    {"model": "resnet50_gap", "trained on": "uncropped", "tested on": "uncropped", "test accuracy": "> 0.80",
     "note": "fourth", "split": "the given folders"},
    {"model": "efficientnet_b7", "trained on": "uncropped", "tested on": "uncropped", "test accuracy": "0.46",
     "note": "validation 0.79; best checkpoint at epoch 1", "split": "the given folders"},
    {"model": "(their model)", "trained on": "cropped", "tested on": "cropped", "test accuracy": "> 0.93",
     "note": "", "split": "the given folders"},
    {"model": "(their model)", "trained on": "cropped", "tested on": "uncropped", "test accuracy": "< 0.70",
     "note": "the domain shift", "split": "the given folders"},
]


def seed_thyroid() -> pd.DataFrame:
    """The thyroid project's published results, with the split they came from."""
    return pd.DataFrame(SEED_THYROID)
