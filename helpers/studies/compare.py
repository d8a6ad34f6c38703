"""Every model run of the registry in one place, for the comparison notebook (14).

The registry holds whatever has run so far: what is absent is named (``missing``) with the command
that makes it, and an unusable prediction file is reported and left out, not fatal. Every figure and
table names the data and split of its numbers: a score on generated data, or on a random patch
split, does not compare with one on real data split by patient.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import pandas as pd
import seaborn as sns
from sklearn import metrics as skm

from .. import results
from ..plots import title_with_source
from ..reference import LITERATURE_IDC, ORIGINAL_IDC

# The model notebooks of the series and their models (each named after its notebook); study notebooks'
# rows are shown, not expected.
EXPECTED = {nb: nb[3:] for nb in ("02_vgg_style", "03_resnet50", "04_inception_v3", "05_xception", "06_mobilenet_v2",
                                  "07_cancernet")}

METRICS = ["f1", "balanced_accuracy", "roc_auc"]
# The comparison table's columns: ``data`` is readable ("real data: NAME"), ``data_dir`` the path.
COLUMNS = ["notebook", "run", "model", "data", "split", "scored_on", *METRICS, "accuracy",
           "params", "train_seconds", "images_per_s", "profile", "time", "data_dir", "predictions"]
NUMBERS = [*METRICS, "accuracy", "train_seconds", "images_per_s"]
AUC_TOLERANCE = 1e-3  # the registry rounds AUC to 4 decimals
PUBLISHED = ["source", "model", "setting", "f1", "balanced_accuracy", "accuracy", "split", "note"]


# --- the table -----------------------------------------------------------------

def data_label(data_dir, generated) -> str:
    """What a reader needs to know about the data (as ``Config.data_label`` says it)."""
    if str(generated).strip().lower() in ("true", "1", "1.0"):
        return "generated demo data"
    if pd.isna(data_dir) or not str(data_dir):
        return "unknown data"
    return f"real data: {Path(str(data_dir)).name}"


def model_runs(registry, latest: bool = True, task: str = "idc") -> pd.DataFrame:
    """The model rows (a model and a score) of one ``task`` ("idc", the default for rows without one, or
    "thyroid") in the registry (the CSV file or its folder), in ``COLUMNS``; the latest row of each run only
    unless ``latest=False`` (a rerun appends under the same name). Empty, with the columns, when nothing ran;
    a registry that does not parse is an error."""
    path = results.registry_path(registry) if Path(registry).is_dir() else Path(registry)
    try:
        table = results.load(path)
    except Exception as exc:
        raise ValueError(f"results registry {path} cannot be read: {exc}") from exc
    table = table.reindex(columns=list(dict.fromkeys([*table.columns, *COLUMNS])))
    for column in [*NUMBERS, "params"]:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    of_task = table["task"].fillna("idc") == task if "task" in table else pd.Series(task == "idc", table.index)
    rows = table[table["model"].notna() & table[METRICS].notna().any(axis=1) & of_task]
    if rows["run"].isna().any():
        lines = [i + 2 for i in rows.index[rows["run"].isna()]]  # +2: header, then 1-based
        raise ValueError(f"{path}: model rows without a run name (lines {lines})")
    if latest:
        rows = rows.drop_duplicates("run", keep="last")  # rows are appended: last is latest
    rows = rows.assign(data_dir=rows["data"],
                       data=[data_label(d, g) for d, g in zip(rows["data"], rows["generated"])])
    rows = rows.sort_values(["notebook", "time"], kind="stable", na_position="last")
    out = rows[COLUMNS].reset_index(drop=True).astype(dict.fromkeys(NUMBERS, "float64") | {"params": "Int64"})
    return out.astype({c: "object" for c in COLUMNS if c not in NUMBERS and c != "params"})


def run_labels(runs: pd.DataFrame) -> list[str]:
    """One distinct name per row: the run, plus its time where a run appears twice."""
    repeated = runs["run"].duplicated(keep=False)
    return [f"{run} ({str(time)[:19].replace('T', ' ')})" if twice else str(run)
            for run, time, twice in zip(runs["run"], runs["time"], repeated)]


def missing(runs: pd.DataFrame, profile: str | None = None) -> pd.DataFrame:
    """The expected model notebooks with no row yet, and the command that makes each, with the
    profile (and real data folder) of the runs present, so the new row compares with them."""
    done = set(zip(runs["notebook"], runs["model"]))
    if profile is None:
        profiles = runs["profile"].dropna().unique()
        profile = profiles[0] if len(profiles) == 1 else "smoke"
    real = runs.loc[runs["data"] != "generated demo data", "data_dir"].dropna().unique()
    data = f' --data-dir "{real[0]}"' if len(real) == 1 and runs["data_dir"].nunique() == 1 else ""
    rows = [{"notebook": notebook, "model": model,
             "command": f"python -m helpers run-all --profile {profile}{data} --only {notebook[:2]}"}
            for notebook, model in EXPECTED.items() if (notebook, model) not in done]
    return pd.DataFrame(rows, columns=["notebook", "model", "command"])


# --- saved predictions ---------------------------------------------------------

def read_predictions(path, registry_auc=None) -> pd.DataFrame:
    """One run's predictions file (label, proba), checked; a ValueError names what is wrong. A file whose
    AUC differs from the registry's belongs to another run (a later run of the same name)."""
    if pd.isna(path) or not str(path):
        raise ValueError("the registry row names no predictions file")
    path = Path(str(path))
    if not path.is_file():
        raise ValueError(f"predictions file {path} is missing")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:
        raise ValueError(f"predictions file {path} is unreadable: {exc}") from exc
    if absent := [c for c in ("label", "proba") if c not in frame]:
        raise ValueError(f"predictions file {path} has no column {', '.join(absent)}")
    label, proba = (pd.to_numeric(frame[c], errors="coerce") for c in ("label", "proba"))
    if label.isna().any() or proba.isna().any() or not label.isin([0, 1]).all():
        raise ValueError(f"predictions file {path} has labels other than 0/1 or missing probabilities")
    if label.nunique() < 2:
        raise ValueError(f"predictions file {path} holds one class only: no ROC curve")
    auc = skm.roc_auc_score(label, proba)
    if pd.notna(registry_auc) and abs(auc - float(registry_auc)) > AUC_TOLERANCE:
        raise ValueError(f"predictions file {path} gives AUC {auc:.4f} but the registry row says "
                         f"{float(registry_auc):.4f}: a later run has probably overwritten it")
    return pd.DataFrame({"label": label.astype(int), "proba": proba.astype(float)})


