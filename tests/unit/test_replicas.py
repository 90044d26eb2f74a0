"""The folder the workers of one `serve --workers N` share: the last reload asked for,
and the answers counted are those of that reload."""

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from ridematch_nb.model.replicas import POLL_S, Replicas, Wanted
from ridematch_nb.model.service import MatchService


@contextlib.contextmanager
def another_worker(folder: Path, token: str, served: str):
    """A process of its own that answers a reload and lives on, as a worker does."""
    code = (
        "import sys, time; from pathlib import Path; from ridematch_nb.model.replicas import"
        " Replicas; Replicas(Path(sys.argv[1]), 2).answer(sys.argv[2], sys.argv[3]);"
        "print('answered', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), token, served], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "answered"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_each_reload_has_a_token_of_its_own_and_the_last_one_is_wanted(tmp_path):
    asking, other = Replicas(tmp_path, 2), Replicas(tmp_path, 2)
    assert other.wanted() is None
    token = asking.want(Path("/runs/b"))
    assert other.wanted() == Wanted(token, Path("/runs/b"))
    second = asking.want(Path("/runs/c"))  # within the same clock tick as the first
    assert second != token and other.wanted() == Wanted(second, Path("/runs/c"))
    assert not list(tmp_path.glob(".*"))  # no half-written file left behind


def test_the_answers_of_one_reload_and_the_wait_for_all(tmp_path):
    replicas = Replicas(tmp_path, 2)
    old, new = replicas.want(Path("/runs/a")), replicas.want(Path("/runs/b"))
    replicas.answer(new, "b")
    with another_worker(tmp_path, old, "a"):
        mine = [{"token": new, "served": "b", "error": None}]
        assert list(replicas.answers(new).values()) == mine
        assert len(replicas.wait_for_all(new, timeout_s=0.2)) == 1  # the other answered `old`
    with another_worker(tmp_path, new, "b") as other:
        got = replicas.wait_for_all(new, timeout_s=30)
        assert len(got) == 2 and {a["served"] for a in got.values()} == {"b"}
        other.kill()
        other.wait()
        assert list(replicas.answers(new).values()) == mine  # a dead worker's answer is gone


def test_a_worker_that_failed_says_why(tmp_path):
    replicas = Replicas(tmp_path, 1)
    token = replicas.want(Path("/runs/x"))
    replicas.answer(token, None, "ConfigError: no model in /runs/x/model")
    assert replicas.answers(token).popitem()[1]["error"].startswith("ConfigError")


def service_without_a_model(folder: Path, workers: int, slow_run: str | None = None):
    """A MatchService with no model and no store (only its reload logic), whose reload
    records each run it loads in ``loaded``; the load of ``slow_run`` takes a few of the
    followers' polls."""
    service = object.__new__(MatchService)
    service.replicas, service._swapping = Replicas(folder, workers), asyncio.Lock()
    service.served, service.applied = SimpleNamespace(run=Path("/runs/a")), None
    service.loaded = []

    def reload(run):
        time.sleep(POLL_S * 3 if run.name == slow_run else 0)
        service.loaded.append(run.name)
        service.served = SimpleNamespace(run=run)
        return {"model_version": run.name, "previous": "a"}

    service.reload = reload
    return service


OTHER_WORKER_FAILS = """
import sys, time
from pathlib import Path
from ridematch_nb.model.replicas import Replicas
replicas = Replicas(Path(sys.argv[1]), 2)
while (wanted := replicas.wanted()) is None:
    time.sleep(0.02)
replicas.answer(wanted.token, None, f"ConfigError: no model in {wanted.run}")
time.sleep(60)  # a worker lives on after it answered (the test stops it)
"""


def test_a_reload_one_worker_failed_is_a_503_naming_its_error(tmp_path):
    """The worker that took the reload loaded it; the other (another process, through
    the shared folder) could not: the answer is a 503 listing both and the error."""
    service = service_without_a_model(tmp_path, 2)
    other = subprocess.Popen([sys.executable, "-c", OTHER_WORKER_FAILS, str(tmp_path)])
    try:
        answer = asyncio.run(service.reload_all(Path("/runs/b")))
    finally:
        other.kill()
        other.wait()
    assert answer.status_code == 503
    got = json.loads(answer.body)
    assert "some workers only (2 of 2 workers answered)" in got["detail"]
    assert "ConfigError: no model in /runs/b" in got["detail"]
    assert sorted(got["workers"].values()) == ["ConfigError: no model in /runs/b", "b"]


def test_a_reload_superseded_while_a_worker_waited_is_not_applied_over_the_newer(tmp_path):
    """Another worker asked for run z; this worker then took a reload to x, whose load is
    slow. Its follower, waking meanwhile, must not load z after x: x is the wanted one."""
    service = service_without_a_model(tmp_path, 1, slow_run="x")  # the follower wakes meanwhile

    async def both():
        follower = asyncio.create_task(service.follow_reloads())
        service.replicas.want(Path("/runs/z"))  # the other worker's, asked first
        answer = await service.reload_all(Path("/runs/x"))
        await asyncio.sleep(POLL_S * 3)  # the follower's turns after the reload
        follower.cancel()
        return answer

    answer = asyncio.run(both())
    assert answer["model_version"] == "x"
    assert service.loaded == ["x"] and service.served.run == Path("/runs/x")
    assert service.replicas.wanted().run == Path("/runs/x")


def test_a_reload_superseded_before_every_worker_answered_says_so(tmp_path):
    """Two workers; this one took a reload to x, and before the other answered, another
    reload (to y) was asked: the answer is a 409 naming y, at once, not a 503 after
    the whole wait."""
    service = service_without_a_model(tmp_path, 2)

    async def then_another():
        asking = asyncio.create_task(service.reload_all(Path("/runs/x")))
        while (wanted := service.replicas.wanted()) is None or wanted.run.name != "x":
            await asyncio.sleep(0.01)
        Replicas(tmp_path, 2).want(Path("/runs/y"))  # the other worker's, asked later
        return await asyncio.wait_for(asking, timeout=30)

    answer = asyncio.run(then_another())
    assert answer.status_code == 409
    got = json.loads(answer.body)
    assert got["detail"].startswith("superseded by a later reload (of y)"), got
    assert got["model_version"] == "x" and len(got["workers"]) == 1
