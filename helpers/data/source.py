"""Which data a run reads: :func:`resolve` turns a notebook's parameters cell into a
:class:`helpers.config.Config`, making the demo set or downloading the Kaggle set on first use."""

from __future__ import annotations

from pathlib import Path

from ..config import Config, GENERATED, PROFILES, ROOT, SAMPLE_DIR, WHOLE_SET_PROFILES, demo_dir, is_generated
from ..io import replace_stale


def ensure_demo(data_dir: Path, patients: int, seed: int = 0) -> dict:
    """Make the generated set at ``data_dir`` unless it is there; an older generated set is replaced."""
    from .demo import make_demo

    return replace_stale(data_dir, lambda root: make_demo(root, n_patients=patients, seed=seed))


def default_data_dir(profile: str, data_dir=None):
    """What ``DATA_DIR`` means: a folder as given, ``"generated"`` as is, None the shipped real
    sample (``full`` and ``colab``: the whole Kaggle set, downloaded on first use)."""
    if data_dir not in (None, ""):
        return data_dir
    if profile in WHOLE_SET_PROFILES:
        from .download import download_idc

        return download_idc()
    return SAMPLE_DIR


def resolve(profile: str = "smoke", data_dir=None, output_dir=None, epochs=None,
            batch_size=None, sample_size=None, weights=None,
            seed: int = 42, make_demo: bool = True) -> Config:
    """Settings for one notebook run: a parameter given (not None) wins over the profile's.

    ``data_dir`` None means the real sample in ``data/idc-sample``; ``"generated"`` the demo set in
    ``data/demo/`` (made on first use). ``sample_size`` 0 means no cap; ``weights`` "scratch" or
    "none" means no pretrained weights even where the profile has some.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    base = PROFILES[profile]
    data_dir = default_data_dir(profile, data_dir)
    if str(data_dir) == GENERATED:
        data_dir = demo_dir(base["demo_patients"])
        if make_demo:
            ensure_demo(data_dir, base["demo_patients"])
    data_dir = Path(data_dir).expanduser()
    given = dict(epochs=epochs, batch_size=batch_size, sample_size=sample_size, weights=weights)
    value = {k: base[k] if v is None else v for k, v in given.items()}
    return Config(
        profile=profile, data_dir=data_dir, output_dir=Path(output_dir or ROOT / "outputs").expanduser(),
        generated=is_generated(data_dir), epochs=int(value["epochs"]), batch_size=int(value["batch_size"]),
        sample_size=int(value["sample_size"]) if value["sample_size"] else None,
        weights=None if str(value["weights"]).lower() in ("none", "scratch") else value["weights"],
        seed=int(seed), demo_patients=base["demo_patients"], seeds=base["seeds"],
    )
