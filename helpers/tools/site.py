"""The lessons as a static site: ``make html`` renders the notebooks that the last
``make run-all`` executed (outputs/notebooks/) into HTML pages with their figures,
and an index page, so that a student can read them without running anything."""

from __future__ import annotations

import html
from pathlib import Path

import nbformat

from ..io import write_text
from .run_all import notebooks_in


def describe(nb) -> tuple[str, str]:
    """(title, one-line description): the first heading and the paragraph after it, up to its first sentence."""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    lines = [line.strip() for line in first.splitlines()]
    title = next((line.lstrip("# ") for line in lines if line.startswith("#")), "")
    paragraph = []
    for line in (line for line in lines if line and not line.startswith(("#", ">"))):
        paragraph.append(line)
        if line.endswith((".", "**")):
            break
    return title, " ".join(paragraph).replace("**", "")


def failed_cell(nb) -> int | None:
    """The index of the first cell whose output is an error (None: the notebook ran through)."""
    return next((i for i, cell in enumerate(nb.cells)
                 if any(o.get("output_type") == "error" for o in cell.get("outputs", []))), None)


def render(notebooks_dir, out_dir) -> list[Path]:
    """Write one HTML page per executed notebook of ``notebooks_dir`` and ``index.html``."""
    from nbconvert import HTMLExporter

    notebooks_dir, out_dir = Path(notebooks_dir), Path(out_dir)
    try:
        notebooks = notebooks_in(notebooks_dir)
    except FileNotFoundError:
        raise FileNotFoundError(f"no executed notebooks in {notebooks_dir}: run `make run-all` first") from None
    exporter = HTMLExporter(template_name="lab")
    rows, written = [], []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
            raise ValueError(f"{path} has no outputs: it was not executed (run `make run-all`)")
        page = out_dir / f"{path.stem}.html"
        written.append(write_text(page, exporter.from_notebook_node(nb)[0]))
        (title, line), failed = describe(nb), failed_cell(nb)
        status = "" if failed is None else f" <strong>(failed at cell {failed})</strong>"
        rows.append(f'<li><a href="{page.name}">{html.escape(title or path.stem)}</a>{status}'
                    f"<br><small>{html.escape(line)}</small></li>")
    index = ("<!doctype html>\n<meta charset=\"utf-8\">\n<title>The notebooks, as last run</title>\n"
             "<h1>The notebooks, as last run</h1>\n"
             f"<p>Rendered from <code>{html.escape(str(notebooks_dir))}</code>, the executed copies that "
             "<code>make run-all</code> wrote. Each page names its profile and its data.</p>\n"
             "<ol start=\"0\">\n" + "\n".join(rows) + "\n</ol>\n")
    return [*written, write_text(out_dir / "index.html", index)]
