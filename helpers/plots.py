"""Figures shared by the notebooks. Each function returns a matplotlib Figure (``overlay``, an image)."""

from __future__ import annotations

import textwrap

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

from .data.pipeline import load_patch

CLASS_NAMES = {0: "IDC-negative", 1: "IDC-positive"}
CLASS_COLOURS = {0: "#4c72b0", 1: "#c44e52"}
_METRIC_NAMES = {"f1": "F1", "roc_auc": "ROC-AUC", "balanced_accuracy": "balanced accuracy"}
_LABEL_COLOURS = matplotlib.colors.ListedColormap(["#d9d9d9", CLASS_COLOURS[1]])  # grey negative, red IDC


def scikitplot():
    """Import scikit-plot 0.3.7 on current SciPy, NumPy and Matplotlib: it still calls
    ``scipy.interp``, ``np.in1d`` and ``matplotlib.cm.get_cmap``, aliased to their replacements."""
    import scipy

    if not hasattr(scipy, "interp"):
        scipy.interp = np.interp
    if not hasattr(np, "in1d"):
        np.in1d = np.isin
    if not hasattr(matplotlib.cm, "get_cmap"):
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
    import scikitplot as skplt

    return skplt


def title_with_source(ax, title: str, source: str) -> None:
    """A title plus the data it came from, so no figure is read without it."""
    ax.set_title(f"{title}\n({source})", fontsize=11)


def _panels(n, width, height, **kwargs):
    """A figure of ``n`` panels side by side (width and height per panel): (figure, axes)."""
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), layout="constrained", squeeze=False, **kwargs)
    return fig, axes[0]


def patches_per_patient(df: pd.DataFrame, source: str):
    counts = df.groupby("patient").size()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.histplot(counts, bins=30, ax=ax, color="#55a868")
    ax.set(xlabel="patches per patient", ylabel="patients")
    ax.axvline(counts.median(), color="k", ls="--", lw=1, label=f"median {counts.median():.0f}")
    ax.legend()
    title_with_source(ax, f"Patches per patient: {counts.min()} to {counts.max()}", source)
    return fig


def positive_share_per_patient(df: pd.DataFrame, source: str, threshold: float = 0.8):
    share = df.groupby("patient")["label"].mean().sort_values()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.bar(range(len(share)), share.to_numpy(), color=np.where(share > threshold, CLASS_COLOURS[1], "#8c8c8c"),
           width=1.0)
    ax.axhline(threshold, color="k", ls="--", lw=1)
    ax.text(0.01, threshold + 0.02, f"{int((share > threshold).sum())} patients above {threshold:.0%} IDC-positive",
            transform=ax.get_yaxis_transform())
    ax.set(xlabel="patients, sorted by IDC share", ylabel="share of IDC-positive patches", ylim=(0, 1.05),
           xlim=(-0.5, len(share) - 0.5))
    title_with_source(ax, "IDC share per patient", source)
    return fig


def class_balance(df: pd.DataFrame, source: str):
    counts = df["label"].value_counts().reindex([0, 1], fill_value=0)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.bar([CLASS_NAMES[i] for i in counts.index], counts.to_numpy(), color=[CLASS_COLOURS[i] for i in counts.index])
    for i, n in enumerate(counts):
        ax.text(i, n, f"{n:,}\n({n / counts.sum():.0%})", ha="center", va="bottom")
    ax.set(ylabel="patches", ylim=(0, counts.max() * 1.25))
    title_with_source(ax, "Class balance", source)
    return fig


def patch_grid(df: pd.DataFrame, title: str, rows: int = 4, cols: int = 8, seed: int = 0):
    """A grid of random patches from ``df`` at their real size (border patches show white padding)."""
    n = min(rows * cols, len(df))
    picked = df.sample(n, random_state=seed) if n else df
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, row) in zip(axes.flat, picked.iterrows()):
        ax.imshow(load_patch(row["path"]))
        ax.set_title(f"{row['patient']}", fontsize=7)
    fig.suptitle(title)
    return fig


