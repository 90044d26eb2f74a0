"""Charts of the event stream. Each function takes DataFrames and returns a Figure;
``save`` writes it as PNG into the run folder. Nothing here reads servers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from ridematch_nb.runs import run_folder
from ridematch_nb.sim.city import AIRPORTS, BUSINESS, NIGHTLIFE, RESIDENTIAL
from ridematch_nb.views.explore import acceptance_table, local_hour

COLORS = {"driver_update": "#4C72B0", "rider_request": "#DD8452", "offer_outcome": "#55A868"}
STATUS_COLORS = {
    "idle": "#55A868",
    "en_route": "#DD8452",
    "on_trip": "#4C72B0",
    "offline": "#8C8C8C",
}


def figure_path(run_dir: str | Path, name: str) -> Path:
    return run_folder(run_dir) / "figures" / f"{name}.png"


def save(fig: Figure, run_dir: str | Path, name: str) -> None:
    """Save a figure as ``<run_dir>/figures/<name>.png`` (the notebook still shows it
    inline), and what it plots beside it as ``<name>.json`` (``figure_data``), so a test
    can check what a chart shows against the data it was drawn from."""
    path = figure_path(run_dir, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    path.with_suffix(".json").write_text(json.dumps(figure_data(fig), default=float))


def finish(ax, title: str, legend: dict | None = None, grid: str | None = None, size: int = 10):
    """One axes' finish, the same on every chart: the title on the left and, when asked,
    a small legend (``legend`` places it) and a light grid (``grid``: "both", "x", "y")."""
    ax.set_title(title, fontsize=size, loc="left")
    if legend is not None:
        ax.legend(**{"fontsize": 8, **legend})
    if grid is not None:
        ax.grid(axis=grid, alpha=0.3)


def figure_data(fig: Figure) -> list[dict]:
    """Per axes of a figure: its title, the values of its bars (each bar container), the
    y values of its labelled lines and its texts."""
    out = []
    for ax in fig.axes:
        out.append(
            {
                "title": ax.get_title(loc="left") or ax.get_title(),
                "bars": [
                    [float(v) for v in c.datavalues]
                    for c in ax.containers
                    if isinstance(c, BarContainer)
                ],
                "lines": {
                    line.get_label(): [float(v) for v in line.get_ydata()] for line in ax.lines
                },
                "texts": [t.get_text() for t in ax.texts],
                "xlabels": [t.get_text() for t in ax.get_xticklabels()],
                "scatter_points": sum(
                    len(c.get_offsets())
                    for c in ax.collections
                    if c.__class__.__name__ == "PathCollection"
                ),
            }
        )
    return out


def events_over_time(frames: dict[str, pd.DataFrame], freq: str = "1h") -> Figure:
    """Events per interval and type: the day's rhythm (demand peaks, driver shifts)."""
    fig, axes = plt.subplots(3, 1, figsize=(10, 6.5), sharex=True)
    for ax, (etype, df) in zip(axes, frames.items(), strict=True):
        counts = df.set_index("timestamp").resample(freq).size() if len(df) else pd.Series()
        ax.bar(
            counts.index,
            counts.values,
            width=pd.Timedelta(freq) * 0.9,
            align="edge",
            color=COLORS[etype],
        )
        ax.set_ylabel("events")
        finish(ax, f"{etype} per {freq}")
    axes[-1].set_xlabel("simulated time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def city_map(frames: dict[str, pd.DataFrame], max_points: int = 4000, seed: int = 0) -> Figure:
    """Latest driver positions by status and request origins over New York's hot spots."""
    drivers = frames["driver_update"]
    latest = drivers.sort_values("timestamp").groupby("driver_id").tail(1)
    requests = frames["rider_request"]
    if len(requests) > max_points:
        requests = requests.sample(max_points, random_state=seed)
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.5), sharex=True, sharey=True)
    ax = axes[0]
    for status, color in STATUS_COLORS.items():
        sel = latest[latest["status"] == status]
        ax.scatter(sel["lon"], sel["lat"], s=6, c=color, label=f"{status} ({len(sel)})", alpha=0.8)
    ax.set_title("drivers: latest position by status", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, markerscale=2)
    axes[1].hexbin(
        requests["origin_lon"],
        requests["origin_lat"],
        gridsize=45,
        cmap="Oranges",
        mincnt=1,
        bins="log",
    )
    axes[1].set_title(f"rider request origins (n={len(frames['rider_request'])})", fontsize=10)
    for ax in axes:
        for name, lat, lon, _ in BUSINESS + NIGHTLIFE + RESIDENTIAL + AIRPORTS:
            ax.annotate(
                name.replace("_", " "),
                (lon, lat),
                fontsize=6.5,
                color="#333333",
                ha="center",
                va="bottom",
            )
        ax.set_aspect(1 / math.cos(math.radians(40.73)))
        ax.set_xlabel("longitude")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("latitude")
    fig.tight_layout()
    return fig


