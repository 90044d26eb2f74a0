"""The match over HTTP: `python -m ridematch_nb serve` on the chain's model and the real
stack, called as the original project's clients call it."""

import json
import time

import httpx
import pandas as pd
import pytest

from ridematch_nb.bench.serve import k6_run
from ridematch_nb.features import store as features
from ridematch_nb.features.online import OnlineReader, index_key
from ridematch_nb.features.redis_io import redis_client
from ridematch_nb.lake import storage
from ridematch_nb.model import drift, matching, training
from ridematch_nb.model.service import request_body
from ridematch_nb.ports import free_port
from ridematch_nb.process import started_server
from ridematch_nb.runs import model_folder
from tests.conftest import TEST_PARAMS
from tests.helpers.serving import k6_meanwhile, running_service, sample
from tests.helpers.tcp_proxy import Proxy

ORIGINAL_KEYS = {"driver_id", "score", "distance_km"}


@pytest.fixture(scope="module")
def service(chain):
    with running_service(chain.run_dir) as url:
        yield url


@pytest.fixture(scope="module")
def requests(settings):
    table = storage.read_dataset(settings, "rider_request").to_pandas()
    return table.sort_values("timestamp").tail(30).to_dict("records")


def test_match_answers_the_originals_shape_with_what_the_matcher_ranks(
    service, chain, settings, requests
):
    fs = features.store(settings)
    trained = training.load(model_folder(chain.run_dir), fs)
    matcher = matching.Matcher(settings, fs, trained, fs.project)
    answered = 0
    for request in requests:
        reply = httpx.post(f"{service}/match", json=request_body(request, top_k=3), timeout=10)
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
    reply = httpx.post(f"{service}/match?explain=true", json=request_body(requests[-1]), timeout=10)
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
    body = {**request_body(requests[-1]), **change}
    body = {k: v for k, v in body.items() if v is not None}
    reply = httpx.post(f"{service}/match", json=body, timeout=10)
    assert reply.status_code == 422, reply.text
    assert [field] == [e["loc"][-1] for e in reply.json()["detail"]]


