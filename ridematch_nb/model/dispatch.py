"""Would dispatching with the model make better matches? Replay the simulated world's
held-out period once per dispatch policy and measure what riders and drivers got.

The simulator knows the truth, so this is measured, not estimated from logged offers:
the same world state at the training cut, then the same demand, the same coin for
every (request, driver) offer and the same patience for every rider under each policy
(common random numbers), so what differs between the policies' figures comes from the
policy alone. Each seed is one more draw of the held-out period from that same state.

The objective: **fulfilled**, the share of requests picked up (a driver accepted and the
rider did not cancel; riders cancel more the longer the pickup's expected wait, so a
far driver who accepts is worth less than a near one). The pickup's minutes beside it.

Policies, all but the oracle choosing among idle drivers by where they last reported:
``nearest`` (as the logged data was made); ``accept_rate`` (highest ``accept_rate_7d``
first); ``tuned`` and ``model``: the offer that starts the sequence of offers most
likely to pick the rider up (``best_sequence_first``), a driver's chance to accept
taken from its reported ``accept_rate_7d`` (``tuned``) or from the model, from each
driver's newest report as the store would serve it (``model``), and the rider's chance
to wait as exp(-w x pickup km); ``oracle`` (greedy on the true chance of a pickup, from
true positions). Each w is fitted on the training period alone (``run_replay``): the
last ``window`` before the cut replayed under each weight of a grid, the one with the
most fulfilled requests kept.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ridematch_nb.config import ParameterError
from ridematch_nb.contract.events import DRIVER_STATUSES, parse_ts
from ridematch_nb.model.training import TrainedModel, derived_features
from ridematch_nb.sim.dispatch import DispatchLog, Policy, Request, nearest, oracle, true_chances
from ridematch_nb.sim.world import World, WorldParams

POLICIES = ("nearest", "accept_rate", "tuned", "model", "oracle")
# The objective first, then what it costs riders and drivers.
METRICS = [
    "fulfilled",
    "cancelled",
    "no_driver",
    "declined_out",
    "first_offer_acceptance",
    "offers_per_fulfilled",
    "seconds_to_acceptance",
    "pickup_min",
    "pickup_km",
]
# Weights w tried for ``tuned`` and ``model`` on the training period: a rider is taken to
# wait for a pickup of d km with chance exp(-w d).
WEIGHT_GRID = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
FIT_SEEDS = (101,)  # apart from the evaluation's seeds 1..n


def accept_rate_policy(world: World, request: Request, candidates, km) -> int:
    """Highest reported ``accept_rate_7d`` first, however far."""
    return int(np.argmax(world.rep_rate[candidates]))


def best_sequence_first(accept: np.ndarray, stay: np.ndarray, offers_left: int) -> int:
    """The candidate to offer first so that the request is most likely picked up within
    ``offers_left`` offers, given each candidate's chance to accept and its rider's
    chance to wait for it.

    Offered in turn, candidates 1..k pick the rider up with chance sum_k a_k s_k
    prod_{j<k} (1 - a_j); swapping two neighbours shows the best order puts the larger
    s first, whatever the a: near drivers first. What acceptance decides is which
    candidates get one of the few offers: V(i, m) = max(V(i+1, m), a_i s_i +
    (1 - a_i) V(i+1, m-1)) over candidates by s, solved backwards; the first taken is
    offered now."""
    order = np.argsort(-stay, kind="stable")
    a, s = accept[order], stay[order]
    n, m = len(order), max(1, offers_left)
    value = np.zeros((n + 1, m + 1))
    for i in range(n - 1, -1, -1):
        take = a[i] * s[i] + (1 - a[i]) * value[i + 1, :-1]
        value[i, 1:] = np.maximum(value[i + 1, 1:], take)
    for i in range(n):
        if a[i] * s[i] + (1 - a[i]) * value[i + 1, m - 1] >= value[i + 1, m]:
            return int(order[i])
    return int(order[0])


def sequence_policy(acceptance, weight: float) -> Policy:
    """Offer so the request is most likely picked up (``best_sequence_first``), with
    ``acceptance(world, request, candidates, km)`` for the chance to accept and
    exp(-``weight`` x pickup km) for the rider's chance to wait."""

    def choose(world: World, request: Request, candidates, km) -> int:
        accept = acceptance(world, request, candidates, km)
        return best_sequence_first(accept, np.exp(-weight * km), world.offers_left)

    return choose


def reported_accept_rate(world: World, request: Request, candidates, km) -> np.ndarray:
    return world.rep_rate[candidates]


def tuned_policy(weight: float) -> Policy:
    """The best sequence of offers (``best_sequence_first``) with each driver's reported
    ``accept_rate_7d`` as its chance to accept."""
    return sequence_policy(reported_accept_rate, weight)


