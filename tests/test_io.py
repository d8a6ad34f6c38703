"""io.process_map: order, processes, and the fallback when TensorFlow is up."""

import os
import subprocess
import sys
import textwrap

from helpers.io import process_map


def _pid_and_square(x):
    return os.getpid(), x * x


def test_process_map_runs_in_other_processes_and_keeps_order():
    # A fresh interpreter: without TensorFlow loaded, the jobs go to forked workers.
    code = textwrap.dedent("""
        import os
        from helpers.io import process_map
        def job(x):
            return os.getpid(), x * x
        out = list(process_map(job, range(40), workers=2, chunksize=3))
        assert [sq for _, sq in out] == [x * x for x in range(40)], out
        pids = {pid for pid, _ in out}
        assert os.getpid() not in pids and len(pids) >= 1, pids
        print(len(out), len(pids))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    count, _ = done.stdout.split()
    assert count == "40"


def test_process_map_stays_here_with_tensorflow_up_or_one_worker(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", object()))
    out = list(process_map(_pid_and_square, range(5), workers=4))
    assert out == [(os.getpid(), x * x) for x in range(5)]
    monkeypatch.delitem(sys.modules, "tensorflow")
    assert list(process_map(_pid_and_square, [3], workers=4)) == [(os.getpid(), 9)]  # one job
    assert list(process_map(_pid_and_square, range(3), workers=1)) == [(os.getpid(), x * x) for x in range(3)]
