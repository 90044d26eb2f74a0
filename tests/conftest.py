"""Shared fixtures: the test profile, the real local stack, unique names per test."""

from __future__ import annotations

import fcntl
import os
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from ridematch_nb.config import Settings, load_settings

TESTS = Path(__file__).resolve().parent
# The test profile; a developer may point the suite at a second stack on other ports.
TEST_PARAMS = os.environ.get("RIDEMATCH_TEST_PARAMS", "params/ci.yaml")


# Tests that share names on the servers run in one worker, one after another, when
# `make test` spreads the suite over workers (pytest-xdist, --dist loadgroup): the
# notebook chain's tests read one run of it; the live notebook's share its lake prefix.
GROUPS = {"notebooks": "chain", "ui_browser": "live", "test_live.py": "live"}
# The longest groups start first, so they do not finish alone at the end.
FIRST = ("chain", "live")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the group marks into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder (so `-m "not integration"` runs the fast set alone) and
    by group; put the long groups first."""
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder in ("integration", "notebooks"):
            item.add_marker(getattr(pytest.mark, folder))
        group = _group_of(item.path)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """Fail fast when xdist ignored the groups: the chain would then run once per
    worker against one topic (pytest 9.2 with xdist 3.8 did exactly that)."""
    root = node.config.rootpath
    lost = [i for i in ids if "@" not in i and _group_of(root / i.split("::")[0])]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist did not group {len(lost)} tests (first: {lost[0]}); "
            "check the pytest and pytest-xdist pins in pyproject.toml"
        )


def _group_of(path: Path) -> str | None:
    """The group of a test file, by its folder or its name."""
    parts = path.resolve().relative_to(TESTS).parts
    return GROUPS.get(parts[0]) or GROUPS.get(parts[-1])


def _rank(item: pytest.Item) -> int:
    group = _group_of(item.path)
    return FIRST.index(group) if group in FIRST else len(FIRST)


@pytest.fixture(scope="session")
def ci_settings() -> Settings:
    return load_settings(TEST_PARAMS)


@pytest.fixture(scope="session")
def stack(ci_settings: Settings):
    """The embedded stack, started once per session (reused when `make stack-up` ran)."""
    from ridematch_nb.stack.control import LocalStack

    local = LocalStack(ci_settings)
    local.dir.mkdir(parents=True, exist_ok=True)
    with open(local.dir / "tests-up.lock", "w") as lock:  # workers start it once
        fcntl.flock(lock, fcntl.LOCK_EX)
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


@pytest.fixture
def own_broker(settings: Settings, tmp_path: Path, unique: str):
    """A Tansu broker of this test's own, on the shared S3, for tests that stop or
    restart the broker: the suite's broker stays up for the tests running beside it.
    Its ``settings`` point at it; ``stop``/``start``/``restart`` act on it alone."""
    from ridematch_nb.lake.storage import s3_client
    from ridematch_nb.ports import free_port
    from ridematch_nb.stack.control import LocalStack
    from ridematch_nb.stack.services import create_buckets

    mine = replace(
        settings,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        stack=replace(settings.stack, data_dir=tmp_path / "broker", broker_bucket=f"b-{unique}"),
    )
    create_buckets(mine)
    broker = LocalStack(mine)
    broker.start("kafka")
    yield broker
    broker.stop("kafka")
    client = s3_client(mine)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=f"b-{unique}"):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=f"b-{unique}", Key=obj["Key"])
    client.delete_bucket(Bucket=f"b-{unique}")
