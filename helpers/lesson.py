"""The cell after every notebook's parameters cell: one call turns the parameters into the run's settings.

It sits a level above ``helpers.notebook`` because it needs the data's resolution (``helpers.data.source``),
which may make the generated set or download the whole one.
"""

from __future__ import annotations

from .config import Config
from .data import source
from .notebook import seed_everything


def start(profile: str, data_dir=None, output_dir=None, seed: int = 42, *, epochs=None, batch_size=None,
          sample_size=None, weights=None) -> Config:
    """The settings of this run: the profile's, with every parameter given (not None) in its place.

    Seeds Python, NumPy and Keras from them and prints them, so that an executed notebook shows
    what it ran with and on which data before any result.
    """
    cfg = source.resolve(profile, data_dir=data_dir, output_dir=output_dir, epochs=epochs, batch_size=batch_size,
                         sample_size=sample_size, weights=weights, seed=seed)
    seed_everything(cfg.seed)
    print(cfg)
    return cfg
