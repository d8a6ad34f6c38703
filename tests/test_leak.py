"""helpers.studies.leak: the same model on a random patch split and on a patient split."""
import pandas as pd
import pytest

from helpers.data import source
from helpers.studies import leak


def test_summary_means_spreads_and_the_patch_splits_lead():
    table = pd.DataFrame({"split": ["patch", "patch", "patient", "patient"],
                          "f1": [0.9, 0.8, 0.6, 0.7], "balanced_accuracy": [0.9, 0.9, 0.7, 0.7],
                          "roc_auc": [0.95, 0.97, 0.8, 0.9]})
    out = leak.summary(table)
    assert list(out.index) == ["patch", "patient", "patch − patient"]
    assert out.loc["patch", "f1_mean"] == pytest.approx(0.85)
    assert out.loc["patient", "f1_sd"] == pytest.approx(0.0707107, abs=1e-6)
    assert out.loc["patch − patient", "f1_mean"] == pytest.approx(0.2)
    assert out.loc["patch − patient", "roc_auc_mean"] == pytest.approx(0.11)
    assert out.loc["patch", "seeds"] == 2


@pytest.mark.slow
def test_both_splits_train_and_only_the_patch_split_shares_patients(tmp_path):
    from helpers.data.demo import make_demo

    root = make_demo(tmp_path / "idc", n_patients=12, seed=3)["root"]
    cfg = source.resolve("smoke", data_dir=root, output_dir=tmp_path / "out", sample_size=400, epochs=1)
    table = leak.compare_splits(cfg, seeds=[1], verbose=0)
    assert list(table["split"]) == ["patch", "patient"]
    by = table.set_index("split")
    assert by.loc["patient", "test_patients_also_in_training"] == 0
    assert by.loc["patch", "test_patients_also_in_training"] == by.loc["patch", "test_patients"] > 0
    assert (table["epochs_run"] == 1).all() and table["roc_auc"].notna().all()  # both classes on each test side
    assert (tmp_path / "out" / "runs" / "leak_cancernet_smoke" / "patient-1").is_dir()
