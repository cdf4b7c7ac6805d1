"""The lecture notebooks (docs/lectures/) run top to bottom without an error,
each in well under a minute. Needs the notebook tooling of the test extra
(nbclient, ipykernel); skipped without it."""
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "docs" / "lectures").glob("*.ipynb"))


def test_there_is_a_lecture_per_stage():
    assert [p.stem for p in NOTEBOOKS] == ["01_frontend_and_graph_ir", "02_passes_and_fusion",
                                           "03_loop_ir_and_schedules", "04_code_generation"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lecture_runs(path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
