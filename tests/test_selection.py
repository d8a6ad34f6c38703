import json
import zlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers.recipes import selection


def patients_frame(patients=60, per_patient=20, seed=0):
    rng = np.random.default_rng(seed)
    share = rng.uniform(0.05, 0.6, patients)
    rows = [{"patient": f"p{p:03d}", "label": int(rng.random() < share[p])}
            for p in range(patients) for _ in range(per_patient)]
    return pd.DataFrame(rows)


def diffs(values, seeds=2):
    folds = len(values) // seeds
    index = pd.MultiIndex.from_product([range(seeds), range(folds)], names=["seed", "fold"])
    return pd.Series(values, index=index)


def test_the_lockbox_holds_a_fifth_of_the_patients_always_the_same_with_the_whole_idc_share():
    df = patients_frame()
    locked = selection.lockbox(df)
    held = set(df.loc[locked, "patient"])
    assert 6 <= len(held) <= 18, "about a fifth of 60 patients"
    big = patients_frame(patients=1000, per_patient=1)
    assert selection.lockbox(big).mean() == pytest.approx(0.2, abs=0.03)
    assert not held & set(df.loc[~locked, "patient"]), "a patient on both sides"
    assert held == set(df.loc[selection.lockbox(df), "patient"])
    assert df.loc[locked, "label"].mean() == pytest.approx(df["label"].mean(), abs=0.1)
    flipped = df.assign(label=1 - df["label"])
    assert selection.lockbox(flipped).equals(locked), "labels do not move a patient"
    grown = pd.concat([df, patients_frame(patients=5, seed=1).assign(patient=lambda d: "new" + d["patient"])])
    assert held <= set(grown.loc[selection.lockbox(grown), "patient"]), "new patients move no one"
    assert len(selection.development(df)) == (~locked).sum()
    with pytest.raises(ValueError, match="needs at least 10 patients; the data has 6"):
        selection.lockbox(patients_frame(patients=6))
    with pytest.raises(ValueError, match="share must be in"):
        selection.lockbox(df, share=0.7)


def test_the_verdict_keeps_only_a_gain_whose_lower_bound_is_above_zero():
    steady = selection.verdict("a", diffs([0.01, 0.02, 0.03, 0.04]), "roc_auc")
    sd = np.std([0.01, 0.02, 0.03, 0.04], ddof=1)
    assert steady.mean == pytest.approx(0.025) and steady.sd == pytest.approx(sd) and steady.n == 4
    assert steady.lower == pytest.approx(0.025 - stats.t.ppf(0.95, 3) * sd / 2)
    assert steady.lower == pytest.approx(0.0098094, abs=1e-6) and steady.keep
    noisy = selection.verdict("b", diffs([0.05, -0.03, 0.04, -0.02]), "roc_auc")
    assert noisy.mean == pytest.approx(0.01) and noisy.lower < 0 and not noisy.keep
    one_seed = selection.verdict("c", diffs([0.01, 0.02, 0.03, 0.04], seeds=1), "roc_auc")
    assert one_seed.lower > 0 and not one_seed.keep, "a verdict needs two seeds"


def fake_scores(effects, noise=0.0):
    """Per (seed, fold) ROC-AUC of a recipe: 0.8 plus its ingredients' effects."""
    def score(name):
        total = 0.8 + sum(effects[i] for i in name.split("+")[1:])
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        return pd.DataFrame([{"seed": s, "fold": f, "roc_auc": total + noise * rng.standard_normal()}
                             for s in range(2) for f in range(5)])
    return score


def test_forward_selection_adds_what_helps_by_a_margin_and_stops():
    path = selection.forward_selection("base", ["helps", "useless", "hurts"],
                                       fake_scores({"helps": 0.03, "useless": 0.0, "hurts": -0.02}, noise=0.01))
    assert selection.chosen(path, "base") == "base+helps"
    assert list(path["round"].unique()) == [1, 2]
    first = path[path["round"] == 1].set_index("candidate")
    assert first.loc["base+helps", "chosen"] and not first.loc["base+hurts", "keep"]
    second = path[path["round"] == 2]
    assert set(second["reference"]) == {"base+helps"} and not second["chosen"].any()


def test_no_label_of_a_lockbox_patient_reaches_the_choice():
    df = patients_frame()
    locked = selection.lockbox(df)

    def score(name, rows):
        # a recipe's score depends on the labels it is shown: "x" fits the positive share
        share = rows["label"].mean()
        effect = {"x": 0.5 - share, "y": share - 0.3}
        total = 0.8 + sum(effect[i] for i in name.split("+")[1:])
        return pd.DataFrame([{"seed": s, "fold": f, "roc_auc": total + 0.001 * f} for s in range(2)
                             for f in range(5)])

    chosen = selection.select(df, "base", ["x", "y"], score)
    poisoned = df.copy()
    poisoned.loc[locked, "label"] = 1 - poisoned.loc[locked, "label"]
    assert selection.select(poisoned, "base", ["x", "y"], score).equals(chosen)
    dev_poisoned = df.copy()
    dev_poisoned.loc[~locked, "label"] = 1 - dev_poisoned.loc[~locked, "label"]
    assert not selection.select(dev_poisoned, "base", ["x", "y"], score).equals(chosen), \
        "the development labels do drive the choice"


def test_crossval_on_development_patients_leaves_the_lockbox_out_and_stores_apart():
    from pathlib import Path

    from helpers.recipes import crossval

    df = patients_frame()
    data = crossval.LoadedData(Path("x"), df, np.arange(len(df))[:, None], df["label"].to_numpy(), "x", False)
    dev = crossval.development(data)
    assert set(dev.df["patient"]) == set(df.loc[~selection.lockbox(df), "patient"])
    assert dev.images[:, 0].tolist() == np.flatnonzero(~selection.lockbox(df)).tolist(), "images follow rows"
    assert (dev.labels == dev.df["label"].to_numpy()).all() and dev.slug == "x-dev"


