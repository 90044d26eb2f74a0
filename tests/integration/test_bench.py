import json
from pathlib import Path

import pytest

from ridematch_nb.bench.stages import PAIRS, run_bench
from ridematch_nb.lake.storage import Lake
from ridematch_nb.stream.topics import admin_client


def test_bench_smoke_writes_every_pair_with_medians_memory_and_cleans_up(settings):
    lines = []
    results = run_bench(settings, sizes=[3000], repeat=1, say=lines.append)
    data = json.loads(Path(results["path"]).read_text())
    assert data["machine"]["cpus"] >= 1 and "kafka-python" in data["machine"]["packages"]
    row = data["sizes"]["3000"]
    for stage in ("produce_raw", "generate", "consume_raw", "naive", "etl"):
        assert row[stage]["median"] > 0 and len(row[stage]["runs"]) == 1, stage
        # a Python process with the pipeline's libraries: never under 5 MiB of its own
        assert row[stage]["peak_mib"] > 5, stage
    for stage, limit in PAIRS:
        expected = round(row[stage]["median"] / row[limit]["median"], 3)
        assert row[f"{stage}_vs_{limit}"] == expected
    assert row["etl"]["join_s"] > 0
    assert any("etl" in line and "consume_raw" in line for line in lines)
    # what the run made is gone: its topics and its landed files
    admin = admin_client(settings)
    try:
        assert not [t for t in admin.list_topics() if t.startswith(f"bench-{data['tag']}-")]
    finally:
        admin.close()
    assert not Lake(settings).keys(f"bench/{data['tag']}/")


def test_bench_refuses_sizes_it_cannot_measure(settings):
    with pytest.raises(ValueError, match="sizes"):
        run_bench(settings, sizes=[10], repeat=1)
