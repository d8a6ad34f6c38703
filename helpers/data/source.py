"""Which data a run reads, and the settings of one notebook run: :func:`resolve` turns a notebook's
parameters cell into a :class:`helpers.config.Config`, making the generated demo set or downloading
the whole Kaggle set on first use when the profile asks for them.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, GENERATED, PROFILES, ROOT, SAMPLE_DIR, WHOLE_SET_PROFILES, demo_dir, is_generated


def ensure_demo(data_dir: Path, patients: int, seed: int = 0) -> dict:
    """Make the generated set at ``data_dir`` unless it is there already.

    A set left by an older version of the generator (other parameters) is ours
    to replace; any other non-empty folder is refused by ``make_demo``.
    """
    import shutil

    from .demo import make_demo

    try:
        return make_demo(data_dir, n_patients=patients, seed=seed)
    except ValueError:
        if not is_generated(data_dir):
            raise
        shutil.rmtree(data_dir)
        return make_demo(data_dir, n_patients=patients, seed=seed)


def default_data_dir(profile: str, data_dir=None):
    """What ``DATA_DIR`` means: a folder as given, ``"generated"`` as is, None the shipped
    real sample (``full`` and ``colab``: the whole Kaggle set, downloaded on first use)."""
    if data_dir not in (None, ""):
        return data_dir
    if profile in WHOLE_SET_PROFILES:
        from .download import download_idc

        return download_idc()
    return SAMPLE_DIR


def resolve(profile: str = "smoke", data_dir=None, output_dir=None, epochs=None,
            batch_size=None, sample_size=None, weights=None,
            seed: int = 42, make_demo: bool = True) -> Config:
    """Settings for one notebook run.

    ``data_dir`` None means the real sample in ``data/idc-sample``; ``"generated"``
    the generated demo set in ``data/demo/`` (made on first use, seconds on a CPU).
    ``sample_size`` 0 means no cap.
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
    pick = lambda given, key: base[key] if given is None else given  # noqa: E731
    size = pick(sample_size, "sample_size")
    return Config(
        profile=profile,
        data_dir=data_dir,
        output_dir=Path(output_dir or ROOT / "outputs").expanduser(),
        generated=is_generated(data_dir),
        epochs=int(pick(epochs, "epochs")),
        batch_size=int(pick(batch_size, "batch_size")),
        sample_size=None if not size else int(size),
        # "scratch" (or "none") asks for no pretrained weights even where the profile has some
        weights=None if str(pick(weights, "weights")).lower() in ("none", "scratch") else pick(weights, "weights"),
        seed=int(seed),
        demo_patients=base["demo_patients"],
        seeds=base["seeds"],
    )
