"""The live notebook is bounded by a parameter and kept out of the chain (it runs until
stopped); test_notebooks_static checks it is committed clean like the others."""

from ridematch_nb.config import PROJECT_ROOT
from ridematch_nb.pipeline import COMMON_PARAMS, discover, notebook_parameters

LIVE = PROJECT_ROOT / "notebooks" / "watch_live.ipynb"


def test_live_notebook_is_bounded_by_duration_and_not_part_of_the_chain():
    params = notebook_parameters(LIVE)
    assert set(COMMON_PARAMS) <= set(params)
    assert params["duration_s"]["default"] == "0.0"  # interactive: until stopped
    assert LIVE not in discover()
