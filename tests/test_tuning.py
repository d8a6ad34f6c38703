"""keras-tuner searches: they complete, resume, fail loudly, and report their trials."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("keras_tuner")

from helpers import config, experiment, tuning  # noqa: E402

# keras-tuner 1.4.8 calls threading.currentThread().getName(), deprecated since Python 3.10.
pytestmark = pytest.mark.filterwarnings("ignore:(currentThread|getName):DeprecationWarning")

# Tiny on purpose: CancerNet at 32x32, ~200 patches, one epoch per trial.
SEARCH = dict(max_trials=2, epochs=1, learning_rate=(1e-3, 1e-1), batch_sizes=(16, 32), verbose=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from helpers.demo import make_demo

    root = tmp_path_factory.mktemp("demo") / "idc"
    make_demo(root, n_patients=12, seed=3)
    cfg = config.resolve("smoke", data_dir=root, output_dir=tmp_path_factory.mktemp("out"),
                         sample_size=300, batch_size=32)
    return experiment.prepare_data(cfg, image_size=32)


@pytest.fixture(scope="module")
def searched(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    return out, tuning.random_search(data, out, "cancernet_random", **SEARCH)


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

    same = tuning.random_search(data, tmp_path, "cancernet_random", **SEARCH)
    assert calls == [] and scores(same) == scores(first)

    more = tuning.random_search(data, tmp_path, "cancernet_random", **{**SEARCH, "max_trials": 3})
    assert len(calls) == 1
    after = scores(more)
    assert len(after) == 3 and {k: after[k] for k in scores(first)} == scores(first)

    with pytest.raises(tuning.TuningError, match="other space"):  # other ranges would mix scores
        tuning.random_search(data, tmp_path, "cancernet_random", **{**SEARCH, "batch_sizes": (8, 16)})


@pytest.mark.slow
@pytest.mark.parametrize("trials", [2, 3])
def test_a_search_in_which_every_trial_fails_is_an_error(data, tmp_path, monkeypatch, trials):
    # The pitfall this guards: without tensorboard every trial fails and search() says nothing
    # (with 3 failures in a row keras-tuner raises its own RuntimeError instead).
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams", None)
    with pytest.raises(tuning.TuningError, match=r"none of the \d trials.*tensorboard.*pip install tensorboard"):
        tuning.random_search(data, tmp_path, "broken", **{**SEARCH, "max_trials": trials})


@pytest.mark.slow
def test_bayesian_search_over_fine_tune_at(data, tmp_path):
    # One random trial, then one chosen by the Gaussian process fitted to it.
    tuner = tuning.bayesian_search(data, tmp_path, "cancernet_bayes", fine_tune_at=(0, 5), max_trials=2,
                                   epochs=1, learning_rate=(1e-3, 1e-1), num_initial_points=1, verbose=0)
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
])
def test_a_bad_search_space_is_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tuning.RegistryHyperModel("cancernet", **kwargs)
