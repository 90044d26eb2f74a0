"""Shared fixtures: the test profile, the real local stack, unique names per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from ridematch_nb.config import Settings, load_settings

TESTS = Path(__file__).resolve().parent
# The test profile; a developer may point the suite at a second stack on other ports.
TEST_PARAMS = os.environ.get("RIDEMATCH_TEST_PARAMS", "params/ci.yaml")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `-m "not integration"` runs the fast set alone."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(TESTS).parts
        if parts[0] in ("integration", "notebooks"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def ci_settings() -> Settings:
    return load_settings(TEST_PARAMS)


@pytest.fixture(scope="session")
def stack(ci_settings: Settings):
    """The embedded stack, started once per session (reused when `make stack-up` ran)."""
    from ridematch_nb.stack import LocalStack

    local = LocalStack(ci_settings)
    local.up()
    return local


@pytest.fixture(scope="session")
def settings(stack) -> Settings:
    """Settings with the stack's keys, for tests that talk to the servers."""
    return stack.settings


@pytest.fixture
def unique() -> str:
    """A short unique suffix: each test gets its own topic / prefix / group."""
    return uuid.uuid4().hex[:10]
