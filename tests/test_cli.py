import json

import numpy as np
from conftest import helpers_cli, helpers_here

from helpers.recipes import recipe


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
    out = helpers_here("pretrain-breakhis", "--data-dir", tmp_path / "bh", "--model", "cancernet",
                      "--out", tmp_path / "models" / "bh.keras", "--epochs", 1)
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)  # stdout holds the JSON alone; Keras' epoch lines go to stderr
    assert done["path"] == str(tmp_path / "models" / "bh.keras") and done["trained"] is True
    assert (tmp_path / "models" / "bh.keras").is_file() and (tmp_path / "models" / "bh.json").is_file()
    assert done["settings"]["epochs"] == 1 and done["generated"] is True
    assert set(done["patches"]) == {"train", "val", "test"}
    val = done["val"]  # scored on every validation patch, the counts agreeing with the scores
    assert val["n"] == done["patches"]["val"] == val["tp"] + val["fp"] + val["fn"] + val["tn"]
    assert val["accuracy"] == pytest.approx((val["tp"] + val["tn"]) / val["n"])
    assert val["threshold"] == pytest.approx(done["threshold"])
    assert json.loads((tmp_path / "models" / "bh.json").read_text())["val"] == val  # what a rerun reads back


# --- train / evaluate: every patch of the folder, and the counts said and kept --------------

from conftest import patch_path, write_patch  # noqa: E402

# A hand-made tree larger than the smoke profile's cap of 1,000 patches, with known counts per
# patient: (patient, patches, IDC-positive). The test patient has no IDC, so its ROC-AUC is undefined.
PATIENTS = ((10, 300, 100), (11, 250, 50), (12, 200, 80), (13, 150, 30), (14, 120, 40), (15, 80, 0))
LISTS = {"train": (10, 11, 12, 13), "val": (14,), "test": (15,)}


def _no_nan(constant):
    raise AssertionError(f"{constant} in the JSON output")


def _strict_json(text):
    return json.loads(text, parse_constant=_no_nan)


