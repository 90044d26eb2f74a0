"""The live notebook: committed clean like the stage notebooks, bounded by a parameter,
and kept out of the chain (it runs until stopped)."""

import json

from ridematch_nb.config import PROJECT_ROOT
from ridematch_nb.pipeline import COMMON_PARAMS, discover, notebook_parameters

LIVE = PROJECT_ROOT / "notebooks" / "watch_live.ipynb"


def test_live_notebook_is_clean_with_one_parameters_cell_and_kernel_python3():
    nb = json.loads(LIVE.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for cell in code:
        src = "".join(cell["source"])
        assert "127.0.0.1" not in src and "localhost" not in src and "import *" not in src


def test_live_notebook_is_bounded_by_duration_and_not_part_of_the_chain():
    params = notebook_parameters(LIVE)
    assert set(COMMON_PARAMS) <= set(params)
    assert params["duration_s"]["default"] == "0.0"  # interactive: until stopped
    assert LIVE not in discover()
