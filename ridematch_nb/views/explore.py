"""Exploring a finished run (notebooks 02 and 03): small summary tables they show and
record, and the interactive explorer: the events of the topic,
filtered by hour range, event type, area and driver, in charts that redraw in place.

The executed notebooks keep their static figures (plots.py) for readers of papermill
output; this is the same data with controls, for JupyterLab: one matplotlib figure on
an ipympl canvas whose artists move when a control changes.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import pyarrow as pa
from matplotlib.figure import Figure

from ridematch_nb.contract.events import DRIVER_STATUSES, EVENT_TYPES, InvalidEvent, decode
from ridematch_nb.geo import CITY_TZ
from ridematch_nb.views.watch import HOT_SPOTS, areas_of

ALL, CITY, ANY_DRIVER = "all", "whole city", ""
POSITION = {  # where each event type happens
    "driver_update": ("lat", "lon"),
    "rider_request": ("origin_lat", "origin_lon"),
    "offer_outcome": ("driver_lat", "driver_lon"),
}
MAP_POINTS = 4000  # a sample keeps the map light


def events_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per event with what the filters need: type, time, local hour, position,
    area, driver (None for rider requests) and status (driver updates only)."""
    parts = []
    for kind, df in frames.items():
        if not len(df):
            continue
        lat, lon = POSITION[kind]
        parts.append(
            pd.DataFrame(
                {
                    "event_type": kind,
                    "timestamp": df["timestamp"],
                    "lat": df[lat],
                    "lon": df[lon],
                    "driver_id": df.get("driver_id", None),
                    "status": df.get("status", None),
                }
            )
        )
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(table):
        table["hour"] = local_hour(table["timestamp"])
        table["area"] = areas_of(table["lat"].to_numpy(), table["lon"].to_numpy())
    return table


def select(
    table: pd.DataFrame,
    hours: tuple[int, int] = (0, 23),
    event_type: str = ALL,
    area: str = CITY,
    driver: str = ANY_DRIVER,
) -> pd.DataFrame:
    """The events the controls choose (hours in New York time, inclusive)."""
    keep = table["hour"].between(*hours)
    if event_type != ALL:
        keep &= table["event_type"] == event_type
    if area != CITY:
        keep &= table["area"] == area
    if driver:
        keep &= table["driver_id"] == driver
    return table[keep]


class Explorer:
    """Controls and three charts over one run's events."""

    def __init__(self, frames: dict[str, pd.DataFrame], seed: int = 0) -> None:
        from ipympl.backend_nbagg import Canvas, FigureManager

        self.table = events_table(frames)
        self.rng = np.random.default_rng(seed)
        self.hours = widgets.IntRangeSlider(
            value=(0, 23), min=0, max=23, description="hour (NY)", continuous_update=False
        )
        self.event_type = widgets.Dropdown(options=[ALL, *EVENT_TYPES], description="event type")
        self.area = widgets.Dropdown(options=[CITY, *sorted(HOT_SPOTS)], description="area")
        drivers = sorted(self.table["driver_id"].dropna().unique()) if len(self.table) else []
        self.driver = widgets.Combobox(
            options=drivers, placeholder="any driver", description="driver", ensure_option=True
        )
        self.counts = widgets.HTML()
        self.fig = Figure(figsize=(11, 8), layout="constrained")
        self.ax = self.fig.subplot_mosaic([["time", "map"], ["status", "map"]])
        hours = np.arange(24)
        self.per_type = {
            k: self.ax["time"].plot(hours, np.zeros(24), marker=".", label=k)[0]
            for k in EVENT_TYPES
        }
        self.per_status = {
            s: self.ax["status"].plot(hours, np.zeros(24), marker=".", label=s)[0]
            for s in DRIVER_STATUSES
        }
        self.points = {
            k: self.ax["map"].plot([], [], ".", markersize=2, alpha=0.6, label=k)[0]
            for k in EVENT_TYPES
        }
        titles = {
            "time": "events per hour (New York time)",
            "status": "driver updates by status and hour",
            "map": "where (a sample)",
        }
        for name, ax in self.ax.items():
            ax.set_title(titles[name], fontsize=10)
            ax.legend(fontsize=8, loc="upper left", markerscale=3 if name == "map" else 1)
        self.ax["map"].set_aspect(1 / 0.758, adjustable="datalim")
        self.canvas = Canvas(self.fig)
        FigureManager(self.canvas, 0)
        self.canvas.header_visible = False
        for control in (self.hours, self.event_type, self.area, self.driver):
            control.observe(lambda _: self.redraw(), names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.hours, self.event_type]),
                widgets.HBox([self.area, self.driver]),
                self.counts,
                self.canvas,
            ]
        )
        self.redraw()

    def chosen(self) -> pd.DataFrame:
        driver = self.driver.value if self.driver.value in self.driver.options else ANY_DRIVER
        return select(self.table, self.hours.value, self.event_type.value, self.area.value, driver)

    def redraw(self) -> None:
        rows = self.chosen()
        self.counts.value = f"{len(rows):,} of {len(self.table):,} events"
        hours = np.arange(24)
        per_hour = rows.groupby(["event_type", "hour"]).size()
        for kind, line in self.per_type.items():
            mine = per_hour.get(kind, pd.Series(dtype="int64"))
            line.set_ydata(np.array([int(mine.get(h, 0)) for h in hours]))
        updates = rows[rows["event_type"] == "driver_update"]
        mix = updates.groupby(["status", "hour"]).size()
        for status, line in self.per_status.items():
            mine = mix.get(status, pd.Series(dtype="int64"))
            line.set_ydata(np.array([int(mine.get(h, 0)) for h in hours]))
        sample = rows
        if len(rows) > MAP_POINTS:
            sample = rows.iloc[np.sort(self.rng.choice(len(rows), MAP_POINTS, replace=False))]
        for kind, line in self.points.items():
            mine = sample[sample["event_type"] == kind]
            line.set_data(mine["lon"], mine["lat"])
            line.set_linestyle("-" if self.driver.value else "None")
        for ax in self.ax.values():
            ax.relim()
            ax.autoscale_view()
        self.canvas.draw_idle()


