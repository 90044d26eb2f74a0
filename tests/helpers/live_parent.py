"""A parent that owns live background processes, then dies or exits, for the no-orphan
tests: ``python -m tests.helpers.live_parent <params> <log_dir> <kill|exit> [group]``.

It starts the realtime generator and the ETL follow worker through ``live.Background``,
prints their pids once both have connected to Kafka, then either kills itself with
SIGKILL (no clean-up runs: only PR_SET_PDEATHSIG can stop them) or returns normally
without stopping them (only the atexit hook can).
"""

import json
import os
import signal
import sys
import time

from ridematch_nb.config import load_settings
from ridematch_nb.views.live import Background


def main(params: str, log_dir: str, how: str, group: str = "ridematch-etl-live-test") -> None:
    bg = Background(load_settings(params), log_dir)
    bg.start("generator", "--drivers", "20", "--partitions", "2")
    bg.start("etl", "--roll-event-s", "2", "--group", group)
    deadline = time.monotonic() + 60
    while "Connected" not in " ".join(bg.tail("generator", 10)) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # the ETL worker has imported and is joining its group
    print(json.dumps(bg.pids()), flush=True)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(*sys.argv[1:5])
