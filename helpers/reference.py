"""Published figures to set beside ours, each with the split it was measured on.

A result on a random patch split is not comparable with one on a patient split:
patches of one patient are near-duplicates, so a random split leaks.

The seed project (the one this series grew from) is ``original`` in names: "seed" means a random seed.
"""

from __future__ import annotations

import pandas as pd

# The seed project (IDC), from its slides, all on random patches. Accuracies unless named otherwise.
_IDC_COLUMNS = ("model", "setting", "train", "val", "test", "f1", "split", "note")
ORIGINAL_IDC = [dict(zip(_IDC_COLUMNS, (*row[:-1], "random patches", row[-1]))) for row in (
    ("vgg_style", "50 epochs", None, None, 0.76, 0.74, "1,110 test patches; F1 of IDC(+)"),
    ("resnet50", "ImageNet, new head", 0.993, 0.696, 0.732, None, ""),
    ("xception", "BreakHis-pretrained, 100 frozen, 21 epochs", 0.999, 0.784, None, None, ""),
    ("mobilenet_v2", "from scratch", 0.978, 0.734, None, None, ""),
    ("mobilenet_v2", "ImageNet, 50 frozen, 10 epochs", 0.957, 0.804, None, None, ""),
    ("mobilenet_v2", "BreakHis, 100 frozen, stopped at 66", 0.797, 0.811, 0.765, None, ""),
    ("cancernet", "Adadelta bs128 lr 0.00396 / Adagrad bs64 lr 0.0282", None, None, 0.796, 0.789,
     "~5.5k balanced patches"),
    ("cancernet", "BreakHis + Bayesian fine_tune_at=5, lr 0.0346", 0.821, 0.818, 0.789, None, ""),
)]

# The seed project's fine_tune_at per model (ORIGINAL_IDC): CancerNet's first block (5 layers),
# the first 100 layers of MobileNetV2 and of Xception.
ORIGINAL_FINE_TUNE_AT = {"cancernet": 5, "mobilenet_v2": 100, "xception": 100}

# Published results on the benchmark's patient split (84/29 train+val, 49 test).
LITERATURE_IDC = [
    {"model": "Cruz-Roa et al. 2014 (3-layer CNN)", "f1": 0.718, "balanced_accuracy": 0.842,
     "split": "by patient, 113/49"},
    {"model": "Janowczyk & Madabhushi 2016 (AlexNet, 32x32)", "f1": 0.765, "balanced_accuracy": 0.847,
     "split": "by patient, same lists"},
]


def original_rows(model: str) -> pd.DataFrame:
    """The seed project's figures for ``model`` (empty if it gave none)."""
    rows = [r for r in ORIGINAL_IDC if r["model"] == model]
    return pd.DataFrame(rows, columns=list(ORIGINAL_IDC[0]))


# The thyroid project (seed 001), from its slides: accuracy on the given test folder.
_THYROID_COLUMNS = ("model", "trained on", "tested on", "test accuracy", "note")
ORIGINAL_THYROID = [dict(zip(_THYROID_COLUMNS, row), split="the given folders") for row in (
    ("vgg19", "uncropped", "uncropped", "> 0.80", "best of five; best checkpoint VGG19-010-0.4609-0.8172"),
    ("resnet101", "uncropped", "uncropped", "> 0.80", "second"),
    ("vgg16", "uncropped", "uncropped", "> 0.80", "third"),
    ("resnet50_gap", "uncropped", "uncropped", "> 0.80", "fourth"),
    ("efficientnet_b7", "uncropped", "uncropped", "0.46", "validation 0.79; best checkpoint at epoch 1"),
    ("(their model)", "cropped", "cropped", "> 0.93", ""),
    ("(their model)", "cropped", "uncropped", "< 0.70", "the domain shift"),
)]


def original_thyroid() -> pd.DataFrame:
    """The thyroid project's published results, with the split they came from."""
    return pd.DataFrame(ORIGINAL_THYROID)
