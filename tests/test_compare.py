"""The comparison of every run: table, missing runs, saved predictions, figures, published figures.

A small registry is written with ``results.record`` as the notebooks write it,
with hand-made prediction files, so every expected value is known exactly.
"""

import re
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers import results
from helpers.studies import compare

SPLIT = "test split, by patient, 70/15/15, seed 42"
LABELS = [0, 0, 0, 0, 1, 1, 1, 0, 1, 0]
PROBAS = {  # one set of probabilities per run, each with a different AUC
    "02_vgg_style_smoke": [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.4, 0.5, 0.9, 0.2],
    "03_resnet50_smoke": [0.5, 0.4, 0.6, 0.3, 0.55, 0.45, 0.7, 0.2, 0.65, 0.35],
    "08_optimizers_sgd": [0.2, 0.1, 0.4, 0.3, 0.9, 0.6, 0.5, 0.45, 0.8, 0.7],
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def write_predictions(path, proba, labels=LABELS):
    """A predictions file as ``evaluate.save_predictions`` writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"path": [f"p{i}.png" for i in range(len(labels))], "patient": 1, "x": 1, "y": 1,
                  "label": labels, "proba": proba, "split": "test"}).to_csv(path, index=False)
    return path


def model_row(run, model, f1, auc, predictions, params):
    return {"run": run, "model": model, "scored_on": "test", "f1": f1, "balanced_accuracy": f1 + 0.1,
            "roc_auc": auc, "accuracy": f1 + 0.05, "params": params, "train_seconds": 10.0,
            "images_per_s": 100.0, "predictions": str(predictions)}


@pytest.fixture
def cfg(tmp_path):
    return SimpleNamespace(profile="smoke", data_dir=tmp_path / "demo" / "idc-40p",
                           output_dir=tmp_path / "out", generated=True)


@pytest.fixture
def registry(cfg):
    """Data rows, vgg_style, resnet50 twice (0.4 then 0.6), cancernet without its file, a study run."""
    pred = cfg.output_dir / "predictions"
    auc = {run: round(roc_auc_score(LABELS, p), 4) for run, p in PROBAS.items()}
    for run, proba in PROBAS.items():
        write_predictions(pred / f"{run}_test.csv", proba)
    results.record(cfg, "00_data", [{"run": "index", "patches": 10}], split="by patient, 70/15/15, seed 42")
    rows = [
        ("02_vgg_style", model_row("02_vgg_style_smoke", "vgg_style", 0.5, auc["02_vgg_style_smoke"],
                                   pred / "02_vgg_style_smoke_test.csv", 2_000_000)),
        ("03_resnet50", model_row("03_resnet50_smoke", "resnet50", 0.4, auc["03_resnet50_smoke"],
                                  pred / "03_resnet50_smoke_test.csv", 25_000_000)),
        ("07_cancernet", model_row("07_cancernet_smoke", "cancernet", 0.8, 0.9,
                                   pred / "07_cancernet_smoke_test.csv", 1_000_000)),
        ("03_resnet50", model_row("03_resnet50_smoke", "resnet50", 0.6, auc["03_resnet50_smoke"],
                                  pred / "03_resnet50_smoke_test.csv", 25_000_000)),
        ("08_optimizers", model_row("08_optimizers_sgd", "cancernet", 0.7, auc["08_optimizers_sgd"],
                                    pred / "08_optimizers_sgd_test.csv", 1_000_000)),
    ]
    for notebook, row in rows:
        results.record(cfg, notebook, [row], split=SPLIT)
    return cfg.output_dir


def legend_aucs(fig) -> dict:
    """run -> AUC as the ROC legend prints it."""
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    return {m.group(1): m.group(2) for m in (re.fullmatch(r"(.+) \(AUC (\d\.\d{3})\)", t) for t in texts)}


def test_one_row_per_run_and_the_latest_row_wins(registry):
    runs = compare.model_runs(registry)
    assert list(runs.columns) == compare.COLUMNS
    assert list(runs["run"]) == ["02_vgg_style_smoke", "03_resnet50_smoke", "07_cancernet_smoke",
                                 "08_optimizers_sgd"]
    assert runs.set_index("run").loc["03_resnet50_smoke", "f1"] == 0.6
    assert set(runs["data"]) == {"generated demo data"} and set(runs["split"]) == {SPLIT}
    assert runs.loc[0, "params"] == 2_000_000 and runs.loc[0, "images_per_s"] == 100.0
    every = compare.model_runs(registry / "results.csv", latest=False)
    assert list(every["f1"][every["run"] == "03_resnet50_smoke"]) == [0.4, 0.6]
    assert compare.run_labels(every)[1].startswith("03_resnet50_smoke (")


def test_missing_names_exactly_the_expected_models_without_rows(registry):
    gone = compare.missing(compare.model_runs(registry))
    assert list(gone["notebook"]) == ["04_inception_v3", "05_xception", "06_mobilenet_v2"]
    assert list(gone["model"]) == ["inception_v3", "xception", "mobilenet_v2"]
    assert gone.loc[1, "command"] == "python -m helpers run-all --profile smoke --only 05"


def test_a_missing_prediction_file_is_named_and_the_other_runs_still_plot(registry):
    runs = compare.model_runs(registry)
    predictions, problems = compare.load_predictions(runs)
    absent = registry / "predictions" / "07_cancernet_smoke_test.csv"
    assert problems == [f"07_cancernet_smoke: predictions file {absent} is missing"]
    assert list(predictions["run"].unique()) == ["02_vgg_style_smoke", "03_resnet50_smoke",
                                                 "08_optimizers_sgd"]
    fig = compare.roc_all(predictions)
    curves = [line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert len(curves) == 3
    assert "generated demo data" in fig.axes[0].get_title() and SPLIT in fig.axes[0].get_title()


def test_the_auc_in_the_roc_legend_is_sklearns_on_the_file(registry):
    predictions, _ = compare.load_predictions(compare.model_runs(registry))
    shown = legend_aucs(compare.roc_all(predictions))
    for run, proba in PROBAS.items():
        saved = pd.read_csv(registry / "predictions" / f"{run}_test.csv")
        assert shown[run] == f"{roc_auc_score(saved['label'], saved['proba']):.3f}"
    assert list(shown) == sorted(shown, key=lambda r: -float(shown[r]))  # ranked best first


def test_unusable_files_are_reported_by_name(registry, cfg):
    pred = registry / "predictions"
    (pred / "broken.csv").write_text("path,patient\na.png,1\n")
    write_predictions(pred / "one_class.csv", [0.5] * 3, labels=[1, 1, 1])
    write_predictions(pred / "other_run.csv", PROBAS["02_vgg_style_smoke"])
    rows = [model_row(run, "vgg_style", 0.5, auc, pred / name, 1) for run, auc, name in (
        ("09_broken", 0.8, "broken.csv"), ("09_one_class", 0.8, "one_class.csv"),
        ("09_overwritten", 0.5, "other_run.csv"))]
    results.record(cfg, "09_study", rows, split=SPLIT)
    _, problems = compare.load_predictions(compare.model_runs(registry))
    said = {p.split(":")[0]: p for p in problems}
    assert f"{pred / 'broken.csv'} has no column label, proba" in said["09_broken"]
    assert f"{pred / 'one_class.csv'} holds one class only" in said["09_one_class"]
    assert "registry row says 0.5000" in said["09_overwritten"] and "other_run.csv" in said["09_overwritten"]


def test_an_empty_registry_gives_an_empty_table_and_every_model_missing(tmp_path, cfg):
    results.record(cfg, "00_data", [{"run": "index", "patches": 10}], split="by patient")
    for registry in (tmp_path / "nothing", cfg.output_dir):  # no file; data rows only
        runs = compare.model_runs(registry)
        assert runs.empty and list(runs.columns) == compare.COLUMNS
        assert list(compare.missing(runs)["model"]) == list(compare.EXPECTED.values())
        predictions, problems = compare.load_predictions(runs)
        assert predictions.empty and problems == []
        for fig in (compare.roc_all(predictions), compare.score_bars(runs), compare.params_vs_f1(runs)):
            assert "nothing recorded yet" in fig.axes[0].get_title()
        assert set(compare.beside_published(runs)["source"]) == {"seed project", "literature"}


def test_an_unreadable_registry_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "results.csv"
    bad.write_bytes(b'run,model\n"never closed')
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        compare.model_runs(tmp_path)


def test_bars_and_params_show_every_run_with_its_data_and_split(registry, cfg):
    runs = compare.model_runs(registry)
    ax = compare.score_bars(runs).axes[0]
    widths = [round(bar.get_width(), 4) for bars in ax.containers for bar in bars]
    assert widths == [0.5, 0.6, 0.8, 0.7, 0.6, 0.7, 0.9, 0.8]  # F1 of each run, then balanced accuracy
    assert [t.get_text() for t in ax.get_yticklabels()] == list(runs["run"])
    ax = compare.params_vs_f1(runs).axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.texts] == ["vgg_style", "resnet50", "cancernet", "cancernet"]
    assert SPLIT in ax.get_title()
    other = SimpleNamespace(**{**vars(cfg), "generated": False, "data_dir": cfg.data_dir.parent / "IDC"})
    results.record(cfg, "09_study", [model_row("09_demo", "vgg_style", 0.5, 0.8, "none.csv", 1)],
                   split="val split, by patient")
    results.record(other, "09_study", [model_row("09_real", "vgg_style", 0.5, 0.8, "none.csv", 1)],
                   split="val split, by patient")
    title = compare.score_bars(compare.model_runs(registry)).axes[0].get_title()
    assert "mixed data sets: generated demo data | real data: IDC" in title
    assert "mixed splits" in title


def test_beside_published_gives_every_row_a_source_and_a_split(registry):
    table = compare.beside_published(compare.model_runs(registry))
    assert list(table.columns) == compare.PUBLISHED
    assert set(table["source"]) == {"this series", "seed project", "literature"}
    assert table["split"].notna().all() and (table["split"].str.len() > 0).all()
    assert len(table) == 4 + 8 + 2
    vgg = table[table["model"] == "vgg_style"]
    assert list(vgg["source"]) == ["this series", "seed project"]  # ours beside the seed's
    assert list(vgg["split"]) == [SPLIT, "random patches, test"]
    assert list(vgg["accuracy"]) == [0.55, 0.76] and list(vgg["f1"]) == [0.5, 0.74]
    assert list(table["source"][-2:]) == ["literature", "literature"]
    assert table.loc[table["setting"] == "from scratch", "split"].item() == "random patches, validation"
