"""The serve bench's bookkeeping: a cell's repeats folded into medians, and the CPU
figures it reads from /proc."""

import os
import subprocess
import sys
import time

import psutil

from ridematch_nb.bench.serve import machine_cpu, measured, median_of_rounds, process_cpu_s


def _round(p99, errors=0, max_ms=None):
    return {
        "rate_asked": 200,
        "rate_achieved": 200.0,
        "requests": 6000,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "max_ms": max_ms or p99 * 2,
        "errors": errors,
        "dropped": 0,
        "machine_busy": 0.5,
        "machine_steal": 0.01 * p99,
        "cpu_ms_per_request": 4.0,
    }


def test_one_noisy_round_does_not_make_the_cell():
    cell = median_of_rounds([_round(12.0), _round(58.0, errors=2, max_ms=300.0), _round(15.0)])
    assert cell["p99_ms"] == 15.0
    assert cell["p99_ms_by_round"] == [12.0, 58.0, 15.0]
    assert cell["max_ms"] == 300.0  # the worst answer is not hidden by the median
    assert cell["errors"] == 2
    assert cell["machine_steal_max"] == 0.58


def test_machine_clock_moves_and_busy_is_part_of_it():
    total0, busy0, steal0 = machine_cpu()
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:  # spin: this process is busy meanwhile
        pass
    total1, busy1, steal1 = machine_cpu()
    assert total1 > total0 and busy1 > busy0
    assert busy1 - busy0 <= total1 - total0 and steal1 >= steal0


def test_cpu_per_request_counts_the_work_of_the_load():
    def spin(requests):
        deadline = time.process_time() + 0.2
        while time.process_time() < deadline:
            pass
        return {"requests": requests}

    row = measured(None, spin, 100)
    assert row["cpu_ms_per_request"] >= 1.9  # 200 ms of CPU over 100 requests
    seconds, pids = process_cpu_s(os.getpid())
    assert seconds > 0 and os.getpid() in pids


def test_cpu_per_request_is_none_when_a_worker_was_replaced():
    cell = median_of_rounds([{**_round(10.0), "cpu_ms_per_request": None}, _round(11.0)])
    assert cell["cpu_ms_per_request"] == 4.0


def test_a_server_whose_workers_changed_meanwhile_has_no_cpu_per_request():
    """A real process tree: a parent that starts a worker when told to. The round in
    which the worker appears has no CPU figure; the next, on a steady tree, has one."""
    forks_when_told = (
        "import subprocess, sys, time; sys.stdin.readline();"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", forks_when_told], stdin=subprocess.PIPE)

    def a_worker_starts():
        parent.stdin.write(b"fork\n")
        parent.stdin.flush()
        deadline = time.monotonic() + 30
        while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"requests": 10}

    def steady():
        time.sleep(0.3)
        return {"requests": 10}

    try:
        assert measured(parent.pid, a_worker_starts)["cpu_ms_per_request"] is None
        assert len(process_cpu_s(parent.pid)[1]) == 2
        figure = measured(parent.pid, steady)["cpu_ms_per_request"]
        assert figure is not None and figure >= 0
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