def load_predictions(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every run's saved predictions in one long table (run, model, data, split, label, proba), and
    the problems met: a run whose file is missing or unusable is left out and named there."""
    frames, problems = [], []
    for name, (_, row) in zip(run_labels(runs), runs.iterrows()):
        try:
            frame = read_predictions(row["predictions"], row["roc_auc"])
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        frames.append(frame.assign(run=name, model=row["model"], data=row["data"], split=row["split"]))
    columns = ["run", "model", "data", "split", "label", "proba"]
    table = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    return table, problems


# --- figures -------------------------------------------------------------------

def source_of(frame: pd.DataFrame) -> str:
    """Data set and split of the rows, for a title; says so when rows mix them."""
    if frame.empty:
        return "nothing recorded yet"
    parts = []
    for column, what in (("data", "data sets"), ("split", "splits")):
        values = [str(v) for v in frame[column].dropna().unique()]
        parts.append(values[0] if len(values) == 1 else
                     f"mixed {what}: {' | '.join(values)}" if values else f"no {column} recorded")
    return textwrap.fill("; ".join(parts), 90)


def _axes(frame: pd.DataFrame, title: str, size, empty: str):
    """A figure with one titled axes; a note in place of a plot when ``frame`` is empty."""
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    title_with_source(ax, title, source_of(frame))
    if frame.empty:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
        ax.set(xticks=[], yticks=[])
    return fig, ax


def roc_all(predictions: pd.DataFrame, title: str = "ROC of every run, from its saved predictions"):
    """One ROC curve per run on one axes, the legend ranked by AUC (sklearn's roc_auc_score)."""
    fig, ax = _axes(predictions, title, (7.5, 6), "no saved predictions to plot")
    if predictions.empty:
        return fig
    curves = []
    for run, part in predictions.groupby("run", sort=False):
        fpr, tpr, _ = skm.roc_curve(part["label"], part["proba"])
        curves.append((skm.roc_auc_score(part["label"], part["proba"]), run, fpr, tpr))
    for auc, run, fpr, tpr in sorted(curves, key=lambda c: -c[0]):
        ax.plot(fpr, tpr, lw=2, label=f"{run} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="_chance")
    ax.text(0.6, 0.52, "chance", color="grey", rotation=38, transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal",
           xlabel="false positive rate (IDC-negative patches called IDC)",
           ylabel="true positive rate (IDC patches found)")
    ax.legend(loc="lower right", fontsize=9)
    return fig


def score_bars(runs: pd.DataFrame, title: str = "IDC F1 and balanced accuracy per run"):
    """F1 of IDC and balanced accuracy side by side, one pair of bars per run."""
    fig, ax = _axes(runs, title, (9, 1.2 + 0.6 * max(len(runs), 2)), "no model runs yet")
    if runs.empty:
        return fig
    long = runs.assign(run=run_labels(runs)).melt(
        id_vars="run", value_vars=["f1", "balanced_accuracy"], var_name="metric", value_name="score")
    long["metric"] = long["metric"].map({"f1": "F1 (IDC)", "balanced_accuracy": "balanced accuracy"})
    sns.barplot(data=long, y="run", x="score", hue="metric", orient="h", errorbar=None, ax=ax,
                palette=["#c44e52", "#4c72b0"])
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=9)
    ax.axvline(0.5, color="grey", ls="--", lw=1, label="chance (balanced accuracy)")
    ax.set(xlim=(0, 1.1), xlabel="score", ylabel="")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    return fig


def params_vs_f1(runs: pd.DataFrame, title: str = "Size against IDC F1"):
    """Parameters (log scale) against F1: does a bigger network score better here?"""
    usable = runs.dropna(subset=["params", "f1"])
    fig, ax = _axes(usable, title, (8, 5), "no run with both a parameter count and an F1")
    if left_out := runs.loc[~runs.index.isin(usable.index), "run"].tolist():
        ax.annotate(f"left out (no parameter count or F1): {', '.join(map(str, left_out))}",
                    (0, -0.16), xycoords="axes fraction", fontsize=8, color="grey")
    if usable.empty:
        return fig
    usable = usable.astype({"params": "float64"})
    sns.scatterplot(data=usable, x="params", y="f1", hue="model", s=80, legend=False, ax=ax)
    for _, row in usable.iterrows():
        ax.annotate(row["model"], (row["params"], row["f1"]), xytext=(6, 4),
                    textcoords="offset points", fontsize=9)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v / 1e6:g}M"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlim(usable["params"].min() / 1.6, usable["params"].max() * 2.5)  # room for the labels right of the points
    ax.set(ylim=(max(0, usable["f1"].min() - 0.1), min(1.05, usable["f1"].max() + 0.1)),
           xlabel="parameters (millions, log scale)", ylabel="F1 (IDC)")
    return fig


# --- beside the published figures -------------------------------------------------

def beside_published(runs: pd.DataFrame) -> pd.DataFrame:
    """Our F1, balanced accuracy and accuracy beside the seed project's and the literature's, each row
    with its split (the seed project's is by patch, leaky): numbers compare only within a split."""
    ours = pd.DataFrame({
        "source": "this series", "model": runs["model"],
        "setting": [f"{run} ({profile} profile)" for run, profile in zip(runs["run"], runs["profile"])],
        "f1": runs["f1"], "balanced_accuracy": runs["balanced_accuracy"], "accuracy": runs["accuracy"],
        "split": runs["split"], "note": runs["data"],
    })
    original = []
    for row in ORIGINAL_IDC:
        part = "test" if row["test"] is not None else "validation" if row["val"] is not None else None
        original.append({"source": "seed project", "model": row["model"], "setting": row["setting"],
                         "f1": row["f1"], "accuracy": row["test"] if row["test"] is not None else row["val"],
                         "split": f"{row['split']}, {part}" if part else row["split"], "note": row["note"]})
    literature = [{"source": "literature", "setting": "published", "note": "", **row}
                  for row in LITERATURE_IDC]
    table = pd.concat([ours, pd.DataFrame(original), pd.DataFrame(literature)], ignore_index=True)
    table = table.reindex(columns=PUBLISHED).astype(dict.fromkeys(["f1", "balanced_accuracy", "accuracy"], float))
    order = list(EXPECTED.values())
    rank = table["model"].map(lambda m: order.index(m) if m in order else len(order))
    return table.assign(_last=(table["source"] == "literature").astype(int), _rank=rank).sort_values(
        ["_last", "_rank", "model"], kind="stable").drop(columns=["_last", "_rank"]).reset_index(drop=True)