def status_mix(frames: dict[str, pd.DataFrame]) -> Figure:
    """Share of driver updates by status, per hour of day."""
    df = frames["driver_update"]
    table = (
        df.assign(hour=local_hour(df["timestamp"]))
        .pivot_table(index="hour", columns="status", values="driver_id", aggfunc="count")
        .reindex(columns=list(STATUS_COLORS))
        .fillna(0)
    )
    share = table.div(table.sum(axis=1), axis=0)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    bottom = np.zeros(len(share))
    for status in share.columns:
        ax.bar(share.index, share[status], bottom=bottom, color=STATUS_COLORS[status], label=status)
        bottom += share[status].values
    ax.set_xlabel("hour of day (New York)")
    ax.set_xticks(range(0, 24))
    ax.set_xlim(-0.5, 23.5)
    ax.set_ylabel("share of driver updates")
    finish(
        ax,
        "driver status mix by hour",
        legend={"ncol": 4, "loc": "upper center", "bbox_to_anchor": (0.5, -0.18)},
    )
    fig.tight_layout()
    return fig


def driver_stats(frames: dict[str, pd.DataFrame]) -> Figure:
    """Distributions of each driver's latest rolling 7-day statistics."""
    df = frames["driver_update"]
    latest = df.sort_values("timestamp").groupby("driver_id").tail(1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].hist(latest["accept_rate_7d"], bins=30, color="#55A868")
    axes[0].set_xlabel("accept_rate_7d (latest per driver)")
    axes[1].hist(latest["avg_response_ms"], bins=30, color="#4C72B0")
    axes[1].set_xlabel("avg_response_ms (latest per driver)")
    for ax in axes:
        ax.set_ylabel("drivers")
    fig.tight_layout()
    return fig


def acceptance(offers: pd.DataFrame) -> Figure:
    """How offer acceptance falls with pickup distance and moves with the hour of day."""
    by_km, by_hour = acceptance_table(offers)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].bar(by_km.index.astype(str), by_km["rate"], color="#55A868")
    for x, (rate, n) in enumerate(zip(by_km["rate"], by_km["offers"], strict=True)):
        axes[0].annotate(f"n={n}", (x, rate), ha="center", va="bottom", fontsize=7)
    axes[0].set_xlabel("pickup distance (km)")
    axes[0].set_ylabel("offers accepted")
    axes[0].set_ylim(0, 1)
    axes[1].plot(by_hour.index, by_hour["rate"], marker="o", color="#DD8452")
    axes[1].set_xlabel("hour of day (New York)")
    axes[1].set_ylim(0, 1)
    axes[1].set_xticks(range(0, 24, 3))
    axes[1].set_xlim(-0.5, 23.5)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("offer acceptance", fontsize=10, x=0.02, ha="left")
    fig.tight_layout()
    return fig


