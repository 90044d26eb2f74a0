"""The notebook chain with params/ci.yaml on the real stack; assertions on recorded figures."""

import json
import subprocess
import sys
from datetime import timedelta

import pandas as pd
import pytest

from ridematch_nb.config import PROJECT_ROOT, read_env_file, read_params, resolve_path
from ridematch_nb.pipeline import discover, run_chain
from ridematch_nb.runs import load_record
from tests.conftest import TEST_PARAMS
from tests.helpers.notebooks import notebook_default

CI = read_params(TEST_PARAMS)["notebooks"]


def param(stem: str, name: str):
    """What the chain ran a notebook with: the profile's value, else the notebook's default."""
    given = CI.get(stem, {})
    return given[name] if name in given else notebook_default(stem, name)


def test_every_notebook_ran_and_left_its_executed_copy(chain):
    for nb in discover():
        assert (chain.run_dir / nb.name).is_file()
        assert nb.stem in chain.timings
    assert (chain.run_dir / "params.yaml").is_file() and (chain.run_dir / "timings.json").is_file()
    # every kernel's peak memory, measured: a kernel with pandas and Feast loaded is tens of MiB
    peaks = json.loads((chain.run_dir / "peak_memory_mib.json").read_text())
    assert set(peaks) == set(chain.timings) and min(peaks.values()) > 50


def test_generate_figures_are_what_the_parameters_imply(chain):
    gen = load_record(chain.run_dir, "01_generate")
    p = CI["01_generate"]
    assert gen["ticks"] == int(p["hours"] * 3600)
    assert gen["sim_start"] == p["start"]
    assert gen["partitions"] == p["partitions"]
    assert gen["failed"] == 0 and gen["sent"] == gen["delivered"] == sum(gen["by_type"].values())
    assert set(gen["by_type"]) == {"driver_update", "rider_request", "offer_outcome"}
    # acknowledged offsets: a fresh topic, each partition filled from 0 without gaps
    spans = {int(p): span for p, span in gen["offsets"].items()}
    assert set(spans) <= set(range(p["partitions"])) and len(spans) >= 2
    assert all(first == 0 for first, _ in spans.values())
    assert sum(last + 1 for _, last in spans.values()) == gen["delivered"]
    # about 10 driver updates a tick (plus one per driver at the start and status changes)
    per_tick = gen["by_type"]["driver_update"] / gen["ticks"]
    assert 9.5 < per_tick < 14


def test_inspect_reads_back_exactly_what_was_delivered(chain):
    gen, insp = load_record(chain.run_dir, "01_generate"), load_record(chain.run_dir, "02_inspect")
    assert insp["events_read"] == gen["delivered"]
    assert insp["by_type"] == gen["by_type"]
    assert insp["rejected"] == {}
    assert insp["drivers_seen"] == CI["01_generate"]["n_drivers"]
    rates = list(insp["acceptance_by_km"].values())
    assert rates[0] > rates[-1]  # acceptance falls with pickup distance


def test_etl_lands_everything_generated_exactly_once(chain):
    gen, etl = load_record(chain.run_dir, "01_generate"), load_record(chain.run_dir, "03_etl")
    assert etl["consumed"] == gen["delivered"]
    assert etl["landed"] == gen["by_type"] and etl["rejected"] == {}
    assert etl["lake_rows"] == gen["by_type"]  # the lake holds this history, once
    assert all(lag == 0 for lag in etl["lag"].values())


def test_materialize_puts_the_latest_lake_values_online_for_every_driver(chain, settings):
    from ridematch_nb.features import store as features

    mat = load_record(chain.run_dir, "04_materialize")
    n = CI["01_generate"]["n_drivers"]
    assert mat["drivers_offline"] == n and mat["verified"] == n
    assert mat["mismatches"] == 0 and mat["online_coverage"] == 1.0
    # up to just past the newest landed event (never past now; the simulated day is past)
    newest = features.event_time_range(settings)[1]
    assert mat["materialized_until"] == (newest + timedelta(seconds=1)).isoformat()


