import nbformat
import pytest

from helpers.tools import run_all


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("PROFILE = 'x'")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.notebook
def test_a_failure_is_reported_and_the_others_still_run(tmp_path, capsys):
    src = tmp_path / "nb"
    src.mkdir()
    notebook(src / "00_first.ipynb", "open('first.txt', 'w').write(PROFILE)")
    notebook(src / "01_broken.ipynb", "x = 1", "raise ValueError('bad data dir /nowhere')")
    notebook(src / "02_last.ipynb", "open('last.txt', 'w').write(PROFILE)")
    (src / "notes.ipynb").write_text("not numbered: not run")

    found = run_all.notebooks_in(src)
    assert [p.name for p in found] == ["00_first.ipynb", "01_broken.ipynb", "02_last.ipynb"]
    outcomes = run_all.run_all(found, tmp_path / "out", {"PROFILE": "smoke"},
                               kernel="python3", progress=False)
    assert [o.status for o in outcomes] == ["ok", "failed", "ok"]
    assert (src / "first.txt").read_text() == "smoke" and (src / "last.txt").read_text() == "smoke"
    # 0-based in the executed copy, where papermill inserted the injected-parameters cell
    assert outcomes[1].detail.startswith("cell 3 (In [4]) `raise ValueError")
    assert "ValueError: bad data dir /nowhere" in outcomes[1].detail
    for name in ("00_first", "01_broken", "02_last"):
        assert (tmp_path / "out" / f"{name}.ipynb").is_file()
    text = run_all.summary(outcomes)
    assert "2/3 ok" in text
    assert "FAILED 01_broken.ipynb: cell 3" in text

    capsys.readouterr()
    code = run_all.main("smoke", None, out_dir=tmp_path / "out2", notebooks_dir=src,
                        only=["00", "01"], kernel="python3")
    assert code == 1
    printed = capsys.readouterr().out
    assert "[2/2] 01_broken.ipynb" in printed and "02_last" not in printed


def test_an_empty_notebook_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no NN_"):
        run_all.notebooks_in(tmp_path)


def executed(path, title, outputs):
    """A notebook as papermill leaves it: a title cell and one code cell with ``outputs``."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n**What it teaches, in one line.** More.\n\n> a note"),
                nbformat.v4.new_code_cell("x = 1", outputs=outputs)]
    nbformat.write(nb, path)


def test_html_renders_each_executed_notebook_and_an_index(tmp_path):
    from helpers.tools import site

    src = tmp_path / "executed"
    src.mkdir()
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    executed(src / "00_data.ipynb", "00 · Data <b>", [nbformat.v4.new_output("display_data", {"image/png": png})])
    executed(src / "01_eda.ipynb", "01 · EDA", [nbformat.v4.new_output("error", ename="ValueError",
                                                                       evalue="bad", traceback=[])])
    pages = site.render(src, tmp_path / "site")
    assert [p.name for p in pages] == ["00_data.html", "01_eda.html", "index.html"]
    assert png in pages[0].read_text()  # the figure is inside the page
    index = pages[-1].read_text()
    assert '<a href="00_data.html">00 · Data &lt;b&gt;</a>' in index
    assert "What it teaches, in one line." in index and "a note" not in index
    assert '01 · EDA</a> <strong>(failed at cell 1)</strong>' in index
    assert "(failed" not in index.split("01_eda")[0]


def test_html_refuses_notebooks_that_did_not_run(tmp_path):
    from helpers.tools import site

    with pytest.raises(FileNotFoundError, match="run `make run-all` first"):
        site.render(tmp_path, tmp_path / "site")
    executed(tmp_path / "00_data.ipynb", "00", [])
    with pytest.raises(ValueError, match="00_data.ipynb has no outputs"):
        site.render(tmp_path, tmp_path / "site")
    assert not (tmp_path / "site" / "index.html").exists()
