"""One run of the notebook chain (params/ci.yaml, a temporary run folder) that every test
of this folder reads: they run in one worker (group ``chain``), so it runs once."""

import pytest

from ridematch_nb.pipeline import run_chain
from tests.conftest import TEST_PARAMS


@pytest.fixture(scope="session")
def chain(stack, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return run_chain(TEST_PARAMS, run_dir=run_dir, say=lambda *_: None)
