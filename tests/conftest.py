import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # More test processes than cores (make test runs 3 on 2): one TensorFlow thread per process and
    # per notebook kernel (they inherit it) instead of two that wait on each other. Measured on three
    # backbone notebooks side by side: 7 % less CPU, 5 % less wall time.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "idc-sample"  # the real sample shipped in the repository


def write_patch(path, size=(50, 50), colour=(200, 100, 150), mode="RGB"):
    """A solid-colour PNG at ``path`` (w, h = size)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def patch_path(root, patient, x, y, label, folder_label=None, nested=False):
    base = Path(root) / ("IDC_regular_ps50_idx5" if nested else "")
    folder = label if folder_label is None else folder_label
    return base / str(patient) / str(folder) / f"{patient}_idx5_x{x}_y{y}_class{label}.png"


@pytest.fixture
def tree(tmp_path):
    """A valid two-patient tree: patient 1 has a 3x2 grid, patient 2 a 2x2 grid."""
    root = tmp_path / "idc"
    for patient, cols, rows in ((1, 3, 2), (2, 2, 2)):
        for c in range(cols):
            for r in range(rows):
                label = int(patient == 1 and c == 2)
                write_patch(patch_path(root, patient, 1 + 50 * c, 1 + 50 * r, label),
                            colour=(10 * c, 10 * r, 100 * label))
    return root


def files_under(root, pattern):
    """Relative paths (str) of the files matching ``pattern`` under root, sorted."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob(pattern))


def tree_digest(root, pattern):
    """One hash over the relative path and bytes of every file matching ``pattern`` under root."""
    import hashlib

    h = hashlib.sha256()
    for rel in files_under(root, pattern):
        h.update(rel.encode())
        h.update((Path(root) / rel).read_bytes())
    return h.hexdigest()


@pytest.fixture
def idc_sample():
    return SAMPLE


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def helpers_cli(*args) -> subprocess.CompletedProcess:
    """``python -m helpers ARGS`` in a new process, as a user types it."""
    return subprocess.run([sys.executable, "-m", "helpers", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def helpers_here(*args) -> subprocess.CompletedProcess:
    """The same command in this process, its stdout and stderr captured: for the commands that train,
    which a new process would spend 6 s of CPU on loading TensorFlow for (this one has it loaded)."""
    from helpers.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return subprocess.CompletedProcess(["python", "-m", "helpers", *map(str, args)], code, out.getvalue(),
                                       err.getvalue())
