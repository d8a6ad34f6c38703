"""Getting the full Kaggle set "Breast Histopathology Images" (CC0): one call, once.

kagglehub downloads it without a token (one zip of about 3 GB) into ``data/idc/`` (git-ignored); its
index is checked against the published counts and the check recorded in ``data/idc/checked.json``,
so that a later call returns at once, offline too. kagglehub's cache is pointed at the destination
rather than using its ``output_dir``: in the cache a broken download resumes, while ``output_dir``
refuses a non-empty folder. The ``kaggle`` command line (``method="cli"``) needs a token.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from ..config import ROOT
from ..io import write_text
from .index import DataError, NESTED

KAGGLE_DATASET = "paultimothymooney/breast-histopathology-images"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_DATASET}"
DEFAULT_DEST = ROOT / "data" / "idc"
CHECKED = "checked.json"
# The whole set as helpers.data.index.build_index counts it (the nested duplicate tree merged).
EXPECTED = {"unique_patches": 277_524, "patients": 279, "positives": 78_786}
BY_HAND = (f"download it by hand from {KAGGLE_URL}, unzip it, and give DATA_DIR=<the unzipped folder> "
           "(make run-all PROFILE=full DATA_DIR=...)")


class DownloadError(DataError):
    """The set could not be fetched, or what was fetched is not the whole set."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # sys.stderr as it is at each call


def download_idc(dest=None, method: str = "kagglehub", *, expected: dict | None = None, force: bool = False,
                 output_dir=None, fetch=None, echo=_stderr) -> Path:
    """The root of the full IDC set (the folder of the patient folders), downloaded on first use.

    ``dest`` None: ``data/idc/``. A set checked there before is returned without network access;
    ``force`` downloads and checks again. ``expected``: the counts the index must show (None:
    ``EXPECTED``); ``output_dir``: where the index is saved (None: ``outputs/``); ``fetch(dest,
    force)``: the downloader (None: ``method``'s). Raises :class:`DownloadError` with one line.
    """
    if fetch is None and method not in FETCHERS:
        raise ValueError(f"unknown download method {method!r}; use 'kagglehub' or 'cli'")
    fetch = fetch or FETCHERS[method]
    dest = Path(dest).expanduser() if dest not in (None, "") else DEFAULT_DEST
    expected = EXPECTED if expected is None else dict(expected)
    if not force and (root := checked_root(dest, expected)) is not None:
        echo(f"the IDC set is here already (checked before): {root}")
        return root
    echo(f"downloading the IDC set from Kaggle ({KAGGLE_DATASET}, about 3 GB) into {dest}; "
         "if it stops, run the same command again: it resumes")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        fetched = fetch(dest, force)
    except DataError:
        raise
    except Exception as exc:  # whatever the network or kagglehub raise: one line, the cause kept
        raise DownloadError(failure_message(exc)) from exc
    root = find_data_root(fetched)
    echo(f"checking every patch of {root} (a few minutes: the index decodes each file once)")
    counts = check_counts(root, expected, output_dir)
    record = {"root": str(root), **counts, "checked": time.strftime("%Y-%m-%d %H:%M")}
    write_text(dest / CHECKED, json.dumps(record, indent=2) + "\n")  # atomic: a stopped run leaves no half record
    echo(f"the IDC set is complete: {counts['unique_patches']:,} patches of {counts['patients']} patients")
    return root


