"""The notebook: generated from notebooks/make_notebook.py, stored without outputs, its code valid; it runs top to
bottom at smoke size (a slow test: bash .ci/run-slow)."""

import ast
import subprocess
import sys

import nbformat
import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "train_and_evaluate.ipynb"


def test_notebook_outputs_are_stripped():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


def test_notebook_is_what_its_generator_writes_and_its_code_is_valid(tmp_path):
    """The stored notebook equals make_notebook.py's output; every cell parses, every keras_adtrs import resolves."""
    import importlib

    copy = tmp_path / "make_notebook.py"
    copy.write_text((REPO / "notebooks" / "make_notebook.py").read_text())
    subprocess.run([sys.executable, str(copy)], check=True, capture_output=True)
    assert nbformat.read(tmp_path / "train_and_evaluate.ipynb", as_version=4) == nbformat.read(NOTEBOOK, as_version=4)
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_adtrs"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


@pytest.mark.slow  # about two minutes on 2 cores: bash .ci/run-slow
def test_notebook_runs_at_smoke_size(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("KERAS_ADTRS_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("KERAS_ADTRS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KERAS_ADTRS_NOTEBOOK_OUT", str(tmp_path / "out"))  # pytest's tmp_path, not a leak
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError when any cell fails
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "exported to" in text and "notebook ran in" in text