def test_model_beats_the_nearest_driver_by_a_margin_learned_from_the_truth(chain, settings):
    """The simulator knows each driver's true accept propensity. The margin: the model must
    close at least a third of the gap between the nearest-driver baseline and an oracle
    scoring offers with the true acceptance probability, on the same held-out offers."""
    from sklearn.metrics import roc_auc_score

    from ridematch_nb.features import store as features
    from ridematch_nb.geo import distance_km
    from ridematch_nb.model import training
    from ridematch_nb.sim.drivers import accept_probability
    from ridematch_nb.sim.world import World, WorldParams
    from ridematch_nb.views.explore import local_hour

    rec = load_record(chain.run_dir, "05_train")
    p = CI["01_generate"]
    rows = training.training_set(
        features.store(settings), training.offers_with_requests(settings), features.FEATURE_SERVICE
    )
    _, test, _ = training.split_by_time(rows, param("05_train", "test_share"))
    assert len(test) == rec["test_rows"]
    nearest = -test["pickup_km"].to_numpy()
    assert roc_auc_score(test["accepted"], nearest) == pytest.approx(rec["nearest_auc"], abs=1e-4)

    world = World(
        WorldParams(
            seed=param("01_generate", "seed"),
            n_drivers=p["n_drivers"],
            n_riders=p["n_riders"],
            start=p["start"],
        )
    )
    true_pickup = test["offer_pickup_km"].to_numpy()  # the simulator's own, not the store's
    trip = distance_km(test["origin_lat"], test["origin_lon"], test["dest_lat"], test["dest_lon"])
    hours = local_hour(test["timestamp"]).to_numpy()
    oracle = [
        accept_probability(world.propensity[int(d.split("_")[1])], k, h, t)
        for d, k, h, t in zip(test["driver_id"], true_pickup, hours, trip, strict=True)
    ]
    auc_oracle = roc_auc_score(test["accepted"], oracle)
    assert auc_oracle > rec["nearest_auc"] + 0.05  # there is something to learn
    margin = (auc_oracle - rec["nearest_auc"]) / 3
    assert rec["model_auc"] >= rec["nearest_auc"] + margin, (rec, auc_oracle)
    top1_oracle = training.ranking_metrics(test, pd.Series(oracle).to_numpy())["top1"]
    top1_margin = (top1_oracle - rec["nearest_top1"]) / 3
    assert rec["model_top1"] >= rec["nearest_top1"] + top1_margin, (rec, top1_oracle)


def test_match_serves_ranked_idle_drivers_with_no_offline_online_skew(chain):
    rec = load_record(chain.run_dir, "06_match")
    assert rec["requests"] == param("06_match", "n_requests")
    assert 0 < rec["matched"] <= rec["requests"]
    assert rec["skew_checked"] > 0 and rec["skew_mismatches"] == 0
    assert rec["served_by"] == "started here"  # no service of the chain's run was running
    parts = rec["latency_ms"]
    assert set(parts) == {"candidates", "features", "scoring", "total", "http"}
    assert rec["p50_total_ms"] == parts["total"]["p50_ms"] > 0
    # each request's total is the sum of its parts, and its round trip spans the total,
    # so every quantile of the total is at least that of each part, and the round trip's
    # at least the total's
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        assert all(parts["total"][q] >= parts[p][q] for p in ("candidates", "features", "scoring"))
        assert parts["http"][q] >= parts["total"][q]