def landed_by_hour(counts: dict[str, pd.Series]) -> Figure:
    """Rows landed in the lake per event type and event hour (UTC), as the ETL partitioned them."""
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for etype, series in counts.items():
        if len(series):
            ax.plot(series.index, series.values, marker=".", label=etype, color=COLORS[etype])
    ax.set_yscale("log")
    ax.set_ylabel("rows (log scale)")
    ax.set_xlabel("event hour (UTC)")
    finish(ax, "rows landed per event type and hour", legend={}, grid="both")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def rejects(reasons: dict[str, int]) -> Figure:
    """Records sent to the rejected area, by reason (an empty chart says: none)."""
    fig, ax = plt.subplots(figsize=(7, 2.8))
    if reasons:
        names = sorted(reasons, key=reasons.get)
        ax.barh(names, [reasons[n] for n in names], color="#C44E52")
        ax.set_xlabel("records")
    else:
        ax.text(0.5, 0.5, "no rejected records", ha="center", va="center", fontsize=12)
        ax.set_axis_off()
    finish(ax, "rejected by reason")
    fig.tight_layout()
    return fig


def feature_freshness(latest: pd.DataFrame, as_of: str) -> Figure:
    """Age of each on-shift driver's newest value at materialization time; drivers by status."""
    age_min = (pd.Timestamp(as_of) - latest["timestamp"]).dt.total_seconds() / 60
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for status, color in STATUS_COLORS.items():
        sel = age_min[latest["status"] == status]
        if len(sel) and status != "offline":
            axes[0].hist(sel, bins=30, alpha=0.7, color=color, label=f"{status} ({len(sel)})")
    axes[0].set_xlabel("minutes since the driver's last update (drivers on shift)")
    axes[0].set_ylabel("drivers")
    axes[0].legend(fontsize=8)
    counts = latest["status"].value_counts().reindex(list(STATUS_COLORS)).fillna(0)
    axes[1].bar(counts.index, counts.values, color=[STATUS_COLORS[s] for s in counts.index])
    axes[1].set_ylabel("drivers in the online store")
    fig.suptitle("online feature freshness and coverage", fontsize=10, x=0.02, ha="left")
    fig.tight_layout()
    return fig


def roc(test: pd.DataFrame, scores: dict[str, np.ndarray], label: str = "accepted") -> Figure:
    """ROC curves of the model and the baselines on the held-out period."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(test[label], score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(test[label], score):.3f})")
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    finish(ax, "acceptance: ROC on the held-out period", legend={"loc": "lower right"})
    fig.tight_layout()
    return fig


def calibration(test: pd.DataFrame, prob: np.ndarray, label: str = "accepted") -> Figure:
    """Predicted acceptance probability against the observed rate, in deciles."""
    bins = pd.qcut(prob, 10, duplicates="drop")
    table = pd.DataFrame({"p": prob, "y": test[label].astype(float).to_numpy(), "bin": bins})
    agg = table.groupby("bin", observed=True).agg(p=("p", "mean"), y=("y", "mean"))
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":")
    ax.plot(agg["p"], agg["y"], marker="o", color="#4C72B0")
    ax.set_xlabel("predicted probability of acceptance")
    ax.set_ylabel("observed acceptance")
    finish(ax, "calibration (deciles of the prediction)")
    fig.tight_layout()
    return fig


def importance(names: list[str], means: np.ndarray, stds: np.ndarray) -> Figure:
    """Permutation importance: how much AUC drops when a feature is shuffled."""
    order = np.argsort(means)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.barh(np.array(names)[order], means[order], xerr=stds[order], color="#55A868")
    ax.set_xlabel("drop in AUC when shuffled")
    finish(ax, "feature importance (held-out period)")
    fig.tight_layout()
    return fig


def metric_by_hour(
    test: pd.DataFrame, scores: dict[str, np.ndarray], label: str = "accepted"
) -> Figure:
    """AUC of each scorer per hour of day (New York), where there are both outcomes."""
    from sklearn.metrics import roc_auc_score

    hours = local_hour(test["timestamp"])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, score in scores.items():
        per_hour = {}
        for h in sorted(hours.unique()):
            mask = (hours == h).to_numpy()
            if test[label][mask].nunique() == 2:
                per_hour[h] = roc_auc_score(test[label][mask], score[mask])
        ax.plot(list(per_hour), list(per_hour.values()), marker="o", label=name)
    ax.set_xlabel("hour of day (New York)")
    ax.set_ylabel("AUC")
    finish(ax, "acceptance AUC by hour", legend={}, grid="both")
    fig.tight_layout()
    return fig


def latency(timings: pd.DataFrame) -> Figure:
    """Distribution of match latency, whole and by part (milliseconds)."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    parts = [p for p in ("candidates", "features", "scoring", "total", "http") if p in timings]
    ax.boxplot([timings[p] for p in parts], tick_labels=parts, orientation="horizontal")
    ax.set_xscale("log")  # the first lookups warm Feast's caches: keep the outliers visible
    ax.set_xlabel("milliseconds (log scale)")
    finish(ax, "match latency by part", grid="both")
    fig.tight_layout()
    return fig


