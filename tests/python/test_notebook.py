"""Runs examples/notebooks/quickstart.ipynb headless, as a reader would, on a small data set.

The notebook runs in a fresh "python3" Jupyter kernel (nbclient + ipykernel, from Debian's
python3-nbclient and python3-ipykernel). Debian's kernelspec starts /usr/bin/python3; it
imports this checkout's dydnn through PYTHONPATH, so the test works the same from the
.venv (made with --system-site-packages) and from /usr/bin/python3.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from dydnn import data

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (apt-get install python3-nbformat)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (apt-get install python3-nbclient)")
pytest.importorskip("ipykernel", reason="the notebook test needs a Jupyter kernel (apt-get install python3-ipykernel)")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "notebooks" / "quickstart.ipynb"


def _outputs(cell):
    return cell.get("outputs", []) if cell.cell_type == "code" else []


@pytest.mark.skipif(not (data.FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").exists(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("no 'python3' Jupyter kernelspec (apt-get install python3-ipykernel)")

    python_dir = str(REPO / "python")
    inherited = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", python_dir + (os.pathsep + inherited if inherited else ""))
    monkeypatch.setenv("DYDNN_QUICKSTART_LIMIT", "600")
    monkeypatch.setenv("DYDNN_QUICKSTART_TEST_LIMIT", "200")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks its inline backend

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the traceback, at the first failing cell

    errors = [(k, o) for k, cell in enumerate(nb.cells) for o in _outputs(cell) if o.output_type == "error"]
    assert not errors, f"cells that raised: {[(k, o.ename, o.evalue) for k, o in errors]}"

    plot_cells = [cell for cell in nb.cells if cell.cell_type == "code" and "accuracy_vs_cost" in cell.source]
    assert len(plot_cells) == 1, "the notebook should have one accuracy_vs_cost cell"
    images = [o for o in _outputs(plot_cells[0]) if "image/png" in o.get("data", {})]
    assert images, f"the accuracy_vs_cost cell showed no image (outputs: {_outputs(plot_cells[0])})"

    demo = [cell for cell in nb.cells if cell.cell_type == "code" and "a_before" in cell.source]
    text = "".join(o.get("text", "") for o in _outputs(demo[0]) if o.output_type == "stream")
    assert "A's logits bitwise unchanged: True" in text, text
