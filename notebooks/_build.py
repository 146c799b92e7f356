"""Builds the teaching notebooks from their readable sources.

Every notebook `notebooks/NN_name.ipynb` is generated from
`notebooks/src/NN_name.py`, a Python file in the "percent" format that
Jupytext, VS Code and Spyder read as cells:

    # %% [markdown]
    # # A title
    # Some prose.

    # %% tags=["parameters"]
    EPOCHS = 3

Markdown cells are the comment lines after `# %% [markdown]`, without
their leading `# `. Code cells are the lines after `# %%`, optionally
tagged; as in Jupytext, IPython magics are written commented out
(`# %matplotlib inline`) so that the source stays valid Python, and are
uncommented in the notebook. `{{REPO}}`, `{{BRANCH}}` and `{{COLAB_BADGE}}` are replaced by the
values below, so the GitHub location of the project is written in one
place: `REPO`.

Stored notebooks hold no outputs, no execution counts and no metadata
besides the Python 3 kernelspec and cell tags, so they diff cleanly and
carry nothing from the machine that built them. `tests/test_notebooks.py`
checks that every stored notebook is exactly what this script generates.

Usage:

    python notebooks/_build.py           # rewrite notebooks/*.ipynb
    python notebooks/_build.py --check   # exit 1 if any notebook is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

#: The project's GitHub `owner/name`: the Colab badges and the Colab install use it.
REPO = "tfcv-dev/tfcv"
#: The branch the Colab badges open.
BRANCH = "main"

NOTEBOOKS_DIR = Path(__file__).resolve().parent
SOURCE_DIR = NOTEBOOKS_DIR / "src"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}

_CELL_MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")
_COMMENTED_MAGIC = re.compile(r"^# (%[a-z]\w*\b.*)$")


def colab_url(notebook_name: str) -> str:
    """The Colab URL that opens `notebooks/<notebook_name>` from GitHub."""
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{notebook_name}"


def colab_badge(notebook_name: str) -> str:
    """The "Open in Colab" badge, as Markdown."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(notebook_name)})"
    )


def sources() -> list[Path]:
    """The notebook sources, in order."""
    return sorted(SOURCE_DIR.glob("[0-9][0-9]_*.py"))


def notebook_path(source: Path) -> Path:
    return NOTEBOOKS_DIR / f"{source.stem}.ipynb"


def parse_cells(text: str) -> list[tuple[str, list[str], str]]:
    """Splits a percent-format source into `(cell_type, tags, source)` cells."""
    cells: list[tuple[str, list[str], list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("# %%"):
            match = _CELL_MARKER.match(line)
            if match is None:
                raise ValueError(f"line {number}: malformed cell marker {line!r}")
            tags = json.loads(match.group("tags")) if match.group("tags") else []
            cells.append(("markdown" if match.group("markdown") else "code", tags, []))
        elif cells:
            cells[-1][2].append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"line {number}: code before the first cell marker")
    parsed = []
    for cell_type, tags, lines in cells:
        if cell_type == "markdown":
            stripped = []
            for line in lines:
                if line and not line.startswith("#"):
                    raise ValueError(f"markdown cell line {line!r} is not a comment")
                stripped.append(line[2:] if line.startswith("# ") else line[1:])
            lines = stripped
        else:
            lines = [_COMMENTED_MAGIC.sub(r"\1", line) for line in lines]
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        parsed.append((cell_type, tags, "\n".join(lines)))
    return parsed


def build_notebook(source: Path) -> nbformat.NotebookNode:
    """The notebook generated from one source file."""
    name = notebook_path(source).name
    replacements = {"{{REPO}}": REPO, "{{BRANCH}}": BRANCH, "{{COLAB_BADGE}}": colab_badge(name)}
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC)}
    for index, (cell_type, tags, text) in enumerate(parse_cells(source.read_text(encoding="utf-8"))):
        for key, value in replacements.items():
            text = text.replace(key, value)
        if cell_type == "markdown":
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
        # Stable ids: rebuilding an unchanged source gives an identical file.
        cell.id = f"{source.stem[:2]}-{index:03d}"
        cell.metadata = {"tags": tags} if tags else {}
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


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
        print(f"stale notebooks (run python notebooks/_build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
