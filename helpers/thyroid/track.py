"""The thyroid track's training data and its evaluation across image variants (notebooks 16-17).

Ultrasound images are few and larger than IDC patches, so they are decoded once into memory (uint8).
Normalisation is per channel, on the training images only (the seed's ``featurewise_center`` +
``featurewise_std_normalization``), as the model's first layer, so a saved model carries it. Splits are
by nodule. A table of scores measured here names its images in a ``data`` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .. import evaluate, hardware, reference
from ..data.pipeline import Data
from ..plots import title_with_source
from .index import CLASSES, VARIANTS, build_index, load_images, split

CLASS_NAMES = list(CLASSES)
# Side of the square the images are resized to, per profile (the seed's is not in its slides; 224 is
# the backbones' ImageNet size). Smoke's 32 px: notebook 16 took 347 s against 430 s at 64 px (2 cores).
IMAGE_SIZE = {"smoke": 32, "cpu": 128, "full": 224, "colab": 224}
# Notebook 16's backbones, per profile. Smoke trains the three smallest: ResNet101 and EfficientNetB7
# took 214 s of its 271 s of training (2 cores, 32 px, 2 epochs) and teach nothing more from scratch.
BACKBONES = ("vgg16", "vgg19", "resnet50_gap", "resnet101", "efficientnet_b7")
TRAINED_BACKBONES = {"smoke": BACKBONES[:3], "cpu": BACKBONES, "full": BACKBONES, "colab": BACKBONES}
# The domain-shift study (notebook 17) trains a small model longer on smaller images, so that even the
# smoke run shows the shift (CancerNet on the smoke set: 8 epochs at 64 px stayed near chance, 20 at
# 32 px reached AUC 0.86).
SHIFT_SETTINGS = {"smoke": {"image_size": 32, "epochs": 20, "batch_size": 32},
                  "cpu": {"image_size": 96, "epochs": 20, "batch_size": 32},
                  "full": {"image_size": 224, "epochs": 15, "batch_size": 32},
                  "colab": {"image_size": 224, "epochs": 10, "batch_size": 32}}
ORIGINAL_DATA = "seed project's real thyroid images (its slides)"


def featurewise_stats(images) -> tuple[list[float], list[float]]:
    """Per-channel mean and variance of uint8 images (n, h, w, 3), as plain floats."""
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
        raise ValueError(f"expected a non-empty batch of images (n, h, w, 3), got shape {x.shape}")
    return x.mean(axis=(0, 1, 2)).tolist(), x.var(axis=(0, 1, 2)).tolist()


def _variants(which) -> list[str]:
    chosen = [which] if isinstance(which, str) else list(which)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise ValueError(f"unknown image variant {unknown or which!r}; choose from {VARIANTS}")
    return chosen


def split_index(root, seed: int = 42) -> tuple[pd.DataFrame, dict]:
    """The index of ``root`` split by nodule (``thyroid.index.split``), and its report."""
    df, report = build_index(root)
    # evaluate.per_patient and the registry speak of patients; here a patient is a nodule id
    return split(df, seed=seed).assign(patient=lambda t: t["group"]), report


def prepare(cfg, image_size: int, train_on="cropped", test_on=None, augment="original_both_flips",
            index: pd.DataFrame | None = None) -> Data:
    """Training, validation and test data of one arm: ``train_on`` "cropped", "uncropped" or both (a
    list), validation from the same variants; ``test_on`` the variant the test split shows (default:
    the first training one). ``Data.extra`` holds the normalisation for the model build, the arrays,
    and one test set per variant."""
    from ..data import pipeline
    from ..train import class_weights

    train_variants = _variants(train_on)
    test_variant = _variants(test_on or train_variants[0])[0]
    df = index if index is not None else split_index(cfg.data_dir, cfg.seed)[0]
    sides = df.groupby("group")["split"].unique()  # an index made elsewhere may not be split by nodule
    leaked = sides[sides.map(len) > 1]
    if len(leaked):
        shown = ", ".join(f"{group} ({'/'.join(sorted(on))})" for group, on in leaked.head(5).items())
        raise ValueError(f"{len(leaked)} nodule(s) in more than one split: {shown}")
    fit_rows = df[df["variant"].isin(train_variants) & df["split"].isin(["train", "val"])]
    if fit_rows.empty or not (fit_rows["split"] == "val").any():
        raise ValueError(f"no training or validation images of variant {train_variants} in {cfg.data_dir}")
    table = pd.concat([fit_rows, df[(df["split"] == "test") & df["variant"].isin(VARIANTS)]]).reset_index(drop=True)
    images, labels, split = load_images(table, image_size), table["label"].to_numpy(), table["split"].to_numpy()
    batch = hardware.global_batch(cfg.batch_size)

    def ds(mask, shuffle=False, augment=None):  # a seeded augmentation, in one thread: a rerun repeats
        return pipeline.make_dataset(images=images[mask], labels=labels[mask], batch_size=batch, one_hot=True,
                                     image_size=image_size, shuffle=shuffle, seed=cfg.seed,
                                     augment=None if augment in (None, "none") else augment)

    tested = {v: mask for v in VARIANTS if (mask := (split == "test") & (table["variant"] == v).to_numpy()).any()}
    tests = {v: ds(mask) for v, mask in tested.items()}
    arm = "+".join(train_variants)
    return Data(  # Data.part("test") must list the images of data.test, in its order
        index=table[(split != "test") | tested.get(test_variant, False)].reset_index(drop=True),
        train=ds(split == "train", shuffle=True, augment=augment), val=ds(split == "val"),
        test=tests.get(test_variant), class_weight=class_weights(labels[split == "train"]),
        split_note=(f"by nodule; train and validation: {arm} images of the training folder; "
                    f"test: {test_variant} images of held-out nodules; seed {cfg.seed}"),
        image_size=image_size, batch_size=batch,
        extra={"build": {"normalize": featurewise_stats(images[split == "train"])},
               "key": f"{arm}->{test_variant}:{augment}", "task": "thyroid", "class_names": CLASS_NAMES,
               "images_train": images[split == "train"], "tests": tests,
               "test_images": {v: images[mask] for v, mask in tested.items()},
               "test_labels": {v: labels[mask] for v, mask in tested.items()}},
    )


def counts(data: Data) -> pd.DataFrame:
    """Images per split and class of one arm (the test row is the variant it tests on)."""
    table = data.index.groupby(["split", "label"]).size().unstack(fill_value=0)
    table = table.rename(columns=dict(enumerate(CLASS_NAMES))).reindex(["train", "val", "test"]).fillna(0)
    table["malignant share"] = (table["malignant"] / table.sum(axis=1)).round(3)
    return table


def cross_evaluate(arms: dict, source: str, thresholds: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Score each trained arm (``arms``: name -> (model, Data)) on each variant's held-out test images:
    one row per (trained on, tested on), at the threshold chosen on the arm's own validation split,
    with ``source`` (``thyroid.index.data_label``) as its ``data``; and (labels, probabilities) per row."""
    rows, curves = [], {}
    for name, (model, data) in arms.items():
        threshold = (thresholds or {}).get(name)
        if threshold is None:
            threshold = evaluate.choose_threshold(*evaluate.predict(model, data.val))
        for variant, ds in data.extra["tests"].items():
            y, p = evaluate.predict(model, ds)
            s = evaluate.scores(y, p, threshold)
            rows.append({"trained on": name, "tested on": variant, "n": s["n"], "malignant": s["positives"],
                         "threshold": round(float(threshold), 3), "f1": s["f1"],
                         "balanced_accuracy": s["balanced_accuracy"], "roc_auc": s["roc_auc"]})
            curves[f"train {name} -> test {variant}"] = (y, p)
    return with_data(pd.DataFrame(rows).round(3), source), curves