def colour_table(df: pd.DataFrame, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean R, G, B and saturation of up to ``n`` random patches (padding excluded)."""
    rows = []
    for _, row in df.sample(min(n, len(df)), random_state=seed).iterrows():
        img = load_patch(row["path"])[: row["height"], : row["width"]].reshape(-1, 3).astype(float)
        sat = (img.max(1) - img.min(1)) / np.maximum(img.max(1), 1)
        red, green, blue = img.mean(0)
        rows.append({"label": CLASS_NAMES[row["label"]], "red": red, "green": green, "blue": blue,
                     "saturation": sat.mean()})
    return pd.DataFrame(rows)


def colour_stats(table: pd.DataFrame, source: str):
    fig, axes = _panels(4, 3.25, 3.4)
    palette = {CLASS_NAMES[k]: v for k, v in CLASS_COLOURS.items()}
    for i, (ax, channel) in enumerate(zip(axes, ["red", "green", "blue", "saturation"])):
        sns.kdeplot(data=table, x=channel, hue="label", ax=ax, common_norm=False,
                    fill=True, palette=palette, warn_singular=False, legend=i == 0)
        ax.set(xlabel=f"mean {channel}" + (" (0-1)" if channel == "saturation" else " (0-255)"), yticks=[],
               ylabel="density" if i == 0 else "")
    fig.suptitle(f"Colour of patches by class ({source})")
    return fig


def _slide_panels(n, mosaic, labels, height):
    """A figure of ``n`` panels: the tissue mosaic, the annotation map, then the caller's."""
    aspect = mosaic.shape[0] / max(mosaic.shape[1], 1)
    fig, axes = _panels(n, 6 if n == 2 else 5, height * aspect + (0.8 if n == 2 else 1.2))
    axes[0].imshow(mosaic)
    axes[1].imshow(np.ma.masked_invalid(labels), cmap=_LABEL_COLOURS, vmin=0, vmax=1, interpolation="nearest")
    for ax in axes:
        ax.axis("off")
    return fig, axes


def slide_with_labels(mosaic: np.ndarray, labels: np.ndarray, patient: str, source: str):
    """The rebuilt tissue beside its annotation map (IDC-positive cells in red)."""
    fig, axes = _slide_panels(2, mosaic, labels, 6)
    axes[0].set_title(f"patient {patient}: patches tiled by their x, y")
    axes[1].set_title("annotation: grey IDC-negative, red IDC-positive, white no patch")
    fig.suptitle(f"One patient's tissue rebuilt from patch coordinates ({source})")
    return fig


def slide_heatmap(maps: dict, source: str, threshold: float | None = None):
    """Tissue, annotated IDC and predicted IDC probability of one patient (``slides.patient_maps``);
    ``threshold`` (chosen on validation) outlines the cells the model calls IDC."""
    fig, axes = _slide_panels(3, maps["mosaic"], maps["labels"], 5)
    axes[0].set_title(f"tissue ({maps['patches']} patches)")
    axes[1].set_title("annotated: red IDC, grey not, white no patch")
    # A briefly trained model can squeeze every probability near 0 (its threshold, chosen on
    # validation, is then tiny too): on a 0-1 scale the map would be black. Say so, and scale.
    top = float(np.nanmax(maps["proba"]))
    vmax = 1.0 if top >= 0.5 else max(top, 1e-6)
    heat = axes[2].imshow(np.ma.masked_invalid(maps["proba"]), cmap="magma", vmin=0, vmax=vmax)
    if threshold is not None and top >= threshold:
        called = np.nan_to_num(maps["proba"], nan=0.0) >= threshold
        axes[2].contour(called, levels=[0.5], colors="cyan", linewidths=1)
    axes[2].set_title("predicted IDC probability" + ("" if threshold is None else f" (cyan: >= {threshold:.3g})"))
    bar = fig.colorbar(heat, ax=axes[2], shrink=0.8)
    if vmax < 1:
        bar.set_label(f"scale 0 to {vmax:.3g}, this slide's highest probability")
    fig.suptitle(f"Patient {maps['patient']} ({source})")
    return fig


def idc_share_agreement(per_patient: pd.DataFrame, source: str):
    """Per patient: annotated against predicted share of IDC patches (the IDC area of the slide)."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect agreement")
    ax.scatter(per_patient["idc_share"], per_patient["predicted_idc_share"], s=18 + per_patient["patches"] / 10,
               color=CLASS_COLOURS[1], alpha=0.7, edgecolor="k", label="a patient (size: patches)")
    for _, row in per_patient.iterrows():
        ax.annotate(str(row["patient"]), (row["idc_share"], row["predicted_idc_share"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="annotated IDC share of the patient's patches",
           ylabel="predicted IDC share")
    ax.legend(loc="upper left", fontsize=8)
    title_with_source(ax, "IDC area per patient", source)
    return fig


def study_curves(history: pd.DataFrame, title: str, metrics=("loss", "accuracy", "f1"),
                 log_loss: bool = False):
    """Every variant of a study: one panel per metric, one colour per variant, training solid and
    validation dashed; with several seeds the line is their mean and the band one sd."""
    metrics = [m for m in metrics if m in set(history["metric"])]
    fig, axes = _panels(len(metrics), 4.6, 3.8)
    for ax, metric in zip(axes, metrics):
        sns.lineplot(data=history[history["metric"] == metric], x="epoch", y="value", hue="variant", style="split",
                     style_order=["training", "validation"], errorbar="sd", ax=ax)
        ax.set(title=metric, ylabel=metric)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if metric == "loss" and log_loss:
            ax.set_yscale("log")
        if ax is not axes[-1] and ax.get_legend():
            ax.get_legend().remove()
    if axes[-1].get_legend():
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.suptitle(title)
    return fig


def training_curves(history: pd.DataFrame, title: str, metrics=("loss", "accuracy", "f1")):
    """Training against validation of one run, one panel per metric, from a Keras history table."""
    long = pd.concat([pd.DataFrame({"epoch": history["epoch"] + 1, "metric": metric, "value": history[column],
                                    "split": split, "variant": "this run"})
                      for metric in metrics if metric in history
                      for split, column in (("training", metric), ("validation", f"val_{metric}"))
                      if column in history]).dropna()
    return study_curves(long, title, metrics)


def evaluation_plots(y_true, proba, threshold: float, title: str):
    """ROC, precision-recall and confusion matrix (at ``threshold``) through scikit-plot."""
    skplt = scikitplot()
    y_true, proba = np.asarray(y_true).astype(int), np.asarray(proba)
    probas = np.column_stack([1 - proba, proba])
    fig, axes = _panels(3, 5, 4.4)
    skplt.metrics.plot_roc(y_true, probas, ax=axes[0], plot_micro=False, plot_macro=False,
                           classes_to_plot=[1], title="ROC (IDC)")
    skplt.metrics.plot_precision_recall(y_true, probas, ax=axes[1], plot_micro=False,
                                        classes_to_plot=[1], title="Precision-recall (IDC)")
    skplt.metrics.plot_confusion_matrix(y_true, (proba >= threshold).astype(int), ax=axes[2],
                                        title=f"Confusion matrix (threshold {threshold:.2f})")
    axes[2].set_xticks([0, 1], ["IDC(-)", "IDC(+)"])
    axes[2].set_yticks([0, 1], ["IDC(-)", "IDC(+)"])
    fig.suptitle(title)
    return fig


def learning_curve(table: pd.DataFrame, title: str, metrics=("roc_auc", "balanced_accuracy", "f1")):
    """Each metric (mean over folds, ± sd whiskers) against the training patches a fold learnt from,
    on a log scale: one line per way of drawing the share (``crossval.learning_curve``'s table)."""
    whole = table[table["train_subset"] == "all"]
    fig, axes = _panels(len(metrics), 4.2, 3.6)
    for ax, metric in zip(axes, metrics):
        for by, rows in table[table["train_subset"] != "all"].groupby("train_subset"):
            rows = pd.concat([rows, whole]).sort_values("train_patches")
            ax.errorbar(rows["train_patches"].astype(float), rows[metric].astype(float),
                        yerr=rows[f"{metric}_sd"].astype(float).fillna(0), marker="o", capsize=3,
                        label=f"a share of the {by}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(_spread(table["train_patches"]), minor=False)  # the points' own sizes, not overprinted
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set(title=_METRIC_NAMES.get(metric, metric), xlabel="training patches per fold (log scale)")
    axes[0].legend(fontsize="small")
    fig.suptitle(textwrap.fill(title, 40 * len(metrics)))
    return fig


def _spread(values, ratio: float = 1.25) -> list:
    """The sorted values, leaving out each that lies within ``ratio`` of the last one kept."""
    kept = []
    for v in sorted(float(v) for v in values):
        if not kept or v >= kept[-1] * ratio:
            kept.append(round(v))
    return kept


def split_leak(table: pd.DataFrame, title: str, reference: dict | None = None,
               metrics=("f1", "balanced_accuracy", "roc_auc")):
    """Test scores of a patch split beside a patient split (``leak.compare_splits``'s rows: each seed
    a dot, the mean a bar), and ``reference`` values (e.g. the seed project's F1) as dashed lines."""
    order = [s for s in ("patch", "patient") if s in set(table["split"])]
    colours = {"patch": "tab:red", "patient": "tab:blue"}
    fig, axes = _panels(len(metrics), 3.4, 3.6, sharey=True)
    for ax, metric in zip(axes, metrics):
        for i, split in enumerate(order):
            values = table.loc[table["split"] == split, metric].astype(float)
            ax.bar(i, values.mean(), color=colours[split], alpha=0.6, width=0.6)
            ax.plot([i] * len(values), values, "o", color="black", ms=4)
            ax.annotate(f"{values.mean():.3f}", (i, values.mean()), ha="center", va="bottom",
                        xytext=(0, 3), textcoords="offset points")
        if reference and metric in reference:
            value, label = reference[metric]
            ax.axhline(value, color="black", ls="--", lw=1)
            ax.annotate(label, (len(order) - 0.6, value), ha="right", va="bottom", fontsize="small",
                        annotation_clip=False)
        ax.set_xticks(range(len(order)), [f"{s} split" for s in order])
        ax.set(ylim=(0, 1.05), title=_METRIC_NAMES.get(metric, metric))
    fig.suptitle(textwrap.fill(title, 30 * len(metrics)))
    return fig


# --- class activation maps (helpers.cam computes them) -------------------------

def _rgb_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be RGB of shape (height, width, 3), got shape {image.shape}")
    return np.clip(np.rint(image.astype("float32")), 0, 255).astype("uint8")


def overlay(image, heatmap, alpha=0.4, cmap="jet") -> np.ndarray:
    """The patch (uint8 or float in [0, 255]) blended with its coloured map (weight ``alpha``), RGB
    uint8; a map of another size (a model fed 71x71 resizes) is resized to the patch bilinearly."""
    image = _rgb_uint8(image)
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype="float32"))
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (height, width), got shape {heatmap.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    h, w = image.shape[:2]
    if heatmap.shape != (h, w):
        heatmap = np.asarray(Image.fromarray(heatmap).resize((w, h), Image.Resampling.BILINEAR))
    colours = matplotlib.colormaps[cmap](np.clip(heatmap, 0, 1))[..., :3] * 255
    return np.clip(np.rint((1 - alpha) * image + alpha * colours), 0, 255).astype("uint8")


# (truth, prediction, title) laid out as the confusion matrix of evaluation_plots:
# rows the truth, columns the prediction, IDC-negative first.
OUTCOMES = ((0, 0, "true negatives: {neg} called {neg}"),
            (0, 1, "false positives: {neg} called {pos}"),
            (1, 0, "false negatives: {pos} missed"),
            (1, 1, "true positives: {pos} called {pos}"))


def outcome_grid(images, maps, y_true, proba, threshold, title, per_group=4,
                 class_names=("healthy", "IDC")):
    """A few patches of each outcome at ``threshold``, above their maps, in four panels laid out as
    ``evaluation_plots``' confusion matrix: the patches the model is surest about (the most confident
    mistakes, say), p (the positive class's probability) over each. ``class_names``: (negative,
    positive), e.g. ("benign", "malignant")."""
    images, maps = np.asarray(images), np.asarray(maps)
    y_true, proba = np.asarray(y_true).astype(int), np.asarray(proba, dtype="float32")
    lengths = {"images": len(images), "maps": len(maps), "y_true": len(y_true), "proba": len(proba)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"images, maps, y_true and proba must be as long, got lengths {lengths}")
    if not isinstance(per_group, (int, np.integer)) or per_group < 1:
        raise ValueError(f"per_group must be a positive int, got {per_group!r}")
    predicted = (proba >= threshold).astype(int)
    # at least 10 inches wide: narrower, the four panel titles run into each other
    fig = plt.figure(figsize=(max(2 * per_group * 1.25 + 0.4, 10), 2 * (2 * 1.25 + 0.5) + 0.4),
                     layout="constrained")
    for subfig, (truth, called, label) in zip(fig.subfigures(2, 2).flat, OUTCOMES):
        members = np.flatnonzero((y_true == truth) & (predicted == called))
        # Surest first: highest p where IDC was called, lowest where it was not.
        picked = members[np.argsort(-proba[members] if called else proba[members], kind="stable")][:per_group]
        label = label.format(neg=class_names[0], pos=class_names[1])
        subfig.suptitle(f"{label} ({len(members)})", fontsize=10)
        if not len(picked):
            ax = subfig.subplots()
            ax.axis("off")
            ax.text(0.5, 0.5, f"no {label.split(':')[0]} at threshold {threshold:.2f}",
                    ha="center", va="center", fontsize=9, color="0.4")
            continue
        axes = subfig.subplots(2, per_group, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for col, i in enumerate(picked):
            axes[0, col].imshow(_rgb_uint8(images[i]))
            axes[0, col].set_title(f"p={proba[i]:.2f}", fontsize=8)
            axes[1, col].imshow(overlay(images[i], maps[i]))
    fig.suptitle(f"{title}\np: predicted probability of {class_names[1]}, threshold {threshold:.2f}")
    return fig


def layer_comparison(images, maps_by_layer: dict, title: str, proba=None):
    """The same patches explained at several layers: one row per patch, the patch then one overlay
    per layer (an early layer is sharp but sees little; a late one sees more but is coarse)."""
    images = np.asarray(images)
    for name, maps in maps_by_layer.items():
        if len(maps) != len(images):
            raise ValueError(f"layer {name!r}: {len(maps)} maps for {len(images)} images")
    rows, cols = len(images), 1 + len(maps_by_layer)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.1 * rows + 0.6), squeeze=False,
                             layout="constrained")
    for r, image in enumerate(images):
        axes[r][0].imshow(_rgb_uint8(image))
        axes[r][0].set_title("patch" if proba is None else f"patch, p={proba[r]:.2f}", fontsize=8)
        for c, (name, maps) in enumerate(maps_by_layer.items(), 1):
            axes[r][c].imshow(overlay(image, maps[r]))
            if r == 0:
                axes[r][c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def selection_path(path: pd.DataFrame, title: str):
    """A forward selection (``selection.forward_selection``'s table): every candidate tried, round by
    round, its mean paired difference from the round's reference (dot) and the one-sided lower
    confidence bound (whisker's end); a candidate is kept when that bound is above zero."""
    rows = path.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * max(len(rows), 2)), layout="constrained")
    y = np.arange(len(rows))
    mean, lower = rows["mean"].astype(float), rows["lower"].astype(float)
    for i, (m, low, kept) in enumerate(zip(mean, lower.fillna(mean), rows["chosen"])):
        ax.errorbar(m, i, xerr=[[m - low], [0]], fmt="o", color="tab:green" if kept else "tab:grey", capsize=3)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(y, [f"round {r}: {c.split('+')[-1]}" for r, c in zip(rows["round"], rows["candidate"])])
    ax.invert_yaxis()
    metric = _METRIC_NAMES.get(rows["metric"].iloc[0], rows["metric"].iloc[0]) if len(rows) else ""
    ax.set_xlabel(textwrap.fill(f"{metric} difference from the round's recipe (dot: mean over folds and seeds; "
                                "whisker: down to the 95% lower bound); green: kept", 80))
    ax.set_title(textwrap.fill(title, 80))
    return fig


def seed_spread_bars(table: pd.DataFrame, title: str, metrics=("f1", "balanced_accuracy", "roc_auc")):
    """Recipes side by side (rows of ``table``, columns ``<metric>`` and ``<metric>_sd``): the mean
    over training seeds as a bar, one sd as the whisker, one panel per metric."""
    fig, axes = _panels(len(metrics), 3.4, 3.4)
    for ax, metric in zip(axes, metrics):
        mean, sd = table[metric].astype(float), table[f"{metric}_sd"].astype(float).fillna(0)
        ax.bar(table.index, mean, yerr=sd, capsize=4, color=sns.color_palette(n_colors=len(table)))
        ax.set_ylim(max(0.0, float((mean - sd).min()) - 0.1), min(1.0, float((mean + sd).max()) + 0.05))
        ax.set_title(_METRIC_NAMES.get(metric, metric))
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(textwrap.fill(title, 90))
    return fig
