"""`serve --workers 2` on the chain's model and the real stack: what any one worker
answers holds for the service as a whole (its /metrics count every worker's requests,
a reload reaches every worker, a worker started again serves the reloaded model)."""

import json
import os
import shutil
import signal
import time

import httpx
import pytest

from ridematch_nb.lake import storage
from ridematch_nb.model.service import request_body
from ridematch_nb.runs import model_folder
from tests.helpers.serving import k6_meanwhile, running_service, sample

SERVED = 'match_request_latency_seconds_count{outcome="2xx",path="/match"}'


@pytest.fixture(scope="module")
def service(chain):
    with running_service(chain.run_dir, workers=2) as url:
        yield url


@pytest.fixture(scope="module")
def body(settings):
    table = storage.read_dataset(settings, "rider_request").to_pandas()
    return request_body(table.sort_values("timestamp").iloc[-1].to_dict())


def served_by(url: str, body: dict, wanted: int = 2, tries: int = 200) -> dict[int, str]:
    """Worker pid -> the model it serves, from requests on new connections (each lands
    on whichever worker accepts it) until ``wanted`` workers answered."""
    seen: dict[int, str] = {}
    for _ in range(tries):
        got = httpx.post(f"{url}/match?explain=true", json=body, timeout=10).json()
        seen[got["worker"]] = got["model_version"]
        if len(seen) >= wanted:
            break
        time.sleep(0.05)
    return seen


def test_metrics_count_the_requests_of_every_worker(service, body):
    workers = served_by(service, body)
    assert len(workers) == 2, f"one worker answered 200 requests: {workers}"
    before = sample(service, SERVED)
    for _ in range(40):
        assert httpx.post(f"{service}/match", json=body, timeout=10).status_code == 200
    # each scrape, on a new connection, is answered by one worker or the other
    assert [sample(service, SERVED) for _ in range(8)] == [before + 40] * 8


def test_a_reload_under_load_reaches_every_worker_and_one_started_again(
    service, chain, settings, body, tmp_path
):
    """A copy of the chain's model as another run, swapped in on one call while k6 sends
    50 requests/s: every request answered, the reply lists both workers on the new run,
    every worker then names it, and so does a worker that uvicorn starts in place of
    one killed."""
    other = tmp_path / "20991231-000000-copy"
    shutil.copytree(model_folder(chain.run_dir), other / "model")
    token = {"Authorization": f"Bearer {settings.admin_token}"}
    before = served_by(service, body)
    assert set(before.values()) == {chain.run_dir.name}

    with k6_meanwhile(f"{service}/match", [json.dumps(body)], rate=50, duration_s=6) as load:
        swapped = httpx.post(
            f"{service}/admin/reload", json={"run": str(other)}, headers=token, timeout=90
        )
    assert swapped.status_code == 200, swapped.text
    reply = swapped.json()
    assert reply["model_version"] == other.name and reply["previous"] == chain.run_dir.name
    assert sorted(reply["workers"].values()) == [other.name, other.name]
    assert load["requests"] >= 290 and load["errors"] == 0 and load["dropped"] == 0, load
    after = served_by(service, body)
    assert len(after) == 2 and set(after.values()) == {other.name}
    assert {str(pid) for pid in after} == set(reply["workers"])

    os.kill(next(iter(after)), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not (new := {p: m for p, m in served_by(service, body).items() if p not in after}):
        assert time.monotonic() < deadline, "no worker was started in place of the one killed"
    assert set(new.values()) == {other.name}

    back = httpx.post(
        f"{service}/admin/reload", json={"run": str(chain.run_dir)}, headers=token, timeout=90
    )
    assert back.status_code == 200 and len(back.json()["workers"]) == 2, back.text
