"""Getting the real data (for users who are online; Colab is).

The Kaggle set "Breast Histopathology Images" (paultimothymooney, CC0) comes as
one zip of about 3 GB. Two ways to fetch it, both need a Kaggle account token:
``kagglehub`` (``pip install kagglehub``; reads ~/.kaggle/kaggle.json or the
KAGGLE_USERNAME / KAGGLE_KEY variables), or the ``kaggle`` command line.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

from .index import NESTED, DataError

KAGGLE_DATASET = "paultimothymooney/breast-histopathology-images"


def download_idc(dest, method: str = "kagglehub") -> Path:
    """Download and unpack the IDC set under ``dest``; return the data root."""
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    if method == "kagglehub":
        try:
            import kagglehub
        except ImportError as exc:
            raise RuntimeError("kagglehub is not installed: pip install kagglehub "
                               "(or use method='cli' with the kaggle command)") from exc
        return find_data_root(kagglehub.dataset_download(KAGGLE_DATASET))
    if method == "cli":
        if shutil.which("kaggle") is None:
            raise RuntimeError("the kaggle command is not installed: pip install kaggle, "
                               "and put your token in ~/.kaggle/kaggle.json")
        subprocess.run(["kaggle", "datasets", "download", "-d", KAGGLE_DATASET, "-p", str(dest)],
                       check=True)
        archive = dest / (KAGGLE_DATASET.split("/")[1] + ".zip")
        return unpack(archive, dest)
    raise ValueError(f"unknown download method {method!r}; use 'kagglehub' or 'cli'")


def unpack(archive, dest) -> Path:
    """Unzip ``archive`` into ``dest`` (skipped if already done); return the data root."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"archive {archive} does not exist")
    done = dest / f".{archive.stem}.unpacked"
    if not done.exists():
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
        except zipfile.BadZipFile as exc:
            raise DataError(f"archive {archive} is not a valid zip file ({exc})") from exc
        done.touch()
    return find_data_root(dest)


def find_data_root(folder) -> Path:
    """The folder whose children are patient folders (``<patient>/<0|1>/``).

    The Kaggle zip holds them at its top level and again under
    ``IDC_regular_ps50_idx5/``; the top level is the root (the index merges both).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")

    def is_patient(p: Path) -> bool:
        return p.name.isdigit() and ((p / "0").is_dir() or (p / "1").is_dir())

    def is_root(d: Path) -> bool:
        return any(is_patient(p) for p in d.iterdir() if p.is_dir())

    level = [folder]
    for _ in range(4):  # breadth first: the archive's root is near the top
        for d in level:
            if is_root(d):
                return d.parent if d.name == NESTED else d
        level = [c for d in level for c in sorted(d.iterdir())
                 if c.is_dir() and not is_patient(c)]
    raise DataError(f"no <patient>/<0|1>/ folders found under {folder}")