def test_a_body_that_is_not_json_gets_a_4xx(service):
    reply = httpx.post(
        f"{service}/match", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422 and "json" in reply.text.lower()


def test_health_and_metrics_that_count_what_was_served(service):
    assert httpx.get(f"{service}/health").json() == {"status": "alive"}
    served = 'match_request_latency_seconds_count{outcome="2xx",path="/match"}'
    before = sample(service, served)
    bad = sample(service, 'match_errors_total{error_type="bad_request"}')
    far = {"rider_id": "r", "rider_lat": 40.999, "rider_lon": -73.651}
    for _ in range(3):
        httpx.post(f"{service}/match", json=far)
    httpx.post(f"{service}/match", json={"rider_id": "r"})
    assert sample(service, served) == before + 3
    assert sample(service, 'match_errors_total{error_type="bad_request"}') == bad + 1
    text = httpx.get(f"{service}/metrics").text
    for name in ("match_part_seconds", "match_candidates", "prediction_scores"):
        assert f"{name}_count" in text


def test_a_candidate_without_a_feature_is_left_out_and_counted_under_its_name(
    service, settings, requests
):
    """One driver's online value of one feature deleted: the service ranks the others
    and feature_missing_total counts the gap under that feature (the value put back)."""
    body = request_body(requests[-1], top_k=50, radius_km=20)
    first = httpx.post(f"{service}/match?explain=true", json=body, timeout=10).json()
    assert first["matches"], first
    driver = first["matches"][0]["driver_id"]
    fs = features.store(settings)
    reader = OnlineReader(fs, settings, features.FEATURE_SERVICE)
    field = reader._fields[reader.names.index("accept_rate_7d")]
    redis, key = redis_client(settings), reader._key(driver)
    kept = redis.hget(key, field)
    counted = 'feature_missing_total{feature_name="accept_rate_7d"}'
    before, others = (
        sample(service, counted),
        sample(service, counted.replace("accept_rate_7d", "avg_response_ms")),
    )
    try:
        redis.hdel(key, field)
        again = httpx.post(f"{service}/match?explain=true", json=body, timeout=10).json()
    finally:
        redis.hset(key, field, kept)
    ranked = [m["driver_id"] for m in again["matches"]]
    assert driver not in ranked and len(ranked) == len(first["matches"]) - 1, again
    assert again["skipped_missing"] == first["skipped_missing"] + 1
    assert sample(service, counted) == before + 1
    assert sample(service, counted.replace("accept_rate_7d", "avg_response_ms")) == others


def test_ready_names_stale_online_values_until_they_are_fresh(service, settings):
    """The chain's day is simulated in the past: answered, but not ready. One idle
    driver's values written again with the time of now make both views fresh."""
    ready = httpx.get(f"{service}/ready", timeout=10)
    assert ready.status_code == 503 and ready.json()["ready"] is False, ready.text
    online = ready.json()["online"]
    assert "driver_state" in online and "TTL 0:30:00" in online and "stale" in online
    assert ready.json()["redis"].startswith("ok") and ready.json()["model"]
    fs = features.store(settings)
    reader = OnlineReader(fs, settings, features.FEATURE_SERVICE)
    redis = redis_client(settings)
    driver = redis.zrange(index_key(fs.project), 0, 0)[0].decode()
    values = reader.columns([driver])
    # Feast skips a write older than what it holds, so the event times this test moves
    # to now are put back by hand: a second run on the same stack starts stale again
    key = reader._key(driver)
    stamps = {f"_ts:{v}": redis.hget(key, f"_ts:{v}") for v in reader.views.values()}
    now = pd.Timestamp.now(tz="UTC")
    try:
        for view in reader.views:
            names = [f.name for f in fs.get_feature_view(view).features]
            row = {"driver_id": [driver], "timestamp": [now], **{n: values[n] for n in names}}
            fs.write_to_online_store(view, pd.DataFrame(row))
        ready = httpx.get(f"{service}/ready", timeout=10)
        assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
        assert ready.json()["online"].startswith("fresh")
    finally:
        redis.hset(key, mapping=stamps)
    assert httpx.get(f"{service}/ready", timeout=10).status_code == 503


def test_drift_is_exported_per_model_feature_once_the_window_fills(
    service, chain, settings, requests
):
    model = training.load(model_folder(chain.run_dir), features.store(settings))
    assert (model_folder(chain.run_dir) / drift.REFERENCE_FILE).is_file()
    scored = 0
    while scored < drift.MIN_LIVE:
        for request in requests:
            reply = httpx.post(f"{service}/match", json=request_body(request, top_k=50), timeout=10)
            scored += len(reply.json()["matches"])
    got = {
        line.split('"')[1]: float(line.split()[-1])
        for line in httpx.get(f"{service}/metrics").text.splitlines()
        if line.startswith("feature_drift_score{")
    }
    assert set(got) == set(model.features)
    assert all(0 <= v <= 1 for v in got.values())


def test_admin_reload_needs_the_token_and_swaps_the_model_under_load(
    service, chain, settings, requests, tmp_path
):
    """A copy of the chain's model as another run, swapped in while k6 sends 50
    requests/s: every request answered, and the next ones name the new run."""
    import shutil

    other = tmp_path / "20991231-000000-copy"
    shutil.copytree(model_folder(chain.run_dir), other / "model")
    admin = f"{service}/admin/reload"
    assert settings.admin_token
    assert httpx.post(admin, json={"run": str(other)}).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.post(admin, json={"run": str(other)}, headers=wrong).status_code == 401
    bare = {"Authorization": settings.admin_token}  # the token without its scheme
    assert httpx.post(admin, json={"run": str(other)}, headers=bare).status_code == 401
    token = {"Authorization": f"Bearer {settings.admin_token}"}
    missing = httpx.post(admin, json={"run": str(tmp_path / "none")}, headers=token, timeout=30)
    assert missing.status_code == 409 and "no model in" in missing.json()["detail"]

    bodies = [json.dumps(request_body(r)) for r in requests]
    with k6_meanwhile(f"{service}/match", bodies, rate=50, duration_s=6) as load:
        swapped = httpx.post(admin, json={"run": str(other)}, headers=token, timeout=60)
    assert swapped.status_code == 200, swapped.text
    assert swapped.json() == {"model_version": other.name, "previous": chain.run_dir.name}
    assert load["requests"] >= 290 and load["errors"] == 0 and load["dropped"] == 0
    reply = httpx.post(f"{service}/match?explain=true", json=request_body(requests[-1]), timeout=10)
    assert reply.json()["model_version"] == other.name
    back = httpx.post(admin, json={"run": str(chain.run_dir)}, headers=token, timeout=60)
    assert back.json()["model_version"] == chain.run_dir.name


def test_redis_away_under_load_gives_503s_naming_redis_and_the_service_comes_back(
    chain, settings, requests
):
    """Redis behind a real TCP proxy that the test cuts, then opens again on its port,
    while k6 sends 40 requests/s: the requests in the gap get 503s that name Redis,
    none gets a 5xx of another kind, and the service answers again by itself."""
    proxy = Proxy(settings.redis_port)
    through = settings.redis_url.replace(f":{settings.redis_port}/", f":{proxy.port}/")
    assert through != settings.redis_url
    body = request_body(requests[-1])
    bodies = [json.dumps(request_body(r)) for r in requests]
    with running_service(chain.run_dir, {"RIDEMATCH_REDIS_URL": through}) as url:
        assert httpx.post(f"{url}/match", json=body, timeout=10).status_code == 200
        back = None
        try:
            with k6_meanwhile(f"{url}/match", bodies, rate=40, duration_s=10) as load:
                proxy.stop()
                replies = [httpx.post(f"{url}/match", json=body, timeout=10) for _ in range(5)]
                assert [r.status_code for r in replies] == [503] * 5
                assert all("Redis" in r.json()["detail"] for r in replies)
                down = httpx.get(f"{url}/ready", timeout=10)
                assert down.status_code == 503 and "Redis" in down.json()["redis"]
                back = Proxy(settings.redis_port, port=proxy.port)
                deadline, waited = time.monotonic() + 15, 0
                while (
                    reply := httpx.post(f"{url}/match", json=body, timeout=10)
                ).status_code != 200:
                    assert reply.status_code == 503, reply.text
                    assert time.monotonic() < deadline, "the service did not recover"
                    waited += 1
                    time.sleep(0.2)
                assert httpx.get(f"{url}/ready", timeout=10).json()["redis"].startswith("ok")
            assert load["dropped"] == 0
            assert 0 < load["errors"] < load["requests"] - 100, load
            refused = 5 + waited + load["errors"]
            assert sample(url, 'match_errors_total{error_type="redis"}') == refused
            failed = 'match_request_latency_seconds_count{outcome="5xx",path="/match"}'
            assert sample(url, failed) == refused
        finally:
            if back is not None:
                back.stop()


def test_feast_serve_through_our_command_answers_what_the_serving_reader_reads(chain, settings):
    """`python -m ridematch_nb feast serve` (Feast's own feature server, no variables
    exported by hand) returns for some drivers exactly what OnlineReader reads."""
    from ridematch_nb.features.online import OnlineReader

    port = free_port()
    args = ["feast", "--params", TEST_PARAMS, "serve", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/get-online-features"
    fs = features.store(settings)
    drivers = [f"driver_{i}" for i in range(0, 40, 3)] + ["driver_nobody"]
    body = {"feature_service": features.FEATURE_SERVICE, "entities": {"driver_id": drivers}}
    with started_server(args, f"http://127.0.0.1:{port}/health"):
        reply = httpx.post(url, json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        got = reply.json()
        served = {
            name: result["values"]
            for name, result in zip(got["metadata"]["feature_names"], got["results"], strict=True)
        }
        ours = OnlineReader(fs, settings).columns(drivers)
        assert served["driver_id"] == drivers
        features_read = [f for f in ours if f != "driver_id"]
        assert features_read and set(features_read) <= set(served)
        for feature in features_read:
            for theirs, mine in zip(served[feature], ours[feature], strict=True):
                if isinstance(mine, float):
                    assert theirs == pytest.approx(mine), feature
                else:
                    assert theirs == mine, feature
        assert all(ours[f][-1] is None for f in features_read)  # the unknown driver
        assert sum(v is not None for v in ours[features_read[0]]) >= 10


def test_fuzzed_bodies_from_the_services_own_schema_never_get_a_500(service):
    """Property-based: bodies built from /openapi.json's MatchRequest, each field missing,
    in range, out of range or of any JSON type, plus unknown fields. Every answer is a
    200 with the original's shape or a 422 naming a field; never a 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    schema = httpx.get(f"{service}/openapi.json").json()["components"]["schemas"]
    fields = schema["MatchRequest"]["properties"]
    anything = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=5,
    )

    def value_of(spec: dict):
        bounds = [b for b in spec.get("anyOf", [spec]) if "minimum" in b or "maximum" in b]
        near = st.nothing()
        if bounds:
            lo, hi = bounds[0].get("minimum", -1e3), bounds[0].get("maximum", 1e3)
            near = st.floats(lo - 1, hi + 1) | st.integers(int(lo) - 1, int(hi) + 1)
        return near | anything

    bodies = st.fixed_dictionaries(
        {}, optional={name: value_of(spec) for name, spec in fields.items()}
    ) | st.dictionaries(st.text(max_size=8), anything, max_size=4)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bodies)
    def check(body):
        data = json.dumps(body)  # NaN and Infinity go out as JSON's non-standard tokens
        reply = httpx.post(
            f"{service}/match", content=data, headers={"content-type": "application/json"}
        )
        assert reply.status_code in (200, 422), (body, reply.status_code, reply.text[:300])
        if reply.status_code == 200:
            assert set(reply.json()) <= {"matches", "reason"}
        else:  # every body is an object: each error names one of the schema's fields
            named = [e["loc"][1] if len(e["loc"]) > 1 else None for e in reply.json()["detail"]]
            assert named and all(name in fields for name in named), (body, named)

    check()


def test_the_load_generator_sends_at_the_asked_rate_and_reads_every_answer(service, requests):
    """bench --serve's k6 run (open-loop, constant arrival rate), briefly: the figures it
    reports come from k6's own summary of what it sent and got."""
    bodies = [json.dumps(request_body(r)) for r in requests]
    got = k6_run(f"{service}/match", bodies, rate=20, duration_s=3)
    assert 55 <= got["requests"] <= 62 and got["errors"] == 0 and got["dropped"] == 0
    assert 0 < got["p50_ms"] <= got["p99_ms"] <= got["max_ms"]