def checked_root(dest, expected: dict) -> Path | None:
    """The root recorded in ``dest/checked.json`` if its counts are ``expected`` and it is still there."""
    try:
        record = json.loads((Path(dest) / CHECKED).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
        return None
    root = Path(record.get("root", ""))
    return root if root.is_dir() else None


def check_counts(root, expected: dict, output_dir=None) -> dict:
    """Index ``root`` (saved under ``output_dir/index/`` for the notebooks); DownloadError unless its
    counts are ``expected``."""
    from .cache import cached_index

    _, summary = cached_index(root, output_dir)
    found = {k: summary.get(k) for k in expected}
    if found != expected:
        raise DownloadError(
            f"the IDC set at {root} is not complete: its index holds {_counts(found)}, the Kaggle set "
            f"{_counts(expected)} (a partial download or unpacking?); run `python -m helpers download --force` "
            f"to fetch it again, or {BY_HAND}")
    return found


def _counts(counts: dict) -> str:
    return ", ".join(f"{v:,} {k.replace('_', ' ')}" if isinstance(v, int) else f"{v} {k}" for k, v in counts.items())


def failure_message(exc: BaseException) -> str:
    """One line for a failed download (no connection, no token, a full disk, or the error's own), with what to do."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {type(e).__name__ for e in chain}
    status = next(filter(None, (getattr(getattr(e, "response", None), "status_code", None) for e in chain)), None)
    if status in (401, 403) or "UnauthenticatedError" in names:
        return (f"Kaggle refused the download{f' (HTTP {status})' if status else ''}: it asks for your Kaggle "
                "API token. Create one at https://www.kaggle.com/settings (API, Create New Token), put kaggle.json "
                "in ~/.kaggle/ or set KAGGLE_USERNAME and KAGGLE_KEY (on Colab: as secrets), and run again; "
                f"or {BY_HAND}")
    if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain):
        return ("the disk is full: the IDC set needs about 3 GB to download and more to unpack; "
                f"free space, or {BY_HAND}")
    offline = {"ConnectionError", "NameResolutionError", "gaierror", "MaxRetryError", "Timeout",
               "ConnectTimeout", "ReadTimeout", "NewConnectionError", "ConnectionRefusedError"}
    if names & offline:
        return ("could not download the IDC set from Kaggle (no connection to kaggle.com): are you offline? "
                f"Or {BY_HAND}")
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return (f"could not download the IDC set from Kaggle ({type(exc).__name__}: {first}); run again to resume, "
            f"or {BY_HAND}")


def _kagglehub(dest: Path, force: bool) -> Path:
    try:
        import kagglehub
    except ImportError as exc:
        raise DownloadError("kagglehub is not installed: pip install kagglehub "
                            "(or use method='cli' with the kaggle command)") from exc
    previous = os.environ.get("KAGGLEHUB_CACHE")
    os.environ["KAGGLEHUB_CACHE"] = str(dest)  # read at each call: the archive resumes under dest
    try:
        return Path(kagglehub.dataset_download(KAGGLE_DATASET, force_download=force))
    finally:
        if previous is None:
            os.environ.pop("KAGGLEHUB_CACHE", None)
        else:
            os.environ["KAGGLEHUB_CACHE"] = previous


def _cli(dest: Path, force: bool) -> Path:
    if shutil.which("kaggle") is None:
        raise DownloadError("the kaggle command is not installed: pip install kaggle, "
                            "and put your token in ~/.kaggle/kaggle.json")
    subprocess.run(["kaggle", "datasets", "download", "-d", KAGGLE_DATASET, "-p", str(dest),
                    *(["--force"] if force else [])], check=True)
    return unpack(dest / (KAGGLE_DATASET.split("/")[1] + ".zip"), dest)


FETCHERS = {"kagglehub": _kagglehub, "cli": _cli}


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
    """The folder whose children are patient folders (``<patient>/<0|1>/``); of the Kaggle zip's two
    trees, the top level (the index merges the nested one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")

    def is_patient(p: Path) -> bool:
        return p.name.isdigit() and ((p / "0").is_dir() or (p / "1").is_dir())

    level = [folder]
    for _ in range(4):  # breadth first: the archive's root is near the top
        for d in level:
            if any(is_patient(p) for p in d.iterdir() if p.is_dir()):
                return d.parent if d.name == NESTED else d
        level = [c for d in level for c in sorted(d.iterdir())
                 if c.is_dir() and not is_patient(c)]
    raise DataError(f"no <patient>/<0|1>/ folders found under {folder}")
