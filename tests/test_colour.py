import json
import math

import numpy as np
import pandas as pd
import pytest

from helpers.recipes import colour, crossval
from helpers.data.demo import make_demo


def test_a_solid_red_patch_has_exact_statistics():
    red = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    f = dict(zip(colour.NAMES, colour.patch_features(red)[0]))
    assert len(f) == 44
    assert f["red_mean"] == f["red_p5"] == f["red_p95"] == pytest.approx(1.0)
    assert f["green_mean"] == f["red_sd"] == 0
    assert f["od_red_mean"] == pytest.approx(0.0, abs=1e-6)  # all light through: no stain
    assert f["od_green_p50"] == pytest.approx(math.log(256), rel=1e-6)
    assert f["grad_across"] == f["grad_down"] == 0


def test_texture_reads_stripes_across_not_down():
    stripes = np.zeros((2, 6, 6, 3), dtype=np.uint8)
    stripes[:, :, ::2] = 255  # columns alternate black and white
    f = pd.DataFrame(colour.patch_features(stripes, chunk=1), columns=colour.NAMES)
    assert f["grad_across"].tolist() == [1.0, 1.0]
    assert f["grad_down"].tolist() == [0.0, 0.0]
    assert f["red_mean"].tolist() == pytest.approx([0.5, 0.5])


def test_within_patient_standardises_each_patients_patches():
    out = colour.within_patient([[1.0, 7.0], [3.0, 7.0], [5.0, 2.0]], ["a", "a", "b"])
    np.testing.assert_allclose(out, [[-1, 0], [1, 0], [0, 0]])  # a lone or constant feature: 0


def test_features_add_the_within_patient_twins_only_with_patients():
    images = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    assert colour.features(images).shape == (5, 44)
    both = colour.features(images, ["p", "p", "q", "q", "q"])
    assert both.shape == (5, 88)
    np.testing.assert_allclose(both[:, :44], colour.patch_features(images))


@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 8, 8, 1)])
def test_non_rgb_images_are_refused_with_their_shape(shape):
    with pytest.raises(ValueError, match=r"RGB.*" + r"\(" + ", ".join(map(str, shape))):
        colour.patch_features(np.zeros(shape, dtype=np.uint8))


def test_patients_must_match_the_patches():
    with pytest.raises(ValueError, match="2 patients given for 3 patches"):
        colour.within_patient(np.zeros((3, 2)), ["a", "b"])


def test_cross_validation_learns_on_the_demo_set_and_averages_with_a_recipe(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, n_patients=8, seed=0, patches_scale=0.5)
    data = crossval.load(root, tmp_path / "out")
    result = colour.cross_validate(data, folds=2, seed=3, out_dir=tmp_path / "out")
    assert result.recipe.name == "colour" and list(result.per_fold["fold"]) == [0, 1]
    assert result.summary.loc["roc_auc", "mean"] > 0.7  # chance is 0.5
    folded = crossval.patient_folds(data.df, 2, 3)
    for fold in (0, 1):
        views = pd.read_csv(result.out_dir / f"fold{fold}" / "views.csv")
        test = folded.loc[folded["fold"] == fold, "path"]
        assert sorted(views.loc[views["split"] == "test", "path"]) == sorted(test)
        assert views["single"].equals(views["tta"]) and views["single"].between(0, 1).all()
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert summary["recipe"]["name"] == "colour" and "HistGradientBoosting" in summary["recipe"]["options"]["model"]
    row = crossval.registry_rows([result], "test folds")[0]
    assert row["run"] == "crossval_colour_v1" and row["model"].startswith("HistGradientBoosting on 88")
    # averaged with itself, the ensemble's views are its own
    ens = crossval.view_ensemble([result, result], tmp_path / "ens", threshold="fixed", tta=False)
    np.testing.assert_allclose(ens.per_fold["roc_auc"], result.per_fold["roc_auc"])
