"""The teaching notebooks in notebooks/: how they are stored, how they open, and that they run.

Every notebook is generated from a readable source in notebooks/src/ by
notebooks/build.py (Jupytext, plus the Colab badge and setup cell that
every notebook shares, written in one place). The storage policy, checked here, is: no outputs, no
execution counts, no metadata besides the Python 3 kernelspec and cell tags,
nothing that names the machine that wrote it, and exactly what the build
script generates (so the source and the notebook never drift apart).

Every notebook opens with an "Open in Colab" badge for its own path, a
statement of what the reader will learn, a setup cell (tag `setup`) that
installs tfcv on Colab and does nothing elsewhere, and a parameters cell
(tag `parameters`) that shrinks the work when `TFCV_NOTEBOOK_FAST=1`. The
slow tests execute every notebook top to bottom in that fast mode with
nbclient, in a temporary working directory, and fail on any cell error.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = [
    "01_cross_validation.ipynb",
    "02_model_builder_and_augmentation.ipynb",
    "03_ensembles_and_uncertainty.ipynb",
    "04_export_and_serve.ipynb",
    "05_tfds_and_scale.ipynb",
    "06_text_classification.ipynb",
]
# Generous: a cell that trains several folds can take minutes on a loaded CI machine.
CELL_TIMEOUT = 900


def _load_build_script():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_script()
NAMES = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def tagged(nb, tag: str) -> list[tuple[int, nbformat.NotebookNode]]:
    return [(i, cell) for i, cell in enumerate(nb.cells) if tag in cell.metadata.get("tags", [])]


def code_cells(nb) -> list[tuple[int, nbformat.NotebookNode]]:
    return [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]


# ----------------------------------------------------------- the collection


def test_the_notebooks_exist_each_with_its_source():
    assert NAMES == EXPECTED
    assert [build.notebook_path(source).name for source in build.sources()] == EXPECTED


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_exactly_what_its_source_generates(name):
    source = build.SOURCE_DIR / f"{Path(name).stem}.py"
    stored = (NOTEBOOKS / name).read_text(encoding="utf-8")
    assert stored == build.render(build.build_notebook(source)), (
        f"{name} differs from notebooks/src/{source.name}: edit the source and run "
        "`python notebooks/build.py`"
    )


@pytest.mark.parametrize("source", build.sources(), ids=lambda path: path.name)
def test_badge_and_install_are_written_in_one_place(source):
    # The build script writes them for every notebook; a copy in a source would drift.
    text = source.read_text(encoding="utf-8")
    assert "colab-badge" not in text and "colab.research.google.com" not in text
    assert "git+https://github.com" not in text and "pip install" not in text


# --------------------------------------------------------- storage policy


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs_or_machine_details(name):
    raw = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    assert raw["metadata"] == {"kernelspec": build.KERNELSPEC}
    for cell in raw["cells"]:
        assert set(cell["metadata"]) <= {"tags"}, cell["metadata"]
        assert "attachments" not in cell
        if cell["cell_type"] == "code":
            assert cell["outputs"] == []
            assert cell["execution_count"] is None
    text = "\n".join("".join(cell["source"]) for cell in raw["cells"])
    assert str(ROOT) not in text
    assert str(Path.home()) not in text
    # No absolute paths of anyone's machine: the notebooks work relative to their directory.
    assert not re.search(r"(?<![\w.:/])/(home|Users|root|tmp|work|var|private|mnt)/", text)
    assert not re.search(r"\b[A-Za-z]:\\(Users|Windows|Program Files)\b", text)


# ------------------------------------------------------------- structure


@pytest.mark.parametrize("name", NAMES)
def test_notebook_opens_with_colab_badge_title_and_what_you_will_learn(name):
    first = read(name).cells[0]
    assert first.cell_type == "markdown"
    url = f"https://colab.research.google.com/github/{build.REPO}/blob/{build.BRANCH}/notebooks/{name}"
    assert f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})" in first.source
    assert re.search(r"^# \S", first.source, re.MULTILINE), "a title"
    paragraphs = [p for p in first.source.split("\n\n") if not p.lstrip().startswith(("#", "[!["))]
    assert any(len(p) > 300 and "you will" in p for p in paragraphs), "a paragraph on what the reader will learn"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_setup_cell_installs_tfcv_on_colab_only(name):
    nb = read(name)
    setup = tagged(nb, "setup")
    assert len(setup) == 1, "exactly one cell tagged 'setup'"
    index, cell = setup[0]
    assert index == code_cells(nb)[0][0], "the setup cell is the first code cell"
    tree = ast.parse(cell.source)
    guards = [node for node in tree.body if isinstance(node, ast.If)]
    others = [node for node in tree.body if not isinstance(node, (ast.If, ast.Import, ast.ImportFrom))]
    assert not others, "outside the Colab guard the cell only imports"
    assert len(guards) == 1
    assert ast.unparse(guards[0].test) == "'google.colab' in sys.modules"
    assert not guards[0].orelse
    installs = [
        node for node in ast.walk(guards[0])
        if isinstance(node, ast.Constant) and node.value == f"{build.DISTRIBUTION} @ git+https://github.com/{build.REPO}"
    ]
    assert installs, "pip installs tfcv from the repository"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_parameters_cell_reads_the_fast_mode_variable(name):
    nb = read(name)
    parameters = tagged(nb, "parameters")
    assert len(parameters) == 1, "exactly one cell tagged 'parameters'"
    index, cell = parameters[0]
    assert cell.cell_type == "code"
    assert 'os.environ.get("TFCV_NOTEBOOK_FAST") == "1"' in cell.source
    tree = ast.parse(cell.source)
    assigned = {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
                if isinstance(target, ast.Name)}
    assert {"FAST", "FOLDS", "EPOCHS", "SEED"} <= assigned
    later = [i for i, c in code_cells(nb) if "import tfcv" in c.source]
    assert later and index < later[0], "the parameters come before the work"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_ends_with_exercises(name):
    last = read(name).cells[-1]
    assert last.cell_type == "markdown"
    exercises = last.source.split("## Exercises", 1)
    assert len(exercises) == 2
    assert re.search(r"^1\. ", exercises[1], re.MULTILINE) and re.search(r"^3\. ", exercises[1], re.MULTILINE)


# ------------------------------------------------------------- execution


class _ThisInterpreter(KernelSpecManager):
    """Resolves the notebooks' `python3` kernel to the interpreter running the tests.

    A user-level `python3` kernelspec may point at another Python; the notebooks
    must run against the tfcv installed here.
    """

    def get_kernel_spec(self, kernel_name):
        assert kernel_name == build.KERNELSPEC["name"]
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=build.KERNELSPEC["display_name"],
            language="python",
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_in_fast_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TFCV_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # ipykernel's debugger warning
    nb = read(name)
    kernel_manager = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_ThisInterpreter())
    client = NotebookClient(
        nb,
        km=kernel_manager,
        timeout=CELL_TIMEOUT,
        # The working directory: whatever a notebook writes (runs, models, datasets) lands here.
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    finally:
        # nbclient shuts down only kernels it created itself; this one is ours,
        # and a kernel left running keeps its TensorFlow threads busy for the
        # rest of the suite.
        if kernel_manager.has_kernel:
            asyncio.run(kernel_manager.shutdown_kernel(now=True))
    executed = [cell for _, cell in code_cells(nb)]
    assert all(cell.execution_count for cell in executed), "every code cell ran"
    errors = [output for cell in executed for output in cell.outputs if output.output_type == "error"]
    assert not errors
