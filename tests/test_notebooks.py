"""Every notebook of the series, executed by papermill with the smoke profile; and the calls their first cells make."""

import sys
import types

import nbformat
import numpy as np
import pandas as pd
import pytest

from helpers import lesson, notebook
from helpers.tools import run_all
from helpers.config import PROFILES, ROOT, SAMPLE_DIR
from helpers.tools.estimate import COLAB_SETUP_CELL

THYROID = ("16_", "17_")

# The slowest first (five backbones, minutes of graph tracing): started early, it overlaps
# with the rest of the suite on the other worker instead of running alone at the end.
NOTEBOOKS = sorted(run_all.notebooks_in(ROOT / "notebooks"), key=lambda p: not p.name.startswith("16_"))
# Lighter than make run-all's smoke, so that the suite fits 20 minutes on 2 cores: the three
# ImageNet-sized backbones trained from scratch and the three studies of 08-10 (no score bar: they
# compare arms) take half of smoke's patches (measured on the sample, the backbones' test ROC-AUC
# stayed 0.77-0.81); notebook 16 trains two of its backbones, one with and one
# without residual connections.
LIGHTER = {**{n: {"SAMPLE_SIZE": 500} for n in ("03_", "04_", "05_", "08_", "09_", "10_")},
           "16_": {"MODELS": ["vgg16", "resnet50_gap"]}}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    return tmp_path_factory.mktemp("demo")


@pytest.mark.notebook
# Above the suite's 600 s: notebook 16 builds and trains five ImageNet-sized backbones
# (EfficientNetB7's first training step alone takes minutes to trace on 2 CPU cores).
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_with_smoke_profile(path, tmp_path, demo_root, monkeypatch):
    monkeypatch.setenv("IDC_DEMO_ROOT", str(demo_root))  # the kernel inherits it
    kernel = run_all.KERNEL if run_all.kernel_available(run_all.KERNEL) else "python3"
    out = tmp_path / "outputs"
    lighter = next((v for k, v in LIGHTER.items() if path.name.startswith(k)), {})
    outcomes = run_all.run_all([path], out / "notebooks",
                               {"PROFILE": "smoke", "OUTPUT_DIR": str(out), **lighter},
                               kernel=kernel, progress=False)
    assert outcomes[0].status == "ok", outcomes[0].detail

    nb = nbformat.read(out / "notebooks" / path.name, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    stderr = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                     if o.get("name") == "stderr")
    assert "absl::InitializeLog" not in stderr and "oneDNN" not in stderr, "TensorFlow's start-up log leaked"
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert sum("parameters" in t for t in tags) == 1, "exactly one parameters cell"

    registry = pd.read_csv(out / "results.csv")
    assert (registry["notebook"] == path.stem).any(), "the notebook wrote its results"
    if path.name.startswith(THYROID):  # no real thyroid set is reachable: generated, and labelled so
        assert registry["generated"].all()
    else:  # the IDC notebooks run on the shipped real sample by default
        assert not registry["generated"].any(), "an IDC notebook ran on generated data"
        assert set(registry["data"]) == {str(SAMPLE_DIR)}
    assert registry["split"].notna().all()
    check_what_it_teaches(path, nb, registry[registry["notebook"] == path.stem], out / "figures")


# The smallest ROC-AUC on unseen real patients that a smoke run (2 epochs on ~700 patches) must reach:
# CancerNet was made for these patches; the others get a looser bar (measured 0.67-0.86 in smoke).
ABOVE_CHANCE = {"02_": 0.55, "03_": 0.55, "04_": 0.55, "05_": 0.55, "06_": 0.55, "07_": 0.65, "15_": 0.65}


def check_what_it_teaches(path, nb, rows, figures):
    """What a student is told must be there: figures that name their data, and models that learn."""
    text = "".join(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells for o in c.get("outputs", []))
    if path.name.startswith(THYROID):
        assert "generated" in text
    else:
        assert "real data: idc-sample" in text, "the outputs do not name the real sample"
    if any("save_figure" in c.source for c in nb.cells):
        assert list(figures.glob("*.png")), "the notebook saves figures, but none was written"
    bar = next((v for k, v in ABOVE_CHANCE.items() if path.name.startswith(k)), None)
    if bar is not None:
        main = rows[rows["run"].str.endswith("_smoke")]
        assert len(main) == 1 and main["roc_auc"].iloc[0] > bar, \
            f"ROC-AUC on unseen patients {main['roc_auc'].tolist()}, not above {bar}"
        assert "test" in main["split"].iloc[0], "the score is not from the test patients"
    if path.name.startswith("07_"):  # the leak section: one row per split, each naming it
        leak = rows[rows["run"].str.contains("_leak_")]
        assert sorted(leak["split"].str.extract(r"^by (patch|patient)\b")[0]) == ["patch", "patient"]


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"
        first = nb.cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# "), f"{path.name}: no title"
        setup = [c.source for c in nb.cells if "google.colab" in c.source]
        assert setup == [COLAB_SETUP_CELL.format(repo="https://github.com/<owner>/<repo>")], \
            f"{path.name}: not the one Colab setup cell"


def test_start_gives_the_profiles_settings_with_the_parameters_given(tmp_path, capsys):
    cfg = lesson.start("cpu", SAMPLE_DIR, tmp_path, 7, epochs=3, sample_size=500, weights="scratch")
    assert (cfg.profile, cfg.data_dir, cfg.output_dir, cfg.seed) == ("cpu", SAMPLE_DIR, tmp_path, 7)
    assert (cfg.epochs, cfg.sample_size, cfg.weights) == (3, 500, None)  # given: they win ("scratch": no weights)
    assert cfg.batch_size == PROFILES["cpu"]["batch_size"] and cfg.seeds == PROFILES["cpu"]["seeds"]  # left: the profile's
    assert "real data: idc-sample" in capsys.readouterr().out, "the settings are printed, naming their data"
    drawn = np.random.random()
    lesson.start("cpu", SAMPLE_DIR, tmp_path, 7)
    assert np.random.random() == drawn, "the run is seeded from SEED"
    assert lesson.start("full", SAMPLE_DIR, tmp_path).weights == PROFILES["full"]["weights"]


def test_setup_installs_on_colab_only_the_requirements_missing(tmp_path, monkeypatch):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["pandas>=2.1", "no-such-package-here>=1.0"]\n')
    assert notebook.missing_requirements(pyproject) == ["no-such-package-here>=1.0"]
    calls = []
    monkeypatch.setattr(notebook.subprocess, "run", lambda command, check: calls.append(command))
    monkeypatch.setattr(notebook, "missing_requirements", lambda: ["no-such-package-here>=1.0"])
    assert notebook.install_on_colab() == [] and not calls, "elsewhere than on Colab nothing is installed"
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert notebook.install_on_colab() == ["no-such-package-here>=1.0"]
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "no-such-package-here>=1.0"]]