POLICY_COLORS = {
    "nearest": "#8C8C8C",
    "accept_rate": "#DD8452",
    "tuned": "#C4AD66",
    "model": "#4C72B0",
    "oracle": "#55A868",
}
POLICY_METRICS = {  # figure of the replay -> what its axis says
    "fulfilled": "fulfilled: picked up (the objective)",
    "cancelled": "matched, then cancelled by the rider",
    "first_offer_acceptance": "first-offer acceptance",
    "pickup_min": "pickup wait, minutes (fulfilled)",
    "pickup_km": "pickup km (fulfilled)",
}


def dispatch_policies(runs: pd.DataFrame) -> Figure:
    """One panel per figure of the replay: a bar per policy (mean over the seeds), a dot
    per seed, so a reader sees whether a difference stands out of the spread."""
    policies = [p for p in POLICY_COLORS if p in set(runs["policy"])]
    fig, axes = plt.subplots(1, len(POLICY_METRICS), figsize=(15, 3.6))
    for ax, (metric, title) in zip(axes, POLICY_METRICS.items(), strict=True):
        per = [runs.loc[runs["policy"] == p, metric].to_numpy() for p in policies]
        x = np.arange(len(policies))
        ax.bar(x, [v.mean() for v in per], color=[POLICY_COLORS[p] for p in policies], alpha=0.8)
        for xi, values in zip(x, per, strict=True):
            ax.scatter(np.full(len(values), xi), values, color="black", s=10, zorder=3)
        low = min(v.min() for v in per)
        if metric in ("fulfilled", "first_offer_acceptance", "cancelled"):
            ax.set_ylim(max(0.0, low - 0.1), min(1.0, max(v.max() for v in per) + 0.05))
        ax.set_xticks(x, policies, rotation=30, ha="right", fontsize=8)
        finish(ax, title, grid="y", size=9)
    fig.suptitle(
        f"dispatch policies on the held-out period ({runs['seed'].nunique()} seeds)",
        fontsize=10,
        x=0.01,
        ha="left",
    )
    fig.tight_layout()
    return fig


def request_outcomes(shares: pd.DataFrame) -> Figure:
    """Where each policy's requests went (``dispatch.outcome_shares``, means over the
    seeds), one stacked bar each: the picked up, and the three ways to lose one; only
    "every offer declined" is a loss a better guess of who accepts can win back, and only
    by a pickup riders will wait for."""
    shares = shares.iloc[::-1]  # the first policy on top
    fig, ax = plt.subplots(figsize=(9, 3.6))
    left = np.zeros(len(shares))
    for column, color in zip(shares, ("#55A868", "#C44E52", "#DD8452", "#8C8C8C"), strict=True):
        ax.barh(shares.index, shares[column], left=left, color=color, label=column)
        left += shares[column].to_numpy()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the requests made in the replayed period")
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.22), "ncol": 4}
    finish(ax, "where the requests went, by policy", below, "x")
    fig.tight_layout()
    return fig
