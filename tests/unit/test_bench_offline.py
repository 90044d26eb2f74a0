"""The offline bench's arithmetic: how the figures grew from one lake to a larger one."""

from ridematch_nb.bench.offline import _growth, table


def _result(offers, updates, limit_s, store_s, peak):
    return {
        "limit": {
            "rows": offers,
            "updates": updates,
            "median": limit_s,
            "read_s": 1.0,
            "peak_mib": 300.0,
            "complete_rows": offers,
        },
        "store": {"rows": offers, "median": store_s, "peak_mib": peak, "complete_rows": offers},
    }


def test_growth_divides_the_larger_lake_by_the_smaller_one_figure_by_figure():
    day, week = (
        _result(28_000, 900_000, 2.0, 2.5, 400.0),
        _result(196_000, 6_300_000, 15.0, 17.5, 1_600.0),
    )
    assert _growth(day, week) == {
        "offers": 7.0,
        "updates": 7.0,
        "limit_time": 7.5,
        "store_time": 7.0,
        "store_peak": 4.0,
    }


def test_the_table_shows_the_larger_lake_beside_the_profiles_own():
    day, week = (
        _result(28_000, 900_000, 2.0, 2.5, 400.0),
        _result(196_000, 6_300_000, 15.0, 17.5, 1_600.0),
    )
    results = {
        **day,
        "repeat": 3,
        "store_config": {"type": "asof"},
        "store_vs_limit": 1.25,
        "scale": {"profile": "params/week.yaml", **week, "growth": _growth(day, week)},
    }
    text = "\n".join(table(results))
    assert "params/week.yaml: 196,000 offers over 6,300,000 driver updates (7.0x / 7.0x)" in text
    assert "17.50 s (7.0x)" in text and "1,600 MiB (4.0x)" in text
