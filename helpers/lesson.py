"""The cell after every notebook's parameters cell. Apart from ``helpers.notebook`` because it needs
``helpers.data.source``, which may make the generated set or download the whole one."""

from __future__ import annotations

from .config import Config
from .data import source
from .notebook import seed_everything


def start(profile: str, data_dir=None, output_dir=None, seed: int = 42, *, epochs=None, batch_size=None,
          sample_size=None, weights=None) -> Config:
    """The profile's settings with every parameter given (not None) in its place; seeds Python, NumPy
    and Keras, and prints them, so that an executed notebook shows what it ran with before any result."""
    cfg = source.resolve(profile, data_dir=data_dir, output_dir=output_dir, epochs=epochs, batch_size=batch_size,
                         sample_size=sample_size, weights=weights, seed=seed)
    seed_everything(cfg.seed)
    print(cfg)
    return cfg