@pytest.fixture(scope="module")
def counted_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("counted") / "idc"
    for patient, patches, positives in PATIENTS:
        for i in range(patches):
            label = int(i < positives)
            write_patch(patch_path(root, patient, 1 + 50 * i, 1, label), colour=(180 + i % 9, 90 + 70 * label, 150))
    lists = root.parent / "lists"
    lists.mkdir()
    for name, ids in LISTS.items():
        (lists / f"cases_{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root, lists


def _printed_counts(stderr) -> dict:
    """{split: (patients, patches, positives)} from the table printed on stderr."""
    rows = {}
    for line in stderr.splitlines():
        cells = line.split()
        if len(cells) == 5 and cells[0] in ("train", "val", "test", "total"):
            rows[cells[0]] = tuple(int(c) for c in cells[1:4])
    return rows


@pytest.mark.slow
def test_train_by_default_learns_from_every_patch_and_says_so(counted_tree, tmp_path):
    root, lists = counted_tree
    out = helpers_here("train", "--model", "cancernet", "--data-dir", root, "--out", tmp_path / "m",
                      "--split-dir", lists, "--epochs", 1)
    assert out.returncode == 0, out.stderr[-2000:]
    trained = _strict_json(out.stdout)  # stdout is the JSON alone, and valid JSON
    assert trained == _strict_json((tmp_path / "m" / "model.json").read_text())
    assert trained["counts"] == {
        "train": {"patients": 4, "patches": 900, "positives": 260, "positive_share": 0.289},
        "val": {"patients": 1, "patches": 120, "positives": 40, "positive_share": 0.333},
        "test": {"patients": 1, "patches": 80, "positives": 0, "positive_share": 0.0},
    }
    assert trained["max_patches"] is None and trained["patches_available"] == 1100 and trained["profile"] is None
    # no training flags: the recipe the cross-validations chose, with this model
    assert trained["recipe"]["name"] == "best" and trained["recipe"]["version"] == recipe.BEST_VERSION
    assert trained["card"]["what"].startswith(f"best v{recipe.BEST_VERSION} ") and "lockbox" in trained["card"]["scored_on"]
    assert trained["model"] == "cancernet" and trained["recipe"]["options"]["epochs"] == 1
    assert trained["test"]["roc_auc"] is None  # one class among the test patches: undefined, not NaN
    assert _printed_counts(out.stderr) == {"train": (4, 900, 260), "val": (1, 120, 40), "test": (1, 80, 0),
                                           "total": (6, 1100, 300)}
    assert f"using all 1,100 usable patches of {root}" in out.stderr
    assert out.stderr.index("using all") < out.stderr.index("val_loss")  # said before the epoch line

    scored = helpers_here("evaluate", "--model-path", tmp_path / "m", "--data-dir", root)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert _strict_json(scored.stdout)["counts"] == {
        "test": {"patients": 6, "patches": 1100, "positives": 300, "positive_share": 0.273}}
    assert _printed_counts(scored.stderr) == {"test": (6, 1100, 300), "total": (6, 1100, 300)}


@pytest.mark.slow
def test_train_with_model_flags_and_a_cap_says_what_it_left_out(counted_tree, tmp_path):
    root, lists = counted_tree
    args = ("train", "--model", "cancernet", "--data-dir", root, "--out", tmp_path / "m", "--split-dir", lists,
            "--epochs", 1, "--optimizer", "adam", "--label-smoothing", 0.1, "--max-patches", 220)
    out = helpers_here(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    trained = _strict_json(out.stdout)  # Keras' epoch lines went to stderr
    assert "val_loss" in out.stderr and trained["recipe"]["name"] == "best[label_smoothing=0.1]"
    options = trained["recipe"]["options"]  # the flags are options of the recipe best
    assert options["optimizer"] == "adam" and options["label_smoothing"] == 0.1 and options["epochs"] == 1
    assert trained["max_patches"] == 220 and "card" not in trained  # the card is best's, not a variant's
    # the cap shared among the splits in proportion to their sizes, each split's IDC share kept near its own
    assert {name: c["patches"] for name, c in trained["counts"].items()} == {"train": 180, "val": 24, "test": 16}
    assert trained["train_patches"] == 180 and trained["val_patches"] == 24
    assert f"using 220 of the 1,100 usable patches of {root}: capped at 220 patches" in out.stderr
    assert _printed_counts(out.stderr)["total"] == (6, 220, sum(c["positives"] for c in trained["counts"].values()))

    # killed after the model was saved, before model.json: the rerun loads the model, trains nothing
    (tmp_path / "m" / "model.json").unlink()
    again = helpers_here(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "member 0 (cancernet) trained before, loaded" in again.stderr and "val_loss" not in again.stderr
    assert _strict_json(again.stdout)["test"] == trained["test"] and (tmp_path / "m" / "model.json").is_file()


@pytest.mark.parametrize("args, message", [
    (("--max-patches", 1), "--max-patches must be 0 (all patches) or at least 2, got 1"),
    (("--sample-size", -5), "--max-patches must be 0 (all patches) or at least 2, got -5"),  # the old name
    (("--profile", "tiny"), "unknown profile 'tiny'; choose one of smoke, cpu, full"),
    (("--lr", 0.1, "--set", "learning_rate=0.2"),
     "--set and --lr both set the recipe option learning_rate; give it once"),
    (("--l2", 0.1, "--set", "build={}"), "--set and --build both set the recipe option build"),
    (("--build", "l2"), "--build takes KEY=VALUE, got 'l2'"),
])
def test_bad_train_values_are_one_clear_line(tmp_path, args, message):
    out = helpers_cli("train", "--model", "cancernet", "--data-dir", tmp_path, "--out", tmp_path / "m", *args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith(f"error: {message}")


@pytest.mark.parametrize("args, message", [
    (("--model", "resnet9"), "recipe model 'resnet9' is not in helpers.models.MODELS"),
    (("--model", "cancernet", "--fit", 'optimizer_options={"clipnorm": 1}'),
     "--fit optimizer_options=...: 'optimizer_options' is not a recipe option; --fit sets recipe options"),
    (("--recipe", "original", "--set", "colour=1"), "unknown recipe option 'colour'"),
    (("--recipe", "original", "--augment", "sepia"), "recipe option augment='sepia' is not one of none"),
    (("--recipe", "original", "--weights", "imagenet", "--set", "pretrain=breakhis"),
     "recipe 'original': weights='imagenet' and pretrain='breakhis' both give the starting weights"),
])
def test_bad_recipe_options_are_one_clear_line_before_any_data_is_read(tmp_path, args, message):
    out = helpers_here("train", "--data-dir", tmp_path, "--out", tmp_path / "m", *args)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert not (tmp_path / "m").exists()
    missing = helpers_cli("train", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "m", *args)
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"error: data directory {tmp_path / 'nowhere'} does not exist")


def test_each_training_flag_is_short_for_a_recipe_option():
    from helpers.__main__ import OPTION_FLAGS, _parser, _train_options

    args = _parser().parse_args([
        "train", "--model", "vgg_style", "--data-dir", "D", "--out", "O", "--optimizer", "sgd", "--lr", "0.01",
        "--weights", "imagenet", "--fine-tune-at", "3", "--image-size", "64", "--augment", "histology",
        "--dropout", "0.2", "--l2", "0.001", "--kernel-size", "5", "--label-smoothing", "0.1", "--recalibrate-bn", "0",
        "--build", "downsample=stride", "filters=[[16],[32,32]]", "--fit", "patience=3", "--set", "ensemble=2"])
    options, said = _train_options(args)
    assert said == {"ensemble": "--set", "patience": "--fit", "build": "--build",
                    **{option: f"--{flag.replace('_', '-')}" for flag, option in OPTION_FLAGS.items()}}
    assert options == {"ensemble": 2, "patience": 3, "model": "vgg_style", "optimizer": "sgd", "learning_rate": 0.01,
                       "weights": "imagenet", "fine_tune_at": 3, "image_size": 64, "augment": "histology",
                       "label_smoothing": 0.1, "recalibrate_bn": 0,
                       "build": {"dropout": 0.2, "l2": 0.001, "kernel_size": 5, "downsample": "stride",
                                 "filters": [[16], [32, 32]]}}
    trained = recipe.get("best", **options)
    assert {k: getattr(trained, k) for k in options} == options
    assert trained.name.startswith("best[ensemble=2,patience=3,model=vgg_style,")
    assert trained.version == recipe.BEST_VERSION
    same = _parser().parse_args(["train", "--model", "cancernet", "--data-dir", "D", "--out", "O",
                                 "--lr", "0.01", "--set", "learning_rate=0.01"])
    assert _train_options(same)[0] == {"model": "cancernet", "learning_rate": 0.01}  # the same value twice: no conflict


def test_no_cap_unless_asked():
    from argparse import Namespace

    from helpers.__main__ import _budget

    given = lambda **kw: Namespace(**{"max_patches": None, "profile": None, "epochs": None, **kw})  # noqa: E731
    assert _budget(given()) == (None, None)  # every patch, the recipe's epochs
    assert _budget(given(max_patches=0)) == (None, None)
    assert _budget(given(max_patches=500, epochs=3)) == (500, 3)
    assert _budget(given(profile="smoke")) == (1000, 2)  # a profile named is a budget asked for
    assert _budget(given(profile="smoke", max_patches=0, epochs=5)) == (None, 5)
    assert _budget(given(profile="cpu")) == (None, 10)


def test_index_says_how_many_patches_and_patients_it_found(tree):
    out = helpers_cli("index", tree)
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith(f"10 usable patches of 2 patients in {tree}, 2 IDC-positive (share 0.200)")


def test_train_refuses_a_split_whose_validation_holds_one_class(tmp_path):
    """Four patients, one with IDC: some split gets no positive patch; train says which and stops
    (before, it trained, chose its checkpoint on a validation ROC-AUC of 0.0 and printed NaN)."""
    root = tmp_path / "idc"
    for patient in range(4):
        for i in range(6):
            label = int(patient == 0 and i < 3)
            write_patch(patch_path(root, 20 + patient, 1 + 50 * i, 1, label), colour=(200, 100, 150 - 90 * label))
    out = helpers_here("train", "--model", "cancernet", "--data-dir", str(root), "--out", str(tmp_path / "m"),
                      "--epochs", "1")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: the ")
    assert "split holds only IDC-negative patches" in out.stderr
    assert not (tmp_path / "m" / "model.json").exists()