def with_data(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """A copy of ``table`` with ``data`` = ``source`` as its first column, so that a score is never
    read without the images it came from."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"a table of scores needs the data it came from (thyroid.index.data_label), got {source!r}")
    if "data" in table.columns:
        raise ValueError(f"the table already has a data column: {sorted(set(table['data']))}")
    return table.assign(data=source)[["data", *table.columns]]


def original_table(**match) -> pd.DataFrame:
    """The seed project's published thyroid figures, labelled as real images in their ``data``
    column: a table apart from any measured here. ``match``: column=value filters."""
    table = reference.original_thyroid()
    for column, value in match.items():
        if column not in table.columns:
            raise ValueError(f"the seed's table has no column {column!r}; it has {list(table.columns)}")
        table = table[table[column] == value]
    return with_data(table.reset_index(drop=True), ORIGINAL_DATA)


def roc_figure(curves: dict, title: str, source: str):
    """ROC curves (``curves``: label -> (y_true, probability of malignant)) on one axes, best first."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6), layout="constrained")
    auc = {label: skm.roc_auc_score(y, p) if len(np.unique(y)) == 2 else np.nan for label, (y, p) in curves.items()}
    for label in sorted(curves, key=lambda k: -auc[k]):
        fpr, tpr, _ = skm.roc_curve(*curves[label])
        ax.plot(fpr, tpr, lw=2, label=f"{label} (AUC {auc[label]:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xlabel="false positive rate (benign nodules called malignant)",
           ylabel="true positive rate (malignant nodules found)", aspect="equal")
    ax.legend(loc="lower right", fontsize=9)
    title_with_source(ax, title, source)
    return fig


def test_examples(model, data: Data, variant: str, n: int = 8, seed: int = 0):
    """Up to ``n`` test images of ``variant`` (both classes, as balanced as they allow), their labels and
    the model's probability of malignant, for a Grad-CAM grid."""
    images, labels = data.extra["test_images"][variant], data.extra["test_labels"][variant]
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: n // 2] for c in (0, 1)])
    x = images[picked].astype("float32")
    return x, labels[picked], model.predict(x, verbose=0)[:, 1]
