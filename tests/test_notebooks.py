from pathlib import Path

import pytest

from notebooks import run_notebook


@pytest.mark.slow
def test_dataset_notebook_runs_on_synthetic_data(tiny_tree, monkeypatch):
    monkeypatch.setenv("FER_DATA", str(tiny_tree))
    book = run_notebook(Path("notebooks/explore_dataset.ipynb"))
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # counts, sample grid, pixel statistics
    text = "".join(o.get("text", "") for o in outputs)
    assert "imbalance (largest / smallest class): 1.0" in text
