"""helpers.tools.bench: the tables' rows, run on a small generated set (figures are not asserted)."""
import re

from helpers.tools import bench
from helpers.data.demo import make_demo


def test_full_table_measures_every_stage_on_a_given_folder(tmp_path, capsys):
    make_demo(tmp_path / "demo", n_patients=4, seed=1)
    rows = bench.table(tmp_path / "demo", steps=3, repeats=1)
    names = [r[0] for r in rows]
    assert names == ["index all files", "pack into the array file", "reload the pack into memory",
                     "the whole set in memory (uint8)", "tf.data from PNG, one pass", "tf.data from the pack, one pass",
                     "CancerNet epoch, fed by the pack", "CancerNet epoch, model alone", "the same input pipeline, no model",
                     "peak memory of this process"]
    values = dict((r[0], r[1]) for r in rows)
    assert re.fullmatch(r"[\d.]+ s \([\d,]+ files/s\)", values["index all files"])
    assert re.fullmatch(r"[\d,]+ s \([\d,]+ img/s\)", values["CancerNet epoch, model alone"])
    assert float(values["the whole set in memory (uint8)"].split()[0]) < 0.1
    bench.print_table(rows)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("measure") and len(printed) == 2 + len(rows)
    # make bench DATA_DIR=...: the input pipelines alone, with a PIL loop, on a sample of the folder
    rows = bench.table(tmp_path / "demo", sample=50, train=False)
    assert [r[0] for r in rows] == ["index all files", "PIL loop into NumPy", "pack into the array file",
                                    "reload the pack into memory", "the whole set in memory (uint8)",
                                    "tf.data from PNG, best of 2", "tf.data from the pack, best of 2"]
    assert rows[1][2] == f"50 patches of {tmp_path / 'demo'}"
