"""Execute every notebook in order through papermill, keep going past failures,
and close with a summary: notebook, status, seconds (and the failing cell)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import GENERATED, PROFILES, ROOT
from ..data.source import default_data_dir

KERNEL = "idc-notebooks"


@dataclass
class Outcome:
    notebook: str
    status: str  # "ok" or "failed"
    seconds: float
    detail: str = ""


def notebooks_in(folder) -> list[Path]:
    """The numbered notebooks of ``folder``, in order (NN_topic.ipynb)."""
    found = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no NN_*.ipynb notebooks in {folder}")
    return found


def _failure(exc) -> str:
    """Where and why: cell numbers count from 0 in the executed copy (papermill adds a parameters cell)."""
    cell, count = getattr(exc, "cell_index", None), getattr(exc, "exec_count", None)
    where = "before any cell" if cell is None else f"cell {cell}" + (f" (In [{count}])" if count is not None else "")
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    code = f" `{source[0][:60]}`" if source else ""
    ename, evalue = getattr(exc, "ename", type(exc).__name__), str(getattr(exc, "evalue", exc)).strip()
    return f"{where}{code}: {ename}: {evalue.splitlines()[0] if evalue else ''}"[:300]


def run_all(notebooks, out_dir, parameters: dict, kernel: str = KERNEL, progress: bool = True) -> list[Outcome]:
    """Run each notebook into ``out_dir``; a failure is recorded and the next one runs. The executed
    copy of a failed notebook is still written (with the error), so its outputs up to the failing
    cell can be read."""
    import papermill as pm

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    outcomes = []
    for i, nb in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {nb.name}", flush=True)
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(Path(out_dir) / nb.name), parameters=parameters, kernel_name=kernel,
                                cwd=str(nb.parent), progress_bar=progress, log_output=False)
            outcome = Outcome(nb.name, "ok", time.perf_counter() - start)
        except Exception as exc:  # one notebook's failure must not stop the series
            outcome = Outcome(nb.name, "failed", time.perf_counter() - start, _failure(exc))
        print(f"    {outcome.status} in {outcome.seconds:.1f} s {outcome.detail}", flush=True)
        outcomes.append(outcome)
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    width = max(len(o.notebook) for o in outcomes)
    failed = [o for o in outcomes if o.status != "ok"]
    return "\n".join([f"{'notebook':<{width}}  status  seconds", "-" * (width + 17),
                      *(f"{o.notebook:<{width}}  {o.status:<6}  {o.seconds:7.1f}" for o in outcomes),
                      f"{'total':<{width}}  {len(outcomes) - len(failed)}/{len(outcomes)} ok "
                      f"{sum(o.seconds for o in outcomes):7.1f}",
                      *(f"FAILED {o.notebook}: {o.detail}" for o in failed)])


def kernel_available(name: str) -> bool:
    from jupyter_client.kernelspec import KernelSpecManager

    return name in KernelSpecManager().find_kernel_specs()


def main(profile: str, data_dir: str | None, out_dir=None, notebooks_dir=None,
         only: list[str] | None = None, kernel: str | None = None, thyroid_dir: str | None = None) -> int:
    """``make run-all``: the notebooks get the papermill parameters PROFILE, DATA_DIR (and THYROID_DIR)."""
    notebooks = notebooks_in(notebooks_dir or ROOT / "notebooks")
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) for o in only)]
    # The data folder is resolved once, here: with PROFILE=full and no DATA_DIR that downloads the
    # Kaggle set (or finds it checked), and a failure (offline, a partial set) is one line before
    # any notebook runs, not the same traceback in each of them.
    try:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
        data_dir = default_data_dir(profile, data_dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kernel = kernel or (KERNEL if kernel_available(KERNEL) else "python3")
    params = {"PROFILE": profile,
              "DATA_DIR": GENERATED if str(data_dir) == GENERATED else str(Path(data_dir).expanduser().resolve())}
    if thyroid_dir:  # the thyroid notebooks (16, 17) read THYROID_DIR; the others ignore it
        params["THYROID_DIR"] = str(Path(thyroid_dir).expanduser().resolve())
    out_dir = Path(out_dir or ROOT / "outputs" / "notebooks")
    print(f"running {len(notebooks)} notebooks, profile {profile}, data {params['DATA_DIR']}, kernel {kernel}")
    outcomes = run_all(notebooks, out_dir, params, kernel=kernel)
    print(f"\n{summary(outcomes)}\nexecuted notebooks: {out_dir}")
    return 0 if all(o.status == "ok" for o in outcomes) else 1