def model_acceptance(trained: TrainedModel, state_ttl_s: float):
    """The model's acceptance probability for each candidate, from its newest report: its
    position, status and statistics, as the store would serve them. A driver whose newest
    state is older than the state view's TTL has none served (serving skips such a
    driver): zero."""
    statuses = np.array(DRIVER_STATUSES)

    def accept(world: World, request: Request, candidates: np.ndarray, km) -> np.ndarray:
        cols = {
            "lat": world.rep_lat[candidates],
            "lon": world.rep_lon[candidates],
            "status": statuses[world.rep_status[candidates]],
            "accept_rate_7d": world.rep_rate[candidates],
            "avg_response_ms": world.rep_ms[candidates],
            "origin_lat": np.full(len(candidates), request.origin[0]),
            "origin_lon": np.full(len(candidates), request.origin[1]),
            "dest_lat": np.full(len(candidates), request.dest[0]),
            "dest_lon": np.full(len(candidates), request.dest[1]),
        }
        cols.update(derived_features(cols, pd.Timestamp(world.t, unit="s", tz="UTC")))
        served = world.t - world.rep_t[candidates] <= state_ttl_s
        return np.where(served, trained.score_columns(cols), 0.0)

    return accept


def model_policy(trained: TrainedModel, state_ttl_s: float, weight: float = 0.3) -> Policy:
    """The best sequence of offers (``best_sequence_first``) with the model's acceptance
    probability as each driver's chance to accept."""
    return sequence_policy(model_acceptance(trained, state_ttl_s), weight)


def sequence_oracle(world: World, request: Request, candidates, km) -> int:
    """The bound on any acceptance model inside the sequence rule: ``best_sequence_first``
    with the truth, each driver's true chance to accept and its rider's true chance to
    wait, from true positions. Not one of the five: ``bench --dispatch`` replays it to
    show what knowing acceptance perfectly is worth over ``tuned``."""
    accept, stay = true_chances(world, request, candidates, km)
    return best_sequence_first(accept, stay, world.offers_left)


sequence_oracle.sees_truth = True


def policies_for(trained: TrainedModel, state_ttl_s: float, weights: dict) -> dict:
    """The five policies of the replay, ``tuned`` and ``model`` with their fitted weights."""
    return {
        "nearest": nearest,
        "accept_rate": accept_rate_policy,
        "tuned": tuned_policy(weights["tuned"]),
        "model": model_policy(trained, state_ttl_s, weights["model"]),
        "oracle": oracle,
    }


def warm_up(params: WorldParams, until_epoch: int) -> World:
    """The world as dispatched nearest-first (as the logged data was) up to ``until``."""
    world = World(params, quiet=True)
    while world.t < until_epoch:
        world.step()
    return world


def replay(world: World, policy: Policy, seed: int, window_s: int) -> dict:
    """Run a copy of ``world`` for ``window_s`` seconds under ``policy`` with ``seed``'s
    randomness; the dispatch figures of the requests made in that window."""
    world = copy.deepcopy(world)
    world.policy = policy
    world.reseed(seed)
    world.log = DispatchLog(since=world.t, until=world.t + window_s)
    # then long enough for the window's last requests to run through all their offers
    drain_s = world.p.max_offers * (world.p.offer_timeout_s + 1)
    for _ in range(window_s + drain_s):
        world.step()
    return world.log.metrics()


@dataclass
class ReplayPlan:
    params: WorldParams
    cut_epoch: int  # the training cut: the replay starts here
    window_s: int
    seeds: list[int]


def plan(generated: dict, trained: TrainedModel, seeds: int, window_hours: float) -> ReplayPlan:
    """The replay of the world 01 generated (its record: ``world``, ``sim_end``) from the
    end of the model's training data, for ``window_hours`` (0: to the end of the
    simulated period), with seeds 1..``seeds``."""
    if seeds < 1:
        raise ParameterError(f"parameter seeds={seeds!r} must be at least 1")
    if window_hours < 0:
        raise ParameterError(f"parameter window_hours={window_hours!r} must be >= 0")
    cut = int(pd.Timestamp(trained.data_range["to"]).timestamp()) + 1
    end = int(parse_ts(generated["sim_end"]).timestamp())
    if end <= cut:
        raise ParameterError("the model's training data reaches the end of the simulated period")
    window = end - cut if not window_hours else min(round(window_hours * 3600), end - cut)
    return ReplayPlan(WorldParams(**generated["world"]), cut, window, list(range(1, seeds + 1)))


# What forked workers inherit: the warm world and the policies (a trained model does
# not need pickling that way).
_SHARED: dict = {}


def _run(task: tuple) -> dict:
    from threadpoolctl import threadpool_limits

    key, seed = task
    world, policies, window_s = _SHARED["world"], _SHARED["policies"], _SHARED["window_s"]
    name, weight = key if isinstance(key, tuple) else (key, None)
    # one scoring thread: a prediction per offer is small, and OpenMP threads spinning
    # on a shared machine made each take a hundred times longer
    with threadpool_limits(1):
        metrics = replay(world, policies[key], seed, window_s)
    return {
        "policy": name,
        "seed": seed,
        **({"weight": weight} if weight is not None else {}),
        **metrics,
    }


