"""The notebook runs top to bottom at smoke size, and is stored without outputs."""

import nbformat
import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "train_and_evaluate.ipynb"


def test_notebook_outputs_are_stripped():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


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