def test_the_replay_holds_five_policies_fairly_and_a_long_pickup_costs_riders(chain):
    """07 replays the held-out period under each policy, on common random numbers. Now
    that riders cancel long pickups, the first rule a dispatcher would try (highest
    accept_rate_7d first, however far) fulfils far less than nearest-first; the fitted
    rules put a price on distance; the model picks drivers who accept more often."""
    from ridematch_nb.model.dispatch import METRICS, POLICIES, WEIGHT_GRID

    rec = load_record(chain.run_dir, "07_dispatch")
    runs = pd.DataFrame(rec["runs"])
    assert sorted(runs["policy"].unique()) == sorted(POLICIES)
    assert runs["seed"].nunique() == rec["seeds"] >= 5
    # common random numbers: under one seed every policy saw the very same requests
    assert (runs.groupby("seed")["requests"].nunique() == 1).all()
    assert runs["requests"].min() > 100
    means = runs.groupby("policy")[METRICS].mean()
    for policy, row in means.iterrows():  # the table is the mean of the runs (both rounded)
        assert row.to_dict() == pytest.approx(
            {m: rec["policies"][policy][m] for m in METRICS}, abs=2e-4
        )
    per_seed = runs.pivot(index="seed", columns="policy", values="fulfilled")
    assert (per_seed["accept_rate"] < per_seed["nearest"] - 0.05).all(), per_seed
    assert means.at["accept_rate", "pickup_min"] > means.at["nearest", "pickup_min"] + 2
    assert means.at["accept_rate", "cancelled"] > means.at["nearest", "cancelled"] + 0.1
    assert set(rec["weights"]) == {"tuned", "model"}
    assert all(0 < w <= max(WEIGHT_GRID) for w in rec["weights"].values()), rec["weights"]
    # the model's dispatch loses no riders against today's rule: its paired margin over
    # nearest stays above -0.01 (the per-seed spread of that margin is about 0.01)
    assert (per_seed["model"] - per_seed["nearest"]).mean() > -0.01, per_seed
    first = means["first_offer_acceptance"]
    assert first["oracle"] > first["nearest"]  # the truth makes the better first offer
    # every request is picked up, cancelled after a match, declined by all, or had no
    # driver: the matched share's cancellations are the log's own figure
    matched = 1 - means["no_driver"] - means["declined_out"]
    assert ((means["fulfilled"] < matched) & (matched <= 1)).all()
    cancelled = (matched - means["fulfilled"]) / matched
    assert cancelled.to_dict() == pytest.approx(means["cancelled"].to_dict(), abs=0.01)
    assert rec["declines_won_back"] == pytest.approx(
        means.at["nearest", "declined_out"] - means.at["model", "declined_out"], abs=2e-4
    )


def test_the_logged_ranking_rewards_the_last_offer_and_first_offers_rank_fairly(chain):
    """05 shows why its top-1 misleads: in the logs the accepted offer is always the last
    one made, so offer order alone ranks perfectly; on first offers, which dispatch did
    not choose by their outcome, the model knows more than accept_rate_7d."""
    rec = load_record(chain.run_dir, "05_train")
    assert rec["last_offered_first_top1"] == 1.0
    assert rec["model_first_offer_auc"] > rec["accept_rate_first_offer_auc"] + 0.02, rec


def test_the_summary_prints_the_dispatch_policies_table_ranked_by_fulfilled(chain):
    from ridematch_nb.model.dispatch import POLICIES
    from ridematch_nb.pipeline import summary_text

    text = summary_text(chain)
    block = text.split("Dispatch policies")[1].splitlines()[2 : 2 + len(POLICIES)]
    recorded = load_record(chain.run_dir, "07_dispatch")["policies"]
    assert sorted(line.split()[0] for line in block) == sorted(POLICIES)
    shown = [float(line.split()[1]) for line in block]
    assert shown == sorted(shown, reverse=True)
    for line in block:
        policy, fulfilled = line.split()[0], float(line.split()[1])
        assert fulfilled == pytest.approx(recorded[policy]["fulfilled"], abs=5e-4)


def test_the_dispatch_figures_of_generation_add_up(chain):
    gen = load_record(chain.run_dir, "01_generate")
    # the CI world is a short, busy rush hour; the demo day's share is in the README
    assert 0.4 < gen["requests_fulfilled_share"] < 1
    assert gen["requests_fulfilled_share"] == gen["dispatch"]["fulfilled"]
    assert sum(gen["dispatch"]["unfulfilled_by_hour"].values()) == gen["requests_unfulfilled"]


def _figure(chain, name: str) -> list[dict]:
    import matplotlib.image

    pixels = matplotlib.image.imread(chain.run_dir / "figures" / f"{name}.png")
    assert pixels.std() > 0.01, name  # the picture is not blank
    return json.loads((chain.run_dir / "figures" / f"{name}.json").read_text())


