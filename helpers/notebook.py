"""What every notebook does first and last: quiet setup, figures, the seed."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from .io import atomic_path


def setup(seed: int | None = None) -> None:
    """Quiet TensorFlow's start-up logging, set plot defaults, fix the seed.

    Call before anything imports TensorFlow: its C++ log level is read once.
    """
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
    if seed is not None:
        seed_everything(seed)


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


def in_colab() -> bool:
    return "google.colab" in sys.modules
