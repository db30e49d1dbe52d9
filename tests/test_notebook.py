"""``examples/colab.ipynb`` executes end to end on the small parameters, on the CPU.

The notebook is run by a real Jupyter kernel (``nbclient``) from the repository root,
with the parameters cell followed by an injected one (papermill's convention):
``SMALL = True`` (embedded digits data, ``--config tiny``, N = 8, no install or
download) and a temporary ``WORKDIR``. Any cell that raises fails the test; the
notebook's last cell asserts on what it computed (F of both methods within the
range the digits reference gives, compare's sign, the API's result, the design
cell's F and the benchmark's records).
"""

from __future__ import annotations

import os
import re

import pytest

import nbclient  # the test extra: pip install -e '.[test]'
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "colab.ipynb")


def _with_parameters(nb, source: str):
  """A copy of ``nb`` with a cell of ``source`` right after the cell tagged ``parameters``."""
  nb = nbformat.from_dict(nb)
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  cell = nbformat.v4.new_code_cell(source)
  cell.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index + 1, cell)
  return nb


def _execute(nb, tmp_path, monkeypatch, timeout=600):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("PYTHONPATH", ROOT)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the benchmark's compilation cache
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute()
  return nb


def _text(cell) -> str:
  out = []
  for o in cell.get("outputs", []):
    if o.output_type == "stream":
      out.append(o.text)
    elif "data" in o and "text/plain" in o.data:
      out.append(o.data["text/plain"])
  return "".join(out)


def test_notebook_is_stored_without_outputs_and_uses_public_entry_points():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code)
  assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
  source = "\n".join(c.source for c in code)
  for internal in ("unlearn_jax.pipeline", "unlearn_jax.commands", "from unlearn_jax import pipeline"):
    assert internal not in source
  assert "%run benchmarks/accelerator.py" in source and "unlearn_jax.evaluate(" in source
  assert "seeds.SeedRunner(" in source and "metrics.forgetting_metric(" in source
  assert code[-1].source.count("assert ") >= 5  # the last cell checks what the notebook computed


def test_notebook_executes_on_the_small_parameters(tmp_path, monkeypatch):
  nb = _with_parameters(nbformat.read(NOTEBOOK, as_version=4),
                        f"SMALL = True\nWORKDIR = {str(tmp_path / 'work')!r}\n")
  nb = _execute(nb, tmp_path, monkeypatch)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count is not None for c in code)  # every cell ran
  assert all(o.output_type != "error" for c in code for o in c.outputs)
  backend = next(_text(c) for c in code if "backend: " in _text(c))
  assert re.search(r"backend: cpu, \d+ x cpu", backend)
  images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
  assert len(images) == 6  # three plots per method, shown inline
  assert "all checks passed" in _text(code[-1])
  work = tmp_path / "work"
  for method in ("finetune", "retrain"):
    assert (work / "runs" / method / "results.json").is_file()
  assert (work / "accelerator" / "summary.md").is_file()


def test_a_broken_cell_fails_the_run(tmp_path, monkeypatch):
  nb = _with_parameters(nbformat.read(NOTEBOOK, as_version=4),
                        "SMALL = True\nraise RuntimeError('a broken cell')\n")
  nb.cells = nb.cells[:4]  # the title, the parameters, the broken cell: nothing after it is needed
  with pytest.raises(nbclient.exceptions.CellExecutionError, match="a broken cell"):
    _execute(nb, tmp_path, monkeypatch, timeout=120)
