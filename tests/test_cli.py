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


import pytest  # noqa: E402


def test_make_breakhis_demo_prints_its_summary(tmp_path):
    out = helpers_cli("make-breakhis-demo", tmp_path / "bh", "--patients", 3, "--images", 2, "--seed", 4)
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["patients"] == 3 and made["images"] == 6 and made["generated"] is True and made["seed"] == 4
    assert len(list((tmp_path / "bh" / "BreaKHis_v1").rglob("*.png"))) == 6


def test_pretrain_breakhis_refuses_a_missing_folder_and_a_bad_out(tmp_path):
    out = helpers_cli("pretrain-breakhis", "--data-dir", tmp_path / "nope", "--model", "cancernet",
                      "--out", tmp_path / "m.keras")
    assert out.returncode == 2 and "nope" in out.stderr
    out = helpers_cli("pretrain-breakhis", "--data-dir", tmp_path, "--model", "cancernet", "--out", tmp_path / "m.h5")
    assert out.returncode == 2 and ".keras" in out.stderr


@pytest.mark.slow
def test_pretrain_breakhis_saves_a_model_and_prints_its_scores(tmp_path):
    assert helpers_cli("make-breakhis-demo", tmp_path / "bh", "--patients", 10, "--images", 2).returncode == 0
    out = helpers_cli("pretrain-breakhis", "--data-dir", tmp_path / "bh", "--model", "cancernet",
                      "--out", tmp_path / "models" / "bh.keras", "--epochs", 1)
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)  # stdout holds the JSON alone; Keras' epoch lines go to stderr
    assert done["path"] == str(tmp_path / "models" / "bh.keras") and done["trained"] is True
    assert (tmp_path / "models" / "bh.keras").is_file() and (tmp_path / "models" / "bh.json").is_file()
    assert done["settings"]["epochs"] == 1 and done["generated"] is True
    assert set(done["patches"]) == {"train", "val", "test"} and 0 <= done["val"]["accuracy"] <= 1
