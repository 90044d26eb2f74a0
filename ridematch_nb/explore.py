"""Interactive exploration of a finished run (notebook 02): the events of the topic,
filtered by hour range, event type, area and driver, in charts that redraw in place.

The executed notebooks keep their static figures (plots.py) for readers of papermill
output; this is the same data with controls, for JupyterLab.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ridematch_nb.events import DRIVER_STATUSES, EVENT_TYPES
from ridematch_nb.plots import local_hour
from ridematch_nb.watch import HOT_SPOTS, areas_of

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
        self.fig_time = self._figure("events per hour (New York time)", barmode="stack")
        for kind in EVENT_TYPES:
            self.fig_time.add_bar(name=kind)
        self.fig_map = self._figure("where (a sample)", height=420)
        for kind in EVENT_TYPES:
            self.fig_map.add_scatter(name=kind, mode="markers", marker={"size": 4, "opacity": 0.6})
        self.fig_map.update_yaxes(scaleanchor="x", scaleratio=1 / 0.758)
        self.fig_status = self._figure("driver status by hour (driver updates)", barmode="stack")
        for status in DRIVER_STATUSES:
            self.fig_status.add_bar(name=status)
        for control in (self.hours, self.event_type, self.area, self.driver):
            control.observe(lambda _: self.redraw(), names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.hours, self.event_type]),
                widgets.HBox([self.area, self.driver]),
                self.counts,
                widgets.HBox([self.fig_time, self.fig_status]),
                self.fig_map,
            ]
        )
        self.redraw()

    @staticmethod
    def _figure(title: str, height: int = 300, **layout) -> go.FigureWidget:
        fig = go.FigureWidget()
        fig.update_layout(
            title={"text": title, "font": {"size": 13}},
            height=height,
            width=520,
            margin={"l": 50, "r": 10, "t": 36, "b": 36},
            legend={"orientation": "h", "y": -0.2},
            **layout,
        )
        return fig

    def chosen(self) -> pd.DataFrame:
        driver = self.driver.value if self.driver.value in self.driver.options else ANY_DRIVER
        return select(self.table, self.hours.value, self.event_type.value, self.area.value, driver)

    def redraw(self) -> None:
        rows = self.chosen()
        self.counts.value = f"{len(rows):,} of {len(self.table):,} events"
        hours = list(range(24))
        per_hour = rows.groupby(["event_type", "hour"]).size()
        with self.fig_time.batch_update():
            for trace in self.fig_time.data:
                mine = per_hour.get(trace.name, pd.Series(dtype="int64"))
                trace.x, trace.y = hours, [int(mine.get(h, 0)) for h in hours]
        updates = rows[rows["event_type"] == "driver_update"]
        mix = updates.groupby(["status", "hour"]).size()
        with self.fig_status.batch_update():
            for trace in self.fig_status.data:
                mine = mix.get(trace.name, pd.Series(dtype="int64"))
                trace.x, trace.y = hours, [int(mine.get(h, 0)) for h in hours]
        sample = rows
        if len(rows) > MAP_POINTS:
            sample = rows.iloc[np.sort(self.rng.choice(len(rows), MAP_POINTS, replace=False))]
        with self.fig_map.batch_update():
            for trace in self.fig_map.data:
                mine = sample[sample["event_type"] == trace.name]
                trace.x, trace.y = mine["lon"].tolist(), mine["lat"].tolist()
                trace.mode = "lines+markers" if self.driver.value else "markers"


def explorer(frames: dict[str, pd.DataFrame]) -> widgets.VBox:
    """The explorer's widget, for a notebook cell."""
    return Explorer(frames).widget
