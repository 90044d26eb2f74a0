"""The bench's measuring child: a process of its own, whose peak memory is measured."""

import os

import pytest

from ridematch_nb.bench.harness import isolated

KEPT: list[bytes] = []


def _hold(mib: int) -> dict:
    KEPT.append(b"x" * (mib * 2**20))  # written, so its pages are the child's own
    return {"pid": os.getpid()}


def test_the_measuring_child_is_its_own_process_and_its_memory_is_measured():
    got = isolated(lambda: _hold(64))
    assert got["pid"] != os.getpid() and KEPT == []  # what it held stayed in the child
    assert 60 <= got["peak_mib"] < 200


def test_a_failing_measurement_names_its_error():
    def fail() -> dict:
        raise ValueError("no lake")

    with pytest.raises(RuntimeError, match="ValueError: no lake"):
        isolated(fail)
