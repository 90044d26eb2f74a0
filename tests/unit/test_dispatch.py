"""The dispatch replay: its plan, the model policy's view of the drivers, fair runs."""

import types

import numpy as np
import pandas as pd
import pytest

from ridematch_nb.config import ParameterError
from ridematch_nb.geo import distance_km
from ridematch_nb.model import dispatch
from ridematch_nb.sim import dispatch as sim_dispatch
from ridematch_nb.sim.world import World, WorldParams

SMALL = {"n_drivers": 200, "n_riders": 400, "request_rate": 0.03, "start": "2026-10-05T11:00:00Z"}


class ScoresByReportedRate:
    """A stand-in model: scores a candidate by the accept rate it last reported."""

    def __init__(self):
        self.features = ["accept_rate_7d", "pickup_km"]
        self.seen = []

    def score_columns(self, cols: dict) -> np.ndarray:
        self.seen.append(pd.DataFrame({f: cols[f] for f in self.features}))
        return np.asarray(cols["accept_rate_7d"])


def test_the_model_policy_sees_what_drivers_last_reported_and_skips_expired_state():
    world = World(WorldParams(seed=1, **SMALL))
    for _ in range(600):
        world.step()
    candidates = np.array([3, 4, 5])
    world.rep_rate[candidates] = [0.2, 0.9, 0.95]
    world.rep_t[candidates] = [world.t, world.t, world.t - 1801]  # 5's state has expired
    request = sim_dispatch.Request("r", "rider_1", [40.75, -73.98], [40.70, -74.0], 1, world.t)
    model = ScoresByReportedRate()
    km = np.array([1.0, 2.0, 0.5])
    accept = dispatch.model_acceptance(model, state_ttl_s=1800)(world, request, candidates, km)
    assert accept[0] == pytest.approx(0.2) and accept[2] == 0  # 5 is served nothing
    world.offers_left = 1  # the last offer: the best chance of a pickup at once
    policy = dispatch.model_policy(model, state_ttl_s=1800, weight=0.3)
    assert policy(world, request, candidates, km) == 1
    # pickup from the reported position, not the true one
    seen = model.seen[-1]
    expected = distance_km(world.rep_lat[candidates], world.rep_lon[candidates], 40.75, -73.98)
    assert np.allclose(seen["pickup_km"], expected)


def test_a_replay_counts_the_window_only_and_every_policy_sees_the_same_requests():
    params = WorldParams(seed=2, **SMALL)
    world = dispatch.warm_up(params, World(params).t + 1800)
    before = world.log.requests
    results = {
        p: dispatch.replay(world, fn, 7, 1200)
        for p, fn in (("n", sim_dispatch.nearest), ("o", sim_dispatch.oracle))
    }
    assert results["n"]["requests"] == results["o"]["requests"] > 20
    assert world.log.requests == before  # the warm world itself is left as it was
    again = dispatch.replay(world, sim_dispatch.nearest, 7, 1200)
    assert again == results["n"]  # a replay is deterministic
    assert dispatch.replay(world, sim_dispatch.nearest, 8, 1200) != again  # and the seed matters


def test_plan_starts_at_the_end_of_the_training_data_and_names_wrong_parameters():
    class Trained:
        data_range = types.MappingProxyType({"to": "2026-10-05 13:14:59+00:00"})

    generated = {"world": {"seed": 42, **SMALL}, "sim_end": "2026-10-05T14:00:00Z"}
    plan = dispatch.plan(generated, Trained, seeds=5, window_hours=0)
    assert pd.Timestamp(plan.cut_epoch, unit="s", tz="UTC") == pd.Timestamp("2026-10-05 13:15:00Z")
    assert plan.window_s == 45 * 60 and plan.seeds == [1, 2, 3, 4, 5]
    assert plan.params.n_drivers == 200
    assert dispatch.plan(generated, Trained, seeds=2, window_hours=0.25).window_s == 900
    assert dispatch.plan(generated, Trained, seeds=2, window_hours=9).window_s == 45 * 60
    with pytest.raises(ParameterError, match="seeds"):
        dispatch.plan(generated, Trained, seeds=0, window_hours=0)
    with pytest.raises(ParameterError, match="window_hours"):
        dispatch.plan(generated, Trained, seeds=2, window_hours=-1)


def test_the_policy_table_is_the_mean_and_spread_of_the_runs():
    bases = {"oracle": 2.0, "tuned": 0.5, "nearest": 0.0, "model": 1.0, "accept_rate": -1.0}
    runs = pd.DataFrame(
        [
            {"policy": p, "seed": s, "requests": 10, **{m: base + s for m in dispatch.METRICS}}
            for p, base in bases.items()
            for s in (1, 2, 3)
        ]
    )
    table = dispatch.policy_table(runs)
    assert list(table.index) == list(dispatch.POLICIES)
    bound = runs[runs["policy"] == "oracle"].assign(policy="sequence_oracle")
    with_bound = dispatch.policy_table(pd.concat([bound, runs]))  # an extra comes last
    assert list(with_bound.index) == [*dispatch.POLICIES, "sequence_oracle"]
    assert table.at["model", "fulfilled"] == 3.0 and table.at["model", "fulfilled_sd"] == 1.0
    assert dispatch.gap_closed(table) == pytest.approx(0.5)
    assert dispatch.best_heuristic(table) == "tuned"


def _pickup_chance(order, a, s) -> float:
    """The chance that offering ``order`` in turn picks the rider up."""
    chance, none_yet = 0.0, 1.0
    for i in order:
        chance += none_yet * a[i] * s[i]
        none_yet *= 1 - a[i]
    return chance


def _best(candidates, a, s, m) -> float:
    import itertools

    return max(
        (
            _pickup_chance(order, a, s)
            for k in range(1, m + 1)
            for order in itertools.permutations(candidates, k)
        ),
        default=0.0,
    )


def test_the_sequence_rule_offers_first_what_starts_the_best_sequence_of_offers():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n, m = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        a, s = rng.uniform(0.05, 0.95, n), rng.uniform(0.05, 1.0, n)
        first = dispatch.best_sequence_first(a, s, m)
        rest = [j for j in range(n) if j != first]
        got = a[first] * s[first] + (1 - a[first]) * _best(rest, a, s, m - 1)
        assert got == pytest.approx(_best(range(n), a, s, m), abs=1e-12), (a, s, m)


def test_with_offers_to_spare_the_nearest_goes_first_whatever_its_acceptance():
    a = np.array([0.1, 0.9, 0.5])
    s = np.array([0.9, 0.5, 0.7])  # candidate 0 is the nearest: its rider waits most
    assert dispatch.best_sequence_first(a, s, offers_left=3) == 0
    assert dispatch.best_sequence_first(a, s, offers_left=1) == 1  # one offer: best a*s


def test_the_sequence_oracle_runs_the_sequence_rule_on_the_truth():
    """bench --dispatch's bound: best_sequence_first on each candidate's true chance to
    accept and its rider's true chance to wait, from true positions."""
    seen = []

    def watch(world, request, candidates, km):
        j = dispatch.sequence_oracle(world, request, candidates, km)
        lat, lon = world.positions()
        assert np.allclose(km, distance_km(lat, lon, *request.origin)[candidates])
        accept, stay = sim_dispatch.true_chances(world, request, candidates, km)
        seen.append(j == dispatch.best_sequence_first(accept, stay, world.offers_left))
        return j

    watch.sees_truth = dispatch.sequence_oracle.sees_truth
    world = World(WorldParams(seed=5, **SMALL), policy=watch)
    for _ in range(1800):
        world.step()
    assert len(seen) > 50 and all(seen)
