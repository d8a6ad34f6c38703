"""Profiles and paths: what a notebook's parameters cell can ask for (``helpers.data.source.resolve``
turns it into a :class:`Config`). ``smoke`` runs the series in minutes on 2 CPU cores on a capped
share of the shipped sample; ``cpu`` uses all of the sample; ``full`` is the whole Kaggle set on a GPU.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The real sample that ships with the project (9,563 patches of 230 patients, CC0) and the
# benchmark's patient lists (Cruz-Roa 2014 / Janowczyk 2016).
SAMPLE_DIR = ROOT / "data" / "idc-sample"
SPLITS_DIR = ROOT / "data" / "splits"
GENERATED = "generated"  # DATA_DIR="generated": the generated demo set instead of real tissue
WHOLE_SET_PROFILES = ("full", "colab")  # with DATA_DIR None these take the whole Kaggle set

PROFILES = {
    "smoke": dict(epochs=2, batch_size=64, sample_size=1000, image_size=50, weights=None,
                  demo_patients=40, seeds=1),
    "cpu": dict(epochs=10, batch_size=128, sample_size=None, image_size=50, weights=None,
                demo_patients=60, seeds=2),
    "full": dict(epochs=50, batch_size=128, sample_size=None, image_size=50, weights="imagenet",
                 demo_patients=120, seeds=3),
    # colab: the whole Kaggle set on one Colab T4, each IDC notebook in about 20 minutes and the
    # series in about 3 hours by helpers.tools.estimate (computed, not measured): docs/colab.md
    "colab": dict(epochs=8, batch_size=128, sample_size=40_000, image_size=50, weights="imagenet",
                  demo_patients=120, seeds=1),
}


@dataclass
class Config:
    profile: str
    data_dir: Path
    output_dir: Path
    generated: bool  # True for the generated demo set: no clinical claim rests on it
    epochs: int
    batch_size: int
    sample_size: int | None
    weights: str | None
    seed: int
    demo_patients: int
    seeds: int

    @property
    def figures(self) -> Path:
        return self.output_dir / "figures"

    @property
    def data_label(self) -> str:
        return "generated demo data" if self.generated else f"real data: {self.data_dir.name}"

    def training_seeds(self, count: int | None = None) -> list[int]:
        """``count`` training seeds (None: the profile's ``seeds``) counted up from ``seed``."""
        return [self.seed + i for i in range(count or self.seeds)]

    def as_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def __str__(self) -> str:
        shown = {**self.as_dict(), "data": self.data_label}  # every printed config names its data
        width = max(map(len, shown))
        return "\n".join(f"{k:<{width}}  {v}" for k, v in shown.items())


def demo_dir(patients: int = PROFILES["smoke"]["demo_patients"]) -> Path:
    """Where the generated set of that many patients lives (IDC_DEMO_ROOT moves it)."""
    base = Path(os.environ.get("IDC_DEMO_ROOT", ROOT / "data" / "demo"))
    return base / f"idc-{patients}p"


def full_demo_dir() -> Path:
    """Where ``make-demo --full`` and ``make bench`` keep the full-size generated set."""
    return demo_dir().parent / "idc-full"


def is_generated(root) -> bool:
    """True for a generated set, or a folder of it (``<set>/cropped``, ``<set>/cropped/train``): no
    clinical claim rests on it."""
    root = Path(root)
    return any((p / "GENERATED.txt").is_file() for p in (root, *list(root.parents)[:2]))
