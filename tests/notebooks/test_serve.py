"""The match over HTTP: `python -m ridematch_nb serve` on the chain's model and the real
stack, called as the original project's clients call it."""

import subprocess
import sys
import time

import httpx
import pytest

from ridematch_nb.config import PROJECT_ROOT
from ridematch_nb.features import store as features
from ridematch_nb.lake import storage
from ridematch_nb.model import matching, training
from ridematch_nb.runs import model_folder
from tests.conftest import TEST_PARAMS
from tests.helpers.ports import free_port

ORIGINAL_KEYS = {"driver_id", "score", "distance_km"}


@pytest.fixture(scope="module")
def service(chain):
    port = free_port()
    command = [sys.executable, "-m", "ridematch_nb", "serve", "--params", TEST_PARAMS]
    command += ["--run", str(chain.run_dir), "--port", str(port)]
    proc = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "serve did not answer /health in 90 s"
        time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def requests(settings):
    table = storage.read_dataset(settings, "rider_request").to_pandas()
    return table.sort_values("timestamp").tail(30).to_dict("records")


def body_of(request: dict, top_k: int = 5) -> dict:
    return {
        "rider_id": request["request_id"],
        "rider_lat": request["origin_lat"],
        "rider_lon": request["origin_lon"],
        "top_k": top_k,
        "dest_lat": request["dest_lat"],
        "dest_lon": request["dest_lon"],
        "timestamp": request["timestamp"].isoformat(),
    }


def test_match_answers_the_originals_shape_with_what_the_matcher_ranks(
    service, chain, settings, requests
):
    fs = features.store(settings)
    trained = training.load(model_folder(chain.run_dir), fs)
    matcher = matching.Matcher(settings, fs, trained, fs.project)
    answered = 0
    for request in requests:
        reply = httpx.post(f"{service}/match", json=body_of(request, top_k=3), timeout=10)
        assert reply.status_code == 200, reply.text
        got = reply.json()
        expected = matcher.match(request).ranked.head(3)
        assert [m["driver_id"] for m in got["matches"]] == list(expected["driver_id"])
        pairs = zip(got["matches"], expected["score"], expected["pickup_km"], strict=True)
        for m, score, km in pairs:
            assert set(m) == ORIGINAL_KEYS
            assert m["score"] == pytest.approx(score, abs=1e-6)
            assert m["distance_km"] == pytest.approx(km, abs=1e-4)
        assert set(got) == ({"matches"} if got["matches"] else {"matches", "reason"})
        answered += bool(got["matches"])
    assert answered >= len(requests) // 2
    # the original's request alone (no fields of ours) is answered too
    first = requests[-1]
    plain = {"rider_id": "r1", "rider_lat": first["origin_lat"], "rider_lon": first["origin_lon"]}
    reply = httpx.post(f"{service}/match", json=plain, timeout=10)
    assert reply.status_code == 200 and len(reply.json()["matches"]) <= 5


def test_explain_adds_the_pickup_the_model_and_the_parts_times(service, chain, requests):
    reply = httpx.post(f"{service}/match?explain=true", json=body_of(requests[-1]), timeout=10)
    got = reply.json()
    assert got["model_version"] == chain.run_dir.name
    assert set(got["timings_ms"]) == {"candidates", "features", "scoring", "total"}
    assert all(m["pickup_km"] == m["distance_km"] for m in got["matches"])


def test_no_candidates_is_an_empty_list_with_the_reason(service):
    far = {"rider_id": "r", "rider_lat": 40.999, "rider_lon": -73.651}  # the city's NE corner
    got = httpx.post(f"{service}/match", json=far, timeout=10).json()
    assert got["matches"] == [] and "no idle driver" in got["reason"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rider_lat": None}, "rider_lat"),
        ({"rider_lat": "40.7"}, "rider_lat"),
        ({"rider_lat": 10.0}, "rider_lat"),  # not in the city
        ({"rider_lon": -70.0}, "rider_lon"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 51}, "top_k"),
        ({"top_k": "5"}, "top_k"),
        ({"rider_id": ""}, "rider_id"),
        ({"dest_lat": 99.0}, "dest_lat"),
        ({"timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_a_wrong_field_gets_a_4xx_that_names_it(service, requests, change, field):
    body = {**body_of(requests[-1]), **change}
    body = {k: v for k, v in body.items() if v is not None}
    reply = httpx.post(f"{service}/match", json=body, timeout=10)
    assert reply.status_code == 422, reply.text
    assert [field] == [e["loc"][-1] for e in reply.json()["detail"]]


def test_a_body_that_is_not_json_gets_a_4xx(service):
    reply = httpx.post(
        f"{service}/match", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422 and "json" in reply.text.lower()


def test_health_ready_and_metrics_that_count_what_was_served(service):
    assert httpx.get(f"{service}/health").json() == {"status": "alive"}
    ready = httpx.get(f"{service}/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    served = 'match_request_latency_seconds_count{outcome="2xx",path="/match"}'
    before = _sample(service, served)
    bad = _sample(service, 'match_errors_total{error_type="bad_request"}')
    far = {"rider_id": "r", "rider_lat": 40.999, "rider_lon": -73.651}
    for _ in range(3):
        httpx.post(f"{service}/match", json=far)
    httpx.post(f"{service}/match", json={"rider_id": "r"})
    assert _sample(service, served) == before + 3
    assert _sample(service, 'match_errors_total{error_type="bad_request"}') == bad + 1
    text = httpx.get(f"{service}/metrics").text
    for name in ("match_part_seconds", "match_candidates", "prediction_scores"):
        assert f"{name}_count" in text


def _sample(service: str, name: str) -> float:
    for line in httpx.get(f"{service}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
