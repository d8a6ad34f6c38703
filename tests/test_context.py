import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from helpers.recipes import context


def test_features_are_the_logit_and_the_mean_logit_of_the_patients_patches():
    x = context.features([0.5, 0.8, 0.2, 0.9], ["a", "a", "a", "b"])
    own = np.log([1.0, 4.0, 0.25, 9.0])
    assert x[:, 0] == pytest.approx(own)
    # patient a: logits 0, log 4, -log 4 -> mean 0; patient b alone: its own logit
    assert x[:, 1] == pytest.approx([0.0, 0.0, 0.0, np.log(9.0)])


def test_certain_probabilities_are_clipped_not_infinite():
    assert np.isfinite(context.features([0.0, 1.0], ["a", "a"])).all()


def test_one_patient_per_probability_is_required():
    with pytest.raises(ValueError, match="one patient per probability"):
        context.features([0.1, 0.2, 0.3], ["a", "b"])


def test_the_identity_model_leaves_probabilities_unchanged():
    p = np.array([0.1, 0.4, 0.7, 0.95])
    same = context.apply({"coef": [1.0, 0.0], "intercept": 0.0}, p, ["a", "a", "b", "c"])
    assert same == pytest.approx(p)


def test_one_class_leaves_the_patch_alone():
    fitted = context.fit([0.2, 0.3, 0.6], ["a", "a", "b"], [0, 0, 0])
    assert fitted["fitted"] is False and fitted["coef"] == [1.0, 0.0] and fitted["intercept"] == 0.0
    assert fitted["patients"] == 2 and fitted["patches"] == 3


def _slides(seed, patients=60, per=40):
    """Patients whose IDC share is 5% or 60%, and a noisy patch score that knows nothing of the
    slide: the patch alone ranks poorly; its slide's mean score tells the two kinds of patient
    apart, and with them each patch's prior."""
    rng = np.random.default_rng(seed)
    ids, labels, proba = [], [], []
    for p in range(patients):
        share = 0.05 if p % 2 else 0.6
        y = (rng.random(per) < share).astype(int)
        z = 2.0 * y + rng.normal(0, 1.5, per)
        ids += [f"p{seed}_{p}"] * per
        labels += list(y)
        proba += list(1 / (1 + np.exp(-z)))
    return np.array(proba), np.array(ids), np.array(labels)


def test_the_slide_context_fitted_on_validation_patients_ranks_test_patches_better():
    val_p, val_ids, val_y = _slides(0)
    test_p, test_ids, test_y = _slides(1)
    fitted = context.fit(val_p, val_ids, val_y)
    assert fitted["fitted"] and fitted["patients"] == 60 and fitted["patches"] == 2400
    assert fitted["coef"][1] > 0  # a slide of high scores raises each of its patches
    alone, with_slide = roc_auc_score(test_y, test_p), roc_auc_score(test_y, context.apply(fitted, test_p, test_ids))
    assert with_slide > alone + 0.05, (alone, with_slide)  # measured: 0.81 -> 0.89


def test_patients_are_read_from_the_file_names():
    paths = ["/d/10253/1/10253_idx5_x51_y101_class1.png", "9036_idx5_x1_y2_class0.png"]
    assert context.patients_of(paths).tolist() == ["10253", "9036"]


def test_a_fit_that_would_turn_the_patch_around_leaves_the_patch_alone():
    # a collapsed model: every probability within 1e-4 of 0.3364, the IDC patches a hair lower,
    # so the regression fits a negative weight on the patch's own logit
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 40)
    proba = 0.3364 + 1e-5 * (1 - labels) + 1e-6 * rng.random(80)
    ids = np.repeat([f"p{i}" for i in range(8)], 10)
    fitted = context.fit(proba, ids, labels)
    assert fitted["fitted"] is False and fitted["coef"] == [1.0, 0.0] and fitted["intercept"] == 0.0
    assert fitted["patients"] == 8 and fitted["patches"] == 80
    test = np.array([0.33641, 0.33642, 0.33643])
    assert context.apply(fitted, test, ["a", "a", "b"]) == pytest.approx(test)  # the ranking is kept


def test_the_collapsed_model_that_inverted_the_ranking_now_keeps_it():
    # notebook 18's smoke run (generated demo set): the original recipe's probabilities spanned 4e-5
    val_y = np.array([0, 0, 1, 0, 1, 1, 0, 0])
    val_p = 0.33638 + 1e-5 * np.array([3, 4, 1, 3, 2, 0, 4, 2])  # IDC a hair lower on validation
    ids = ["a", "a", "a", "b", "b", "c", "c", "c"]
    fitted = context.fit(val_p, ids, val_y)
    test_y = np.array([0, 0, 1, 1])
    test_p = 0.33638 + 1e-5 * np.array([1, 2, 3, 4])  # and higher on test
    assert roc_auc_score(test_y, context.apply(fitted, test_p, ["d", "d", "e", "e"])) == 1.0
