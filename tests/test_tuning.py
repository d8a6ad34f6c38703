"""keras-tuner searches: they complete, resume, fail loudly, and report their trials."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from dataclasses import replace  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import keras_tuner  # noqa: F401

from helpers.data import source
from helpers.studies import experiment, tuning

# keras-tuner 1.4.8 calls threading.currentThread().getName(), deprecated since Python 3.10.
pytestmark = pytest.mark.filterwarnings("ignore:(currentThread|getName):DeprecationWarning")

# Tiny on purpose: CancerNet at 32x32, ~200 patches, one epoch per trial.
BUDGET = tuning.Budget(max_trials=2, epochs=1)
SEARCH = dict(learning_rate=(1e-3, 1e-1), batch_sizes=(16, 32), verbose=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from helpers.data.demo import make_demo

    root = tmp_path_factory.mktemp("demo") / "idc"
    make_demo(root, n_patients=12, seed=3)
    cfg = source.resolve("smoke", data_dir=root, output_dir=tmp_path_factory.mktemp("out"),
                         sample_size=300, batch_size=32)
    data = experiment.prepare_data(cfg, image_size=32)
    data.extra["cfg"] = cfg
    return data


@pytest.fixture(scope="module")
def searched(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    return out, tuning.random_search(data, out, BUDGET, "cancernet_random", **SEARCH)


def scores(tuner):
    return {t.trial_id: t.score for t in tuner.oracle.trials.values()}


@pytest.mark.slow
def test_random_search_completes_every_trial_within_the_ranges(searched):
    out, tuner = searched
    table = tuning.trials_table(tuner)
    assert len(table) == 2 and (table["status"] == "COMPLETED").all()
    assert table["score"].map(math.isfinite).all()
    assert table["learning_rate"].between(1e-3, 1e-1).all()
    assert table["batch_size"].isin([16, 32]).all()
    assert (table["best_epoch"] == 1).all()
    assert table["score"].is_monotonic_decreasing  # val_auc: best first
    assert (out / "tuner" / "cancernet_random" / "oracle.json").is_file()


@pytest.mark.slow
def test_best_config_is_the_best_row_of_the_table(searched):
    _, tuner = searched
    best = tuning.best_config(tuner)
    row = tuning.trials_table(tuner).iloc[0]
    assert set(best) == {"learning_rate", "optimizer", "batch_size"}
    assert best == {k: row[k] for k in best}


@pytest.mark.slow
def test_a_rerun_resumes_instead_of_starting_again(searched, data, tmp_path, monkeypatch):
    out, first = searched
    shutil.copytree(out / "tuner", tmp_path / "tuner")
    calls = []
    fit = tuning.RegistryHyperModel.fit

    def counting_fit(self, *args, **kwargs):
        calls.append(1)
        return fit(self, *args, **kwargs)
    monkeypatch.setattr(tuning.RegistryHyperModel, "fit", counting_fit)

    same = tuning.random_search(data, tmp_path, BUDGET, "cancernet_random", **SEARCH)
    assert calls == [] and scores(same) == scores(first)

    more = tuning.random_search(data, tmp_path, replace(BUDGET, max_trials=3), "cancernet_random", **SEARCH)
    assert len(calls) == 1
    after = scores(more)
    assert len(after) == 3 and {k: after[k] for k in scores(first)} == scores(first)

    with pytest.raises(tuning.TuningError, match="other space"):  # other ranges would mix scores
        tuning.random_search(data, tmp_path, BUDGET, "cancernet_random", **{**SEARCH, "batch_sizes": (8, 16)})


@pytest.mark.slow
@pytest.mark.parametrize("trials", [2, 3])
def test_a_search_in_which_every_trial_fails_is_an_error(data, tmp_path, monkeypatch, trials):
    # The pitfall this guards: without tensorboard every trial fails and search() says nothing
    # (with 3 failures in a row keras-tuner raises its own RuntimeError instead).
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams", None)
    with pytest.raises(tuning.TuningError, match=r"none of the \d trials.*tensorboard.*pip install tensorboard"):
        tuning.random_search(data, tmp_path, replace(BUDGET, max_trials=trials), "broken", **SEARCH)


@pytest.mark.slow
def test_bayesian_search_over_fine_tune_at(data, tmp_path):
    # One random trial, then one chosen by the Gaussian process fitted to it.
    tuner = tuning.bayesian_search(data, tmp_path, replace(BUDGET, initial_points=1), "cancernet_bayes",
                                   fine_tune_at=(0, 5), learning_rate=(1e-3, 1e-1), verbose=0)
    table = tuning.trials_table(tuner)
    assert len(table) == 2 and table["score"].map(math.isfinite).all()
    assert table["fine_tune_at"].between(0, 5).all()
    assert table.attrs == {"objective": "val_auc", "direction": "max"}
    assert "fine_tune_at" in tuning.best_config(tuner)
    assert tuner.oracle.num_initial_points == 1


def test_bayesian_default_initial_points_count_only_tuned_hyperparameters():
    model = tuning.RegistryHyperModel("cancernet", fine_tune_at=(0, 5), batch_sizes=(64,))
    assert model.dimensions == 2  # learning rate and fine_tune_at; optimizer and batch size fixed


@pytest.mark.slow
def test_trials_plot_names_its_source_and_refuses_an_unknown_column(searched):
    import matplotlib.pyplot as plt

    table = tuning.trials_table(searched[1])
    fig = tuning.trials_plot(table, source="validation split, generated demo data")
    ax = fig.axes[0]
    assert "generated demo data" in ax.get_title() and ax.get_xscale() == "log"
    plt.close(fig)
    with pytest.raises(ValueError, match="no column 'fine_tune_at'"):
        tuning.trials_plot(table, hue="fine_tune_at")


def test_grid_projects_to_3_values_and_random_to_9():
    import matplotlib.pyplot as plt

    fig = tuning.grid_vs_random_figure(9)
    axes = {ax.get_label(): ax for ax in fig.axes}
    distinct = {name: len(set(axes[name].collections[0].get_offsets()[:, 0].round(9)))
                for name in ("grid", "random")}
    assert distinct == {"grid": 3, "random": 9}
    again = tuning.grid_vs_random_figure(9)
    same = [a.collections[0].get_offsets() for a in again.axes if a.get_label() == "random"][0]
    assert (same == axes["random"].collections[0].get_offsets()).all()  # deterministic
    plt.close("all")
    with pytest.raises(ValueError, match="square number"):
        tuning.grid_vs_random_figure(8)


@pytest.mark.parametrize("kwargs, message", [
    ({"learning_rate": (0.1, 0.01)}, "0 < low < high"),
    ({"optimizers": ("adam", "adamw")}, "unknown optimizer"),
    ({"batch_sizes": (32, 0)}, "positive integers"),
    ({"fine_tune_at": 5}, "fine_tune_at must be"),
    ({"weights": "imagenet"}, "no ImageNet weights"),
])
def test_a_bad_search_space_is_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tuning.RegistryHyperModel("cancernet", **kwargs)


def test_budget_by_profile_and_overrides():
    assert tuning.budget("smoke") == tuning.Budget(max_trials=3, epochs=1, sample_size=600, initial_points=2)
    assert tuning.budget("cpu").max_trials == 10 and tuning.budget("full").max_trials == 25
    mine = tuning.budget("smoke", max_trials=1, epochs=2, sample_size=0)
    assert mine == tuning.Budget(max_trials=1, epochs=2, sample_size=None, initial_points=1)
    with pytest.raises(ValueError, match="unknown profile"):
        tuning.budget("huge")
    with pytest.raises(ValueError, match="at least 1"):
        tuning.budget("smoke", max_trials=0)
    with pytest.raises(ValueError, match="at least 1"):
        tuning.Budget(max_trials=2, epochs=0)


def test_default_fine_tune_range():
    assert tuning.default_fine_tune_range("cancernet") == (0, 15)
    low, high = tuning.default_fine_tune_range("mobilenet_v2")
    assert low == 0 and high > 100  # every layer of the backbone


def trials(**columns):
    table = pd.DataFrame({"trial": [f"{i:02d}" for i in range(len(columns["score"]))], "status": "COMPLETED",
                          **columns})
    table.attrs.update(objective="val_auc", direction="max")
    return table


def test_original_check_says_whether_the_seed_projects_findings_hold():
    random = trials(optimizer=["adam", "adagrad", "sgd"], batch_size=[64, 64, 32],
                    learning_rate=[1e-3, 0.03, 0.01], score=[0.9, 0.8, 0.7])
    bayes = trials(fine_tune_at=[4, 12], learning_rate=[0.03, 0.001], score=[0.95, float("nan")])
    table = tuning.original_check(random, bayes)
    first, second = table.iloc[0], table.iloc[1]
    assert first["holds here"] == "no" and first["best trial here"] == "adam batch 64, lr 0.001"
    assert first["best score of the seed's choice"] == 0.8 and first["best score"] == 0.9
    assert second["holds here"] == "yes" and second["best trial here"].startswith("4,")  # within one layer of 5
    alone = tuning.original_check(random.iloc[[0, 2]])
    assert len(alone) == 1 and alone.iloc[0]["best score of the seed's choice"] == "not tried"


def test_search_map_names_its_source():
    import matplotlib.pyplot as plt

    table = trials(fine_tune_at=[5, 0, 9], learning_rate=[0.03, 0.001, 0.01], score=[0.9, 0.8, float("nan")])
    fig = tuning.search_map(table, source="validation split, generated demo data")
    ax = fig.axes[0]
    assert "generated demo data" in ax.get_title() and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.texts] == ["1", "2"]  # the failed trial is left out
    plt.close(fig)
    with pytest.raises(ValueError, match="no column 'optimizer'"):
        tuning.search_map(table, x="optimizer")


@pytest.mark.slow
def test_an_unnamed_search_is_named_by_its_settings_and_recalibrates_batchnorm(data, tmp_path, monkeypatch):
    from helpers import train

    calls = []
    recalibrate = train.recalibrate_batchnorm
    monkeypatch.setattr(train, "recalibrate_batchnorm", lambda *a, **k: calls.append(1) or recalibrate(*a, **k))
    one = replace(BUDGET, max_trials=1)
    first = tuning.random_search(data, tmp_path, one, **SEARCH)
    assert calls == [1]  # before the trial's one validation
    name = first.project_name
    assert name.startswith("random_cancernet_") and (tmp_path / "tuner" / name / "search.json").is_file()
    same = tuning.random_search(data, tmp_path, one, **SEARCH)
    assert same.project_name == name and calls == [1]  # resumed: nothing trained
    other = tuning.random_search(data, tmp_path, one, **{**SEARCH, "batch_sizes": (8,)})
    assert other.project_name != name  # other settings: a project of its own, not an error


@pytest.mark.slow
def test_retrain_best_trains_once_and_records_a_row(data, tmp_path):
    from helpers import results

    cfg = replace(data.extra["cfg"], output_dir=tmp_path, epochs=1)
    best = {"optimizer": "adagrad", "learning_rate": 0.02, "batch_size": 16, "fine_tune_at": 3}
    done = tuning.retrain_best(cfg, best, "11_test", name="best")
    row = done.runs.iloc[0]
    assert row["batch_size"] == 16 and row["variant"] == "best" and '"fine_tune_at": 3' in row["settings"]
    again = tuning.retrain_best(cfg, best, "11_test", name="best")  # read back, not trained
    assert again.runs.iloc[0]["train_seconds"] == row["train_seconds"]
    assert (results.load(tmp_path)["notebook"] == "11_test").sum() == 2
