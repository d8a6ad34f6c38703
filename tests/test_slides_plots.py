import matplotlib
import numpy as np
import pandas as pd
import pytest
from conftest import patch_path, write_patch

from helpers import plots
from helpers.data import slides
from helpers.data.index import build_index


@pytest.fixture
def grid(tmp_path):
    """One patient: cells (row, col) (0,0) red, (0,2) green, (1,1) a 50x20 blue border patch."""
    root = tmp_path / "grid"
    write_patch(patch_path(root, 7, 101, 201, 0), colour=(255, 0, 0))
    write_patch(patch_path(root, 7, 201, 201, 1), colour=(0, 255, 0))
    write_patch(patch_path(root, 7, 151, 251, 1), size=(50, 20), colour=(0, 0, 255))
    df, _ = build_index(root)
    return df


def test_positions_and_value_map(grid):
    rows, cols, shape = slides.grid_positions(grid)
    assert shape == (2, 3)
    got = {(r, c) for r, c in zip(rows, cols)}
    assert got == {(0, 0), (0, 2), (1, 1)}
    labels = slides.value_map(grid, grid["label"])
    assert labels[0, 0] == 0 and labels[0, 2] == 1 and labels[1, 1] == 1
    assert np.isnan(labels[0, 1]) and np.isnan(labels[1, 0]) and np.isnan(labels[1, 2])


def test_mosaic_places_patches_and_keeps_border_size(grid):
    m = slides.tissue_mosaic(grid)
    assert m.shape == (100, 150, 3)
    assert tuple(m[10, 10]) == (255, 0, 0)
    assert tuple(m[10, 110]) == (0, 255, 0)
    assert tuple(m[10, 60]) == (255, 255, 255)          # no patch: background
    assert tuple(m[55, 60]) == (0, 0, 255)              # border patch, its 20 real rows
    assert tuple(m[75, 60]) == (255, 255, 255)          # below the border patch: background
    small = slides.tissue_mosaic(grid, cell=10)
    assert small.shape == (20, 30, 3) and tuple(small[12, 15]) == (0, 0, 255)
    assert tuple(small[17, 15]) == (255, 255, 255)


def test_mosaic_refuses_several_patients(grid):
    two = pd.concat([grid, grid.assign(patient="8")])
    with pytest.raises(ValueError, match="2 patients"):
        slides.tissue_mosaic(two)


def test_eda_figures_have_their_source_in_the_title(grid, tree):
    df, _ = build_index(tree)
    for fig in (plots.patches_per_patient(df, "generated demo data"),
                plots.positive_share_per_patient(df, "generated demo data"),
                plots.class_balance(df, "generated demo data")):
        assert "generated demo data" in fig.axes[0].get_title()
    share = plots.positive_share_per_patient(df, "x", threshold=0.3)
    assert "1 patients above 30%" in " ".join(t.get_text() for t in share.axes[0].texts)
    table = plots.colour_table(df, n=5, seed=0)
    assert len(table) == 5 and set(table.columns) == {"label", "red", "green", "blue", "saturation"}
    matplotlib.pyplot.close("all")


def test_scikitplot_imports_and_plots_on_current_libraries():
    skplt = plots.scikitplot()
    y = np.array([0, 0, 1, 1, 0, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    ax = skplt.metrics.plot_roc(y, proba)
    assert len(ax.get_lines()) >= 2
    ax = skplt.metrics.plot_confusion_matrix(y, proba.argmax(1))
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["1", "1", "2", "2"]
    matplotlib.pyplot.close("all")


def test_patient_maps_put_each_probability_in_its_cell(grid):
    maps = slides.patient_maps(grid, proba=[0.1, 0.9, 0.6])
    assert maps["patient"] == "7" and maps["patches"] == 3
    assert maps["mosaic"].shape == (100, 150, 3)
    by_xy = dict(zip(zip(grid["x"], grid["y"]), [0.1, 0.9, 0.6]))
    proba = maps["proba"]
    assert proba[0, 0] == by_xy[(101, 201)] and proba[0, 2] == by_xy[(201, 201)]
    assert proba[1, 1] == by_xy[(151, 251)]  # the border patch has a cell like any other
    assert np.isnan(proba).sum() == 3
    np.testing.assert_array_equal(np.isnan(maps["labels"]), np.isnan(proba))
    fig = plots.slide_heatmap(maps, "generated demo data", threshold=0.5)
    assert "generated demo data" in fig._suptitle.get_text()
    matplotlib.pyplot.close("all")


def test_patient_maps_refuse_bad_input(grid):
    with pytest.raises(ValueError, match="2 probabilities for 3 patches"):
        slides.patient_maps(grid, proba=[0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        slides.patient_maps(grid.iloc[:0])
    assert "proba" not in slides.patient_maps(grid)


def test_idc_share_agreement_plots_one_point_per_patient():
    table = pd.DataFrame({"patient": ["a", "b", "c"], "patches": [10, 200, 40],
                          "idc_share": [0.1, 0.5, 0.9], "predicted_idc_share": [0.2, 0.4, 0.95]})
    fig = plots.idc_share_agreement(table, "generated demo data; test split")
    ax = fig.axes[0]
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets, table[["idc_share", "predicted_idc_share"]].to_numpy())
    assert "test split" in ax.get_title()
    matplotlib.pyplot.close("all")


def test_complete_patients_come_from_the_manifest(tmp_path, idc_sample):
    from helpers.data import slides

    assert slides.complete_patients(idc_sample) == ["10253", "10254"]
    assert slides.complete_patients(tmp_path) == []


def test_split_leak_plot_draws_a_bar_per_split_a_dot_per_seed_and_the_reference():
    import pandas as pd

    table = pd.DataFrame({"split": ["patch", "patch", "patient", "patient"], "f1": [0.9, 0.8, 0.6, 0.7],
                          "balanced_accuracy": [0.9, 0.9, 0.7, 0.7], "roc_auc": [0.95, 0.97, 0.8, 0.9]})
    fig = plots.split_leak(table, "leak (real data: x)", reference={"f1": (0.789, "seed project")})
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["F1", "balanced accuracy", "ROC-AUC"]
    heights = [round(p.get_height(), 3) for p in axes[0].patches]
    assert heights == [0.85, 0.65]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["patch split", "patient split"]
    assert any(round(line.get_ydata()[0], 3) == 0.789 for line in axes[0].lines)
    assert "real data: x" in fig._suptitle.get_text()
