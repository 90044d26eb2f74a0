"""Every stage notebook is committed clean and accepts what the params files give it."""

import ast
import dataclasses
import json

import pytest

from ridematch_nb import config
from ridematch_nb.config import PROJECT_ROOT, read_params
from ridematch_nb.pipeline import COMMON_PARAMS, discover, notebook_parameters
from ridematch_nb.sim.world import WorldParams
from tests.helpers.notebooks import notebook_default

NOTEBOOKS = discover()
# every notebook, the live one outside the chain included, is committed clean
ALL_NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
PARAMS_FILES = sorted((PROJECT_ROOT / "params").glob("*.yaml"))


def test_the_stage_notebooks_are_numbered_in_order_without_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)) and len(numbers) >= 6


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_with_one_parameters_cell_and_kernel_python3(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert nb["cells"][0]["cell_type"] == "markdown"
    ids = [c.get("id") for c in nb["cells"]]  # nbformat 4.5: each cell has its own id
    assert None not in ids and len(set(ids)) == len(ids)
    for cell in code:
        src = "".join(cell["source"])
        assert "import *" not in src and "!pip" not in src and "%%writefile" not in src
        assert "os.getcwd" not in src and "127.0.0.1" not in src and "localhost" not in src


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_takes_the_common_parameters(path):
    assert set(COMMON_PARAMS) <= set(notebook_parameters(path))


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_is_read_after_the_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    at = next(i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", []))
    later = ast.parse("\n".join("".join(c["source"]) for c in code[at + 1 :]))
    read = {n.id for n in ast.walk(later) if isinstance(n, ast.Name)}
    unused = set(notebook_parameters(path)) - read
    assert not unused, f"{path.name}: parameters never used: {sorted(unused)}"


def test_the_live_notebook_runs_until_stopped_by_default():
    assert notebook_default("watch_live", "duration_s") == 0.0


# Defaults a notebook shares with the package: written once there, the notebook must agree.
SHARED_DEFAULTS = [
    ("01_generate", "partitions", config.PARTITIONS),
    ("03_etl", "group", config.ETL_GROUP),
    ("03_etl", "roll_records", config.ROLL_RECORDS),
    ("03_etl", "roll_event_s", config.ROLL_EVENT_S),
] + [
    ("01_generate", f.name, f.default)
    for f in dataclasses.fields(WorldParams)
    if f.name in notebook_parameters(PROJECT_ROOT / "notebooks" / "01_generate.ipynb")
]


@pytest.mark.parametrize("stem, name, value", SHARED_DEFAULTS, ids=lambda v: str(v))
def test_a_notebook_parameters_default_is_the_packages(stem, name, value):
    assert notebook_default(stem, name) == value


@pytest.mark.parametrize("params_file", PARAMS_FILES, ids=lambda p: p.name)
def test_every_params_key_is_a_parameter_of_its_notebook(params_file):
    stems = {nb.stem: nb for nb in NOTEBOOKS}
    for stem, given in (read_params(params_file).get("notebooks") or {}).items():
        assert stem in stems, f"{params_file.name}: no notebook {stem}"
        unknown = set(given) - set(notebook_parameters(stems[stem]))
        assert not unknown, f"{params_file.name}: {stem} has no parameter {unknown}"