def _run_all(world: World, policies: dict, seeds, window_s: int, workers: int, bar) -> list:
    """Every policy of ``policies`` under every seed, from ``world``, on ``workers``
    forked processes (1: in this one)."""
    tasks = [(key, seed) for seed in seeds for key in policies]
    _SHARED.update(world=world, policies=policies, window_s=window_s)
    try:
        if workers == 1:
            rows = []
            for task in tasks:
                rows.append(_run(task))
                bar.update()
            return rows
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_run, t) for t in tasks]
            for _ in as_completed(futures):
                bar.update()
            return [f.result() for f in futures]
    finally:
        _SHARED.clear()


@dataclass
class Replay:
    runs: pd.DataFrame  # one row per (policy, seed): the figures of METRICS
    weights: dict  # the pickup-km weight fitted for ``tuned`` and ``model``
    fit: pd.DataFrame = field(repr=False)  # the fit's runs: (policy, weight, seed)
    fit_window: tuple = ()  # the training period's window the weights were fitted on


def run_replay(
    plan: ReplayPlan,
    trained: TrainedModel,
    state_ttl_s: float,
    workers: int | None = None,
    progress: bool = True,
    extra: dict | None = None,
) -> Replay:
    """Fit ``tuned``'s and ``model``'s weights on the window just before the cut (the
    training period), then replay the held-out window under the five policies (and any
    ``extra`` ones, by name). The world is warmed up once (nearest-first, as logged) to
    the fit's start and on to the cut; the runs go to ``workers`` forked processes
    (default: every core)."""
    if plan.window_s <= 0 or not plan.seeds:
        raise ParameterError("replay needs window_s > 0 and at least one seed")
    workers = workers or os.cpu_count() or 1
    begin = int(pd.Timestamp(trained.data_range["from"]).timestamp())
    fit_start = max(begin, plan.cut_epoch - plan.window_s)
    fitting = {
        **{("tuned", w): tuned_policy(w) for w in WEIGHT_GRID},
        **{("model", w): model_policy(trained, state_ttl_s, w) for w in WEIGHT_GRID},
    }
    extra = extra or {}
    total = 2 + len(fitting) * len(FIT_SEEDS) + (len(POLICIES) + len(extra)) * len(plan.seeds)
    with tqdm(total=total, desc="replay", unit="run", disable=not progress) as bar:
        bar.set_postfix_str("warming up to the fit's window")
        world = warm_up(plan.params, fit_start)
        bar.update()
        bar.set_postfix_str("fitting the weights on the training period")
        fit = pd.DataFrame(
            _run_all(world, fitting, FIT_SEEDS, plan.cut_epoch - fit_start, workers, bar)
        )
        mean = fit.groupby(["policy", "weight"])["fulfilled"].mean()
        weights = {rule: float(mean[rule].idxmax()) for rule in ("tuned", "model")}
        bar.set_postfix_str("on to the cut")
        while world.t < plan.cut_epoch:
            world.step()
        bar.update()
        bar.set_postfix_str("")
        policies = {**policies_for(trained, state_ttl_s, weights), **extra}
        runs = pd.DataFrame(_run_all(world, policies, plan.seeds, plan.window_s, workers, bar))
    return Replay(runs, weights, fit, (fit_start, plan.cut_epoch))


def policy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per policy: the mean of each figure over the seeds and its standard deviation (the
    five in their order, then any other)."""
    grouped = runs.groupby("policy", sort=False)[METRICS]
    table = grouped.mean().join(grouped.std(ddof=1).add_suffix("_sd"))
    others = [p for p in table.index if p not in POLICIES]
    return table.reindex([*POLICIES, *others])


def outcome_shares(table: pd.DataFrame) -> pd.DataFrame:
    """Where each policy's requests went, as shares of the requests made: picked up,
    cancelled by the rider after a match, every offer declined, no free driver near
    (they add up to 1)."""
    lost = table[["no_driver", "declined_out"]]
    return pd.DataFrame(
        {
            "picked up": table["fulfilled"],
            "cancelled by the rider": 1 - table["fulfilled"] - lost.sum(axis=1),
            "every offer declined": table["declined_out"],
            "no free driver near": table["no_driver"],
        }
    )


def gap_closed(table: pd.DataFrame, metric: str = "fulfilled", base: str = "nearest") -> float:
    """The share of the ``base``-to-oracle gap on ``metric`` the model closes."""
    low, model, best = (table.at[p, metric] for p in (base, "model", "oracle"))
    return float((model - low) / (best - low)) if best != low else float("nan")


def best_heuristic(table: pd.DataFrame, metric: str = "fulfilled") -> str:
    """The simple rule (nearest, accept_rate, tuned) with the highest mean ``metric``."""
    return str(table.loc[["nearest", "accept_rate", "tuned"], metric].idxmax())
