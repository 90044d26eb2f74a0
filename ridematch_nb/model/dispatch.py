"""Would dispatching with the model make better matches? Replay the simulated world's
held-out period once per dispatch policy and measure what riders and drivers got.

The simulator knows the truth, so this is measured, not estimated from logged offers:
the same world state at the training cut, then the same demand and the same coin for
every (request, driver) offer under each policy (common random numbers), so what
differs between the policies' figures comes from the policy alone. Each seed is one
more draw of the held-out period from that same state, to show the spread.

Policies: ``nearest`` (dispatch as the logged data was made), ``model`` (the trained
model scores the free idle drivers within the radius from what each last reported, as
the feature store would serve it, through the request-feature function serving uses),
``oracle`` (the true acceptance probability).
"""

from __future__ import annotations

import copy
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ridematch_nb.config import ParameterError
from ridematch_nb.contract.events import DRIVER_STATUSES, parse_ts
from ridematch_nb.model.training import TrainedModel, derived_features
from ridematch_nb.sim.dispatch import DispatchLog, Policy, Request, nearest, oracle
from ridematch_nb.sim.world import World, WorldParams

POLICIES = ("nearest", "model", "oracle")
METRICS = [
    "fulfilled",
    "first_offer_acceptance",
    "offers_per_fulfilled",
    "seconds_to_acceptance",
    "pickup_km",
]


def model_policy(trained: TrainedModel, state_ttl_s: float) -> Policy:
    """Offer first to the candidate the model scores highest, from each driver's newest
    report: its position, status and statistics, as the store would serve them. A driver
    whose newest state is older than the state view's TTL has none served (serving skips
    such a driver), so it goes last."""
    statuses = np.array(DRIVER_STATUSES)

    def choose(world: World, request: Request, candidates: np.ndarray, km: np.ndarray) -> int:
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
        scores = trained.score_columns(cols)
        served = world.t - world.rep_t[candidates] <= state_ttl_s
        return int(np.argmax(np.where(served, scores, -1.0)))

    return choose


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


def _run(task: tuple[str, int]) -> dict:
    from threadpoolctl import threadpool_limits

    name, seed = task
    world, policies, window_s = _SHARED["world"], _SHARED["policies"], _SHARED["window_s"]
    # one scoring thread: a prediction per offer is small, and OpenMP threads spinning
    # on a shared machine made each take a hundred times longer
    with threadpool_limits(1):
        return {"policy": name, "seed": seed, **replay(world, policies[name], seed, window_s)}


def run_replay(
    plan: ReplayPlan,
    trained: TrainedModel,
    state_ttl_s: float,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per (policy, seed): the figures of ``METRICS`` and the request count.
    The world is warmed up once; the runs go to ``workers`` forked processes (default:
    every core)."""
    if plan.window_s <= 0 or not plan.seeds:
        raise ParameterError("replay needs window_s > 0 and at least one seed")
    policies = {"nearest": nearest, "model": model_policy(trained, state_ttl_s), "oracle": oracle}
    tasks = [(name, seed) for seed in plan.seeds for name in POLICIES]
    with tqdm(total=len(tasks) + 1, desc="replay", unit="run", disable=not progress) as bar:
        bar.set_postfix_str("warming up to the cut")
        world = warm_up(plan.params, plan.cut_epoch)
        bar.update()
        bar.set_postfix_str("")
        _SHARED.update(world=world, policies=policies, window_s=plan.window_s)
        try:
            workers = workers or os.cpu_count() or 1
            if workers == 1:
                rows = []
                for task in tasks:
                    rows.append(_run(task))
                    bar.update()
            else:
                context = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(workers, mp_context=context) as pool:
                    futures = [pool.submit(_run, t) for t in tasks]
                    for _ in as_completed(futures):
                        bar.update()
                    rows = [f.result() for f in futures]
        finally:
            _SHARED.clear()
    return pd.DataFrame(rows)


def policy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per policy: the mean of each figure over the seeds and its standard deviation."""
    grouped = runs.groupby("policy", sort=False)[METRICS]
    table = grouped.mean().join(grouped.std(ddof=1).add_suffix("_sd"))
    return table.reindex(list(POLICIES))


def gap_closed(table: pd.DataFrame, metric: str = "first_offer_acceptance") -> float:
    """The share of the nearest-to-oracle gap on ``metric`` the model closes."""
    near, model, best = (table.at[p, metric] for p in POLICIES)
    return float((model - near) / (best - near)) if best != near else float("nan")
