"""The bench's measuring child: its environment is its own."""

import os

from ridematch_nb.bench_harness import isolated


def test_the_measuring_child_gets_the_environment_it_is_given_and_the_parent_keeps_its_own():
    name = "RIDEMATCH_TEST_CHILD_ONLY"
    assert name not in os.environ
    got = isolated(lambda: {"value": os.environ.get(name)}, {name: "s3-keys"})
    assert got["value"] == "s3-keys" and got["peak_mib"] >= 0
    assert name not in os.environ
    assert isolated(lambda: {"value": os.environ.get(name)})["value"] is None