def test_the_careful_candidate_trains_to_convergence_on_dihedral_and_colour_jitter():
    from helpers.data import augment
    from helpers.recipes import recipe

    careful = recipe.get("careful")
    assert (careful.head, careful.monitor, careful.epochs, careful.schedule) == ("gap", "val_auc", 40, "warmup_cosine")
    assert careful.class_weight and careful.threshold == "validation"
    layer = augment.by_name(careful.augment, seed=1)
    assert [part.name for part in layer.layers] == ["dihedral", "colour_jitter"]


def test_the_select_command_chooses_on_development_patients_over_seeds(tmp_path, monkeypatch):
    # crossval.run stands in for training: each recipe scores its ingredients' fixed effect, and
    # the test records which patients every run was given
    from conftest import helpers_here

    from helpers.data.demo import make_demo
    from helpers.recipes import crossval

    make_demo(tmp_path / "demo", n_patients=14, seed=0, patches_scale=0.2)
    seen = []

    def fake_run(data_dir, recipe, folds, seed, data=None, **options):
        seen.append((recipe, seed, set(data.df["patient"])))
        effect = {"helps": 0.03, "hurts": -0.02}
        auc = 0.8 + sum(effect.get(i, 0) for i in recipe.split("+")[1:])
        rows = pd.DataFrame({"fold": range(folds), "roc_auc": [auc + 0.001 * f + 0.002 * seed for f in range(folds)]})
        return SimpleNamespace(per_fold=rows)

    monkeypatch.setattr(crossval, "run", fake_run)
    out = helpers_here("select", "--data-dir", tmp_path / "demo", "--base", "careful", "--ingredients", "hurts",
                       "helps", "--seeds", 1, 2, "--folds", 3, "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["chosen"] == "careful+helps" and result["seeds"] == [1, 2]
    data = crossval.load(tmp_path / "demo", tmp_path / "out")
    locked = set(data.df.loc[selection.lockbox(data.df), "patient"])
    assert locked and all(not patients & locked for _, _, patients in seen), "a lockbox patient reached a run"
    assert {seed for _, seed, _ in seen} == {1, 2}
    bad = helpers_here("select", "--data-dir", tmp_path / "demo", "--ingredients", "helps", "--seeds", 1)
    assert bad.returncode == 2 and "at least two seeds" in bad.stderr


def test_the_lockbox_score_trains_on_development_patients_and_tests_on_the_lockbox_alone(tmp_path):
    from conftest import helpers_here

    from helpers.data.demo import make_demo
    from helpers.recipes import crossval

    make_demo(tmp_path / "demo", n_patients=14, seed=0, patches_scale=0.2)
    out = helpers_here("crossval", "--data-dir", tmp_path / "demo", "--recipe", "original", "--lockbox", "--epochs", 1,
                       "--verbose", 0, "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    data = crossval.load(tmp_path / "demo", tmp_path / "out")
    locked = selection.lockbox(data.df)
    (row,) = result["per_fold"]
    assert (row["test_patients"], row["test_patches"]) == (data.df.loc[locked, "patient"].nunique(), int(locked.sum()))
    assert row["train_patients"] + row["val_patients"] == data.df.loc[~locked, "patient"].nunique()
    assert "klockbox" in result["out_dir"] and "scored once" in out.stderr
    both = helpers_here("crossval", "--data-dir", tmp_path / "demo", "--lockbox", "--without-lockbox")
    assert both.returncode == 2 and "--lockbox scores one recipe once" in both.stderr


def test_choosing_the_best_of_null_ingredients_flatters_it_on_its_own_folds_only():
    curse = selection.winners_curse(candidates=12, folds=5, noise=0.02, trials=4000, seed=1)
    assert len(curse) == 4000
    chosen_on, fresh = curse["on the folds it was chosen on"].mean(), curse["on new patients"].mean()
    # the best of 12 standard normals averages 1.63 sd; the mean of 5 folds has sd 0.02 / sqrt(5)
    assert chosen_on == pytest.approx(1.63 * 0.02 / np.sqrt(5), rel=0.05)
    assert abs(fresh) < 0.001, "on new patients a null ingredient gains nothing"
    assert selection.winners_curse(candidates=1, trials=4000, seed=1).iloc[:, 0].mean() == pytest.approx(0, abs=0.001)


def test_compare_gives_means_over_seeds_and_paired_verdicts_against_the_reference():
    index = {"seed": [1, 1, 2, 2], "fold": [0, 1, 0, 1]}
    ref = pd.DataFrame({**index, "f1": [0.5, 0.6, 0.5, 0.6], "roc_auc": [0.8, 0.8, 0.8, 0.8]})
    better = ref.assign(f1=ref["f1"] + [0.1, 0.12, 0.1, 0.12], roc_auc=ref["roc_auc"] + [0.01, -0.01, 0.0, 0.0])
    table = selection.compare({"ref": ref, "better": better}, "ref", metrics=("f1", "roc_auc"))
    assert table.loc["ref", "f1"] == pytest.approx(0.55) and table.loc["ref", "seeds"] == 2
    assert table.loc["better", "f1_diff"] == pytest.approx(0.11) and table.loc["better", "f1_keep"]
    assert table.loc["better", "roc_auc_diff"] == pytest.approx(0.0) and not table.loc["better", "roc_auc_keep"]
    assert np.isnan(table.loc["ref", "f1_diff"])
