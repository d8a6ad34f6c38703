"""What every notebook does first and last: quiet setup (on Colab, the missing requirements), figures, the seed."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

from .config import ROOT
from .io import atomic_path


def setup(tensorflow: bool = False) -> None:
    """Install what Colab lacks (there only), quiet TensorFlow's start-up logging, set plot defaults.

    Call before anything imports TensorFlow: its C++ log level is read once. ``tensorflow=True``
    imports it here, quietly, and applies ``hardware.setup()`` (model notebooks); data notebooks
    leave it out, and index faster without it. ``lesson.start`` seeds the run.
    """
    install_on_colab()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="seaborn")
    import matplotlib

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")  # headless scripts and tests: no window
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120,
                                "savefig.bbox": "tight", "image.interpolation": "nearest"})
    if tensorflow:
        import_tensorflow_quietly()
        from . import hardware

        hardware.setup()  # mixed precision and XLA on a GPU; IDC_MIXED_PRECISION / IDC_XLA override


def install_on_colab() -> list[str]:
    """On Colab only, pip-install the requirements of pyproject.toml that are missing (keras-tuner,
    scikit-plot, ...) and return them: a full ``pip install -e`` could replace Colab's own builds of
    TensorFlow, Keras, pandas and the rest by other versions."""
    if "google.colab" not in sys.modules:
        return []
    missing = missing_requirements()
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
        import importlib

        importlib.invalidate_caches()  # the running kernel finds the new packages without a restart
    return missing


def missing_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The project's dependencies (as written, with their versions) of which no version is installed."""
    from importlib import metadata

    requirements = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    missing = []
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group()
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the process's stderr closed for the moment: its C++ start-up lines
    (oneDNN, CPU features) bypass TF_CPP_MIN_LOG_LEVEL and would land in every executed notebook."""
    if "tensorflow" in sys.modules:
        return
    try:
        saved = os.dup(2)
    except OSError:  # no usable file descriptor 2 (some embedded kernels)
        import tensorflow  # noqa: F401

        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def seed_everything(seed: int) -> None:
    """Python, NumPy and (if loaded) TensorFlow/Keras from one seed."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    if "keras" in sys.modules or "tensorflow" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)


def save_figure(fig, cfg, name: str) -> Path:
    """Write ``fig`` to ``<output_dir>/figures/<name>.png`` atomically; return the path."""
    path = Path(cfg.figures) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return path

