"""The example notebook runs end to end against a results folder made by the synthetic helper."""

import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient
from synthetic import make_synthetic_results

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "compare_variants.ipynb"


@pytest.fixture
def this_python_kernel(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that runs the interpreter running pytest.

    An installed ``python3`` spec may start a bare ``python`` from PATH without ``ablate``; specs
    under JUPYTER_PATH take precedence over every other location.
    """
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return sys.executable


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_notebook_executes_against_a_results_folder(tmp_path, monkeypatch, this_python_kernel):
    folder = tmp_path / "results"
    make_synthetic_results(folder, {"tau_sampling": 0.4}, noise_sd=0.05, seeds=range(2), steps=[1, 4], metrics=["w2"])
    monkeypatch.setenv("ABLATE_RESULTS", str(folder))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend returns PNGs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "\n".join(str(out.get("data", {}).get("text/plain", out.get("text", ""))) for out in outputs)
    assert "tau_sampling:tau2_weight" in text and "seed_paired_t (2 seeds" in text
    assert "seeds_for_10pct" in text  # the power table
    assert "synthetic: 34 trials" in text
    assert any("image/png" in out.get("data", {}) for out in outputs)
