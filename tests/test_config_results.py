import pandas as pd
import pytest

from helpers import config, results
from helpers.data import source
from helpers.io import atomic_path


def test_profile_sets_everything_and_explicit_values_win(tree, tmp_path):
    cfg = source.resolve("smoke", data_dir=tree, output_dir=tmp_path)
    assert cfg.epochs == config.PROFILES["smoke"]["epochs"] and cfg.generated is False
    assert cfg.data_label == "real data: idc"
    full = source.resolve("full", data_dir=tree, output_dir=tmp_path, epochs=3, sample_size=0)
    assert full.epochs == 3 and full.sample_size is None and full.weights == "imagenet"
    assert cfg.figures == tmp_path / "figures"


def test_training_seeds_count_up_from_the_seed(tree, tmp_path):
    cfg = source.resolve("cpu", data_dir=tree, output_dir=tmp_path, seed=7)
    assert cfg.training_seeds() == [7 + i for i in range(cfg.seeds)] and len(cfg.training_seeds()) == cfg.seeds
    assert cfg.training_seeds(3) == [7, 8, 9]


def test_unknown_profile_lists_the_known_ones(tree):
    with pytest.raises(ValueError, match=r"unknown profile 'fast'.*'cpu', 'full', 'smoke'"):
        source.resolve("fast", data_dir=tree)


def test_no_data_dir_means_the_shipped_real_sample(tmp_path):
    for profile in ("smoke", "cpu"):
        cfg = source.resolve(profile, output_dir=tmp_path / "out")
        assert cfg.data_dir == config.ROOT / "data" / "idc-sample" and not cfg.generated
        assert cfg.data_label == "real data: idc-sample"
    assert source.resolve("smoke").sample_size == 1000 and source.resolve("cpu").sample_size is None


def test_generated_means_the_generated_set(tmp_path, monkeypatch):
    monkeypatch.setenv("IDC_DEMO_ROOT", str(tmp_path / "demo"))
    cfg = source.resolve("smoke", data_dir="generated", output_dir=tmp_path / "out")
    assert cfg.generated and cfg.data_label == "generated demo data"
    assert cfg.data_dir == tmp_path / "demo" / "idc-40p"
    assert (cfg.data_dir / "GENERATED.txt").is_file()


def test_a_stale_generated_set_is_replaced_but_a_foreign_folder_is_not(tmp_path):
    stale = tmp_path / "idc-3p"
    stale.mkdir()
    (stale / "GENERATED.txt").write_text("an older generator")
    (stale / "generated.json").write_text("{}")
    summary = source.ensure_demo(stale, 3)
    assert summary["patients"] == 3 and "older" not in (stale / "GENERATED.txt").read_text()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "a.txt").write_text("keep")
    with pytest.raises(ValueError, match="mine"):
        source.ensure_demo(foreign, 3)
    assert (foreign / "a.txt").read_text() == "keep"


def test_registry_appends_rows_with_the_union_of_columns(tree, tmp_path):
    cfg = source.resolve("smoke", data_dir=tree, output_dir=tmp_path)
    results.record(cfg, "00_data", [{"run": "a", "patches": 10}], split="none")
    table = results.record(cfg, "02_cnn", [{"run": "b", "f1": 0.5}, {"run": "c", "f1": 0.7}],
                           split="test, by patient")
    assert list(table["run"]) == ["a", "b", "c"]
    assert list(table.columns[:7]) == results.FIRST
    on_disk = results.load(tmp_path)
    assert len(on_disk) == 3 and pd.isna(on_disk.loc[0, "f1"]) and on_disk.loc[2, "f1"] == 0.7
    assert on_disk.loc[1, "split"] == "test, by patient"
    with pytest.raises(ValueError, match="no result rows"):
        results.record(cfg, "x", [], split="none")


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "r.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_a_corrupt_registry_is_moved_aside_and_a_new_one_starts(tree, tmp_path):
    cfg = source.resolve("smoke", data_dir=tree, output_dir=tmp_path)
    (tmp_path / "results.csv").write_text('time,notebook\n"unclosed,quote\nx,y,z,w\n')
    with pytest.warns(UserWarning, match=r"results\.csv could not be read.*moved aside to results\.corrupt-"):
        table = results.record(cfg, "00_data", [{"run": "a"}], split="none")
    assert list(table["run"]) == ["a"]
    aside = list(tmp_path.glob("results.corrupt-*.csv"))
    assert len(aside) == 1 and "unclosed" in aside[0].read_text()


def test_atomic_outputs_get_the_mode_a_plain_open_gives(tmp_path):
    import os

    from helpers.io import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "model.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "model.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o644
