"""Run a notebook top to bottom (helper for the tests)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient


def run_notebook(path: Path) -> nbformat.NotebookNode:
    book = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(book, timeout=300, kernel_name="python3", resources=resources).execute()
    return book
