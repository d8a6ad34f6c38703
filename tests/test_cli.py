import json
import subprocess
import sys

import numpy as np
from conftest import ROOT


def helpers_cli(*args):
    return subprocess.run([sys.executable, "-m", "helpers", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_make_demo_then_index_then_pack(tmp_path):
    out = helpers_cli("make-demo", tmp_path / "demo", "--patients", 3, "--seed", 5)
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["patients"] == 3 and made["generated"] is True

    out = helpers_cli("index", tmp_path / "demo")
    summary = json.loads(out.stdout)
    assert summary["unique_patches"] == made["patches"] and summary["positives"] == made["positives"]
    assert summary["small_patches"] == made["small_patches"] and summary["skipped_total"] == 0

    out = helpers_cli("pack", tmp_path / "demo", tmp_path / "cache" / "demo")
    assert out.returncode == 0, out.stderr
    images = np.load(tmp_path / "cache" / "demo.npy", mmap_mode="r")
    assert images.shape == (made["patches"], 50, 50, 3) and images.dtype == np.uint8


def test_make_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    out = helpers_cli("make-demo", tmp_path / "mine", "--patients", 2)
    assert out.returncode == 2 and str(tmp_path / "mine") in out.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_unknown_command_is_a_usage_error():
    out = helpers_cli("train-everything")
    assert out.returncode == 2 and "invalid choice" in out.stderr
