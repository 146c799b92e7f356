"""Builds the teaching notebooks from their sources, with Jupytext.

Every notebook `notebooks/NN_name.ipynb` is generated from
`notebooks/src/NN_name.py`, a Python file in Jupytext's "percent" format
(which VS Code and Spyder also open as cells):

    # %% [markdown]
    # # A title
    # Some prose.

    # %% tags=["parameters"]
    EPOCHS = 3

Jupytext reads the cells; this script adds what every notebook shares, from
one place: the "Open in Colab" badge at the top of the first cell, for the
notebook's own path in `REPO`, and the setup cell (tag `setup`) after it,
which installs tfcv on Colab and does nothing elsewhere. A source that needs
more on Colab has one cell tagged `setup` holding an
`if "google.colab" in sys.modules:` block; its body joins the generated one,
with `{REPO}` and `{BRANCH}` replaced (to fetch a file of the repository).

Stored notebooks hold no outputs, no execution counts and no metadata
besides the Python 3 kernelspec and cell tags, and their cell ids are fixed,
so rebuilding an unchanged source gives an identical file.
`tests/test_notebooks.py` checks that every stored notebook is exactly what
this script generates.

Usage:

    python notebooks/build.py           # rewrite notebooks/*.ipynb
    python notebooks/build.py --check   # exit 1 if any notebook is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

#: The project's GitHub `owner/name`: the Colab badges and the Colab install use it.
REPO = "tfcv-dev/tfcv"
#: The branch the Colab badges open.
BRANCH = "main"
#: The distribution name (setup.cfg's `name`; `tfcv` on PyPI is another project). The import name is `tfcv`.
DISTRIBUTION = "tfcv-keras"

NOTEBOOKS_DIR = Path(__file__).resolve().parent
SOURCE_DIR = NOTEBOOKS_DIR / "src"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}

_COLAB_GUARD = 'if "google.colab" in sys.modules:'
_SETUP = f"""\
# On Colab, install tfcv ({DISTRIBUTION}); anywhere else this cell does nothing.
import sys

{_COLAB_GUARD}
    import subprocess
    from importlib.metadata import version

    # The serving API of Colab's own TensorFlow minor version: an unpinned one
    # would pull a newer TensorFlow over it.
    serving_api = "tensorflow-serving-api==" + ".".join(version("tensorflow").split(".")[:2]) + ".*"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", serving_api, "{DISTRIBUTION} @ git+https://github.com/{REPO}"],
        check=True,
    )"""


def colab_url(notebook_name: str) -> str:
    """The Colab URL that opens `notebooks/<notebook_name>` from GitHub."""
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{notebook_name}"


def colab_badge(notebook_name: str) -> str:
    """The "Open in Colab" badge, as Markdown."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(notebook_name)})"
    )


def setup_source(extra: str = "") -> str:
    """The setup cell: tfcv's install on Colab, then `extra` (a Colab guard's body)."""
    return f"{_SETUP}\n{extra}" if extra else _SETUP


def sources() -> list[Path]:
    """The notebook sources, in order."""
    return sorted(SOURCE_DIR.glob("[0-9][0-9]_*.py"))


def notebook_path(source: Path) -> Path:
    return NOTEBOOKS_DIR / f"{source.stem}.ipynb"


def _extra_setup(cell, source: Path) -> str:
    lines = cell.source.splitlines()
    if not lines or lines[0] != _COLAB_GUARD or any(line and not line.startswith("    ") for line in lines[1:]):
        raise ValueError(
            f"{source.name}: a cell tagged 'setup' holds only an `{_COLAB_GUARD}` block "
            "(the install of tfcv is generated)."
        )
    # `{REPO}` and `{BRANCH}` in the block (a file to fetch from the repository) come from here too.
    return "\n".join(lines[1:]).replace("{REPO}", REPO).replace("{BRANCH}", BRANCH)


def build_notebook(source: Path) -> nbformat.NotebookNode:
    """The notebook generated from one source file."""
    name = notebook_path(source).name
    nb = jupytext.reads(source.read_text(encoding="utf-8"), fmt="py:percent")
    cells = []
    extra = ""
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if "setup" in tags:
            if extra:
                raise ValueError(f"{source.name}: more than one cell tagged 'setup'")
            extra = _extra_setup(cell, source)
            continue
        cell.metadata = {"tags": tags} if tags else {}
        cells.append(cell)
    if not cells or cells[0].cell_type != "markdown":
        raise ValueError(f"{source.name}: the first cell must be Markdown (the title and what the reader will learn)")
    cells[0].source = f"{colab_badge(name)}\n\n{cells[0].source}"
    setup = nbformat.v4.new_code_cell(setup_source(extra))
    setup.metadata = {"tags": ["setup"]}
    cells.insert(1, setup)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": dict(KERNELSPEC)}
    for index, cell in enumerate(cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        # Stable ids: rebuilding an unchanged source gives an identical file.
        cell.id = f"{source.stem[:2]}-{index:03d}"
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def render(nb: nbformat.NotebookNode) -> str:
    """The notebook as the text stored in the repository."""
    return nbformat.writes(nb, version=4) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the notebooks are up to date")
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        target = notebook_path(source)
        text = render(build_notebook(source))
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        stale.append(target.name)
        if not args.check:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(NOTEBOOKS_DIR.parent)}")
    if args.check and stale:
        print(f"stale notebooks (run python notebooks/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