def explorer(frames: dict[str, pd.DataFrame]) -> widgets.VBox:
    """The explorer's widget, for a notebook cell."""
    return Explorer(frames).widget


def local_hour(ts: pd.Series) -> pd.Series:
    """Hour of day in New York, where the simulated riders and drivers live."""
    return ts.dt.tz_convert(CITY_TZ).dt.hour


def acceptance_table(offers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Acceptance rate (and count) by pickup distance band and by hour of day."""
    edges = [0, 0.5, 1, 1.5, 2, 3, 4, 6, 200]
    labels = [f"{a:g}–{b:g}" if b < 200 else f">{a:g}" for a, b in pairwise(edges)]
    bands = pd.cut(offers["pickup_km"], edges, labels=labels, include_lowest=True)
    by_km = offers.groupby(bands, observed=True)["accepted"].agg(rate="mean", offers="count")
    by_hour = offers.groupby(local_hour(offers["timestamp"]))["accepted"].agg(
        rate="mean", offers="count"
    )
    return by_km, by_hour


def sample_end(records: list) -> pd.Timestamp | None:
    """Where a capped read of the topic ends for all partitions: the earliest of each
    partition's newest event time read. Past it some partitions were not read yet, so
    charts of the sample stop there rather than show a market that seems to fade."""
    newest: dict[int, pd.Timestamp] = {}
    for record in reversed(records):  # each partition's records come in offset order
        if record.partition in newest:
            continue
        try:
            newest[record.partition] = pd.Timestamp(decode(record.value)["timestamp"])
        except InvalidEvent:
            continue  # not an event: an earlier record of the partition will tell
    return min(newest.values()) if newest else None


def until(frames: dict[str, pd.DataFrame], end: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Every frame's events at or before ``end``."""
    return {etype: df[df["timestamp"] <= end] for etype, df in frames.items()}


def stream_summary(
    frames: dict[str, pd.DataFrame], rejected: dict[str, int], events_read: int
) -> dict[str, Any]:
    """What notebook 02 records about a read of the topic: counts by type and reason,
    drivers seen, acceptance overall and by pickup distance, the event-time span."""
    offers = frames["offer_outcome"]
    by_km, _ = acceptance_table(offers)
    stamps = [df["timestamp"] for df in frames.values() if len(df)]
    return {
        "events_read": events_read,
        "by_type": {etype: len(df) for etype, df in frames.items()},
        "rejected": rejected,
        "drivers_seen": int(frames["driver_update"]["driver_id"].nunique()),
        "acceptance_rate": round(float(offers["accepted"].mean()), 4) if len(offers) else None,
        "acceptance_by_km": {str(k): round(v, 4) for k, v in by_km["rate"].items()},
        "first_event": str(min(s.min() for s in stamps)) if stamps else None,
        "last_event": str(max(s.max() for s in stamps)) if stamps else None,
    }


def rows_per_hour(tables: dict[str, pa.Table]) -> dict[str, pd.Series]:
    """Rows per event type and hour of event time (UTC), from tables with a timestamp."""
    return {
        etype: table.column("timestamp").to_pandas().dt.floor("h").value_counts().sort_index()
        for etype, table in tables.items()
    }