def test_figures_show_the_data_they_were_drawn_from(chain):
    gen, insp = load_record(chain.run_dir, "01_generate"), load_record(chain.run_dir, "02_inspect")
    etl = load_record(chain.run_dir, "03_etl")
    per_type = {
        ax["title"].split(" per ")[0]: sum(ax["bars"][0])
        for ax in _figure(chain, "events_over_time")
    }
    assert per_type == gen["by_type"]
    landed = _figure(chain, "landed_by_hour")[0]["lines"]
    assert {etype: sum(ys) for etype, ys in landed.items()} == etl["lake_rows"]
    by_km = _figure(chain, "acceptance")[0]
    shown = dict(zip(by_km["xlabels"], (round(v, 4) for v in by_km["bars"][0]), strict=True))
    assert shown == insp["acceptance_by_km"]
    assert _figure(chain, "rejects")[0]["texts"] == ["no rejected records"]
    drivers = _figure(chain, "city_map")[0]
    assert drivers["scatter_points"] == CI["01_generate"]["n_drivers"]  # one dot per driver
    policies = _figure(chain, "dispatch_policies")
    first = next(ax for ax in policies if ax["title"] == "first-offer acceptance")
    shown = dict(zip(first["xlabels"], first["bars"][0], strict=True))
    recorded = load_record(chain.run_dir, "07_dispatch")["policies"]
    assert shown == pytest.approx(
        {p: recorded[p]["first_offer_acceptance"] for p in shown}, abs=1e-4
    )
    outcomes = _figure(chain, "request_outcomes")[0]["bars"]
    for bars, key in ((outcomes[0], "fulfilled"), (outcomes[2], "declined_out")):
        assert sorted(bars) == pytest.approx(sorted(r[key] for r in recorded.values()), abs=1e-4)
    for name in ("status_mix", "driver_stats", "feature_freshness", "roc", "calibration"):
        assert any(ax["bars"] or ax["lines"] for ax in _figure(chain, name)), name


def test_executed_notebooks_hold_no_secrets(chain, settings):
    secrets = [v for v in read_env_file(settings.secrets_file).values() if len(v) > 6]
    assert secrets
    for path in chain.run_dir.rglob("*"):
        if path.suffix in (".ipynb", ".json", ".yaml"):
            text = path.read_text()
            assert not any(s in text for s in secrets), path


def test_executed_notebooks_hold_no_endpoints(chain, settings):
    endpoints = [
        settings.kafka_bootstrap,
        settings.s3_endpoint.split("://")[-1],
        settings.redis_url.split("://")[-1].split("/")[0],
        "http://127.0.0.1",  # the match service 06 called (on the profile's or a free port)
    ]
    for path in chain.run_dir.rglob("*.ipynb"):
        text = path.read_text()
        assert not any(e in text for e in endpoints), path


def papermill_from(folder, notebook: str, **params) -> dict:
    """Run one notebook with the papermill CLI from ``folder``, as a user would by hand;
    returns the figures it recorded there."""
    args = [
        sys.executable,
        "-m",
        "papermill",
        str(PROJECT_ROOT / "notebooks" / f"{notebook}.ipynb"),
        str(folder / f"{notebook}.ipynb"),
        "-p",
        "params_file",
        TEST_PARAMS,
        "-p",
        "run_dir",
        str(folder),
    ]
    for key, value in params.items():
        args += ["-p", key, str(value)]
    proc = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((folder / f"{notebook}.json").read_text())


def test_papermill_runs_a_notebook_from_another_working_directory(stack, tmp_path):
    assert papermill_from(tmp_path, "02_inspect", max_events=2000)["events_read"] == 2000


def test_papermill_runs_the_etl_notebook_by_hand_from_another_directory(chain, tmp_path, unique):
    record = papermill_from(
        tmp_path, "03_etl", group=f"g-{unique}", prefix=f"tests/{unique}", idle_s=2
    )
    assert record["consumed"] == load_record(chain.run_dir, "01_generate")["delivered"]


def test_a_failing_notebook_stops_the_chain_with_the_cells_error(stack, tmp_path, monkeypatch):
    from ridematch_nb.pipeline import ChainError

    bad = tmp_path / "ci-bad.yaml"
    bad.write_text(
        f"extends: {resolve_path(TEST_PARAMS)}\nnotebooks:\n  01_generate:\n    mode: sideways\n"
    )
    with pytest.raises(ChainError) as err:
        run_chain(bad, run_dir=tmp_path / "run", say=lambda *_: None)
    message = str(err.value)
    assert "01_generate failed in cell" in message and "mode='sideways'" in message
    assert not (tmp_path / "run" / "02_inspect.ipynb").exists()
