import json
from pathlib import Path

from ridematch_nb.bench import run_bench


def test_bench_smoke_writes_every_pair_with_medians(settings):
    lines = []
    results = run_bench(settings, sizes=[3000], repeat=1, say=lines.append)
    data = json.loads(Path(results["path"]).read_text())
    row = data["sizes"]["3000"]
    for stage in ("produce_raw", "generate", "consume_raw", "etl"):
        assert row[stage]["median"] > 0 and len(row[stage]["runs"]) == 1
    assert row["etl_vs_raw"] == round(row["etl"]["median"] / row["consume_raw"]["median"], 3)
    assert any("etl" in line and "consume_raw" in line for line in lines)
