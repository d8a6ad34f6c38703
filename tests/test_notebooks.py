"""Every notebook of the series, executed by papermill with the smoke profile."""

import nbformat
import pandas as pd
import pytest

from helpers import run_all
from helpers.config import ROOT, SAMPLE_DIR
from helpers.estimate import COLAB_SETUP_CELL

THYROID = ("16_", "17_")

# The slowest first (five backbones, minutes of graph tracing): started early, it overlaps
# with the rest of the suite on the other worker instead of running alone at the end.
NOTEBOOKS = sorted(run_all.notebooks_in(ROOT / "notebooks"), key=lambda p: not p.name.startswith("16_"))


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
    monkeypatch.setenv("THYROID_DEMO_ROOT", str(demo_root))
    kernel = run_all.KERNEL if run_all.kernel_available(run_all.KERNEL) else "python3"
    out = tmp_path / "outputs"
    outcomes = run_all.run_all([path], out / "notebooks",
                               {"PROFILE": "smoke", "OUTPUT_DIR": str(out)},
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
