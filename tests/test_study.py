"""Studies: variants on one split, one registry row per run, finished runs read back."""

import os

import matplotlib
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: F401

from helpers import plots, results, train  # noqa: E402
from helpers.data import source
from helpers.studies import study
from helpers.studies.study import Variant  # noqa: E402
from helpers.train import Training


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    from helpers.data.demo import make_demo

    root = tmp_path_factory.mktemp("demo") / "idc"
    make_demo(root, n_patients=12, seed=5)
    return root


VARIANTS = [Variant("adam"), Variant("sgd", training=Training("sgd", 0.01), build={"dense_units": 32})]


@pytest.mark.slow
def test_a_study_runs_each_variant_per_seed_and_rereads_finished_runs(small_demo, tmp_path, monkeypatch):
    cfg = source.resolve("smoke", data_dir=small_demo, output_dir=tmp_path, sample_size=300, epochs=2)
    found = study.run_study(cfg, "opt", "08_test", VARIANTS, seeds=[1, 2])
    assert list(found.runs["variant"]) == ["adam", "adam", "sgd", "sgd"]
    assert list(found.runs["seed"]) == [1, 2, 1, 2]
    assert found.runs["params"].iloc[0] > found.runs["params"].iloc[2]  # dense 256 vs 32
    assert set(found.history["split"]) == {"training", "validation"}
    assert found.history.groupby(["variant", "seed"])["epoch"].max().le(2).all()
    summary = found.summary()
    assert list(summary.index) == ["adam", "sgd"] and "f1_sd" in summary
    registry = results.load(tmp_path)
    assert (registry["notebook"] == "08_test").sum() == 4
    assert registry["split"].str.contains("by patient").all()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(train, "fit", no_training)
    again = study.run_study(cfg, "opt", "08_test", VARIANTS, seeds=[1, 2])
    assert list(again.runs["f1"]) == list(found.runs["f1"])
    changed = [Variant("adam", training=Training(learning_rate=0.01))]
    with pytest.raises(AssertionError, match="trained again"):  # other settings: trained anew
        study.run_study(cfg, "opt", "08_test", changed, seeds=[1])

    fig = plots.study_curves(found.history, "a study (generated demo data)")
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "loss"
    matplotlib.pyplot.close("all")


def test_variant_names_must_be_unique(tmp_path, small_demo):
    cfg = source.resolve("smoke", data_dir=small_demo, output_dir=tmp_path)
    with pytest.raises(ValueError, match="unique"):
        study.run_study(cfg, "s", "nb", [Variant("a"), Variant("a")])


# A rerun with the same seed repeats the metrics within this tolerance (measured: identical
# to the last digit on 2 CPU cores; the tolerance leaves room for other CPUs' kernels).
RERUN_TOLERANCE = 0.02


@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics_on_a_rerun(small_demo, tmp_path):
    runs = []
    for out in ("first", "second"):
        cfg = source.resolve("smoke", data_dir=small_demo, output_dir=tmp_path / out, sample_size=300, epochs=2)
        runs.append(study.run_study(cfg, "rerun", "test", [Variant("augmented", augment="original_both_flips")],
                                    seeds=[7]).runs.iloc[0])
    for metric in ("val_f1", "val_balanced_accuracy", "f1", "balanced_accuracy", "roc_auc"):
        assert abs(runs[0][metric] - runs[1][metric]) <= RERUN_TOLERANCE, (metric, runs[0][metric], runs[1][metric])


def test_long_history_has_one_row_per_epoch_metric_and_split():
    import pandas as pd

    history = pd.DataFrame({"epoch": [0, 1], "loss": [0.9, 0.5], "val_loss": [1.0, 0.7], "val_auc": [0.6, 0.8]})
    long = study.long_history(history, "adam", 3)
    assert list(long.columns) == ["variant", "seed", "epoch", "metric", "split", "value"]
    assert list(long["epoch"]) == [1, 2, 1, 2, 1, 2]  # 1-based, each column in turn
    assert list(long["metric"]) == ["loss", "loss", "loss", "loss", "auc", "auc"]
    assert list(long["split"]) == ["training"] * 2 + ["validation"] * 4
    assert list(long["value"]) == [0.9, 0.5, 1.0, 0.7, 0.6, 0.8] and (long["seed"] == 3).all()


def test_with_arm_borrows_a_variant_of_another_study_once():
    import pandas as pd

    def made(*variants):
        return study.Study(pd.DataFrame({"variant": variants, "seed": 1, "f1": range(len(variants))}),
                           pd.DataFrame({"variant": variants, "value": range(len(variants))}), "by patient")

    mine, other = made("a", "b"), made("x", "y")
    last = mine.with_arm(other, "y", "y (borrowed)")
    assert list(last.runs["variant"]) == ["a", "b", "y (borrowed)"] and last.runs["f1"].iloc[-1] == 1
    assert list(last.history["variant"]) == ["a", "b", "y (borrowed)"] and last.split_note == "by patient"
    first = mine.with_arm(other, "x", "x first", first=True)
    assert list(first.runs["variant"]) == ["x first", "a", "b"]
    assert list(other.runs["variant"]) == ["x", "y"]  # the other study is left as it was
