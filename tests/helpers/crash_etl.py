"""Run one ETL worker that kills itself with SIGKILL at a chosen moment.

Test-only: the production code has no crash hooks; this wraps its methods.
    python -m tests.helpers.crash_etl <when> <group> <prefix> <roll_records>
when = before-commit  (every file of the first chunk written, offsets not committed)
     | mid-write      (the second file of the first chunk is being written)

The files are written by the worker's writer process (forked, so it has these patches
too); there, dying means killing the worker, and the writer then dies with it, as it
would with any crash of the worker.
"""

import os
import signal
import sys
import time

from ridematch_nb.config import load_settings
from ridematch_nb.lake import etl
from ridematch_nb.lake.storage import Lake
from ridematch_nb.stack.services import ensure_secrets

WORKER = os.getpid()


def die(*_args, **_kwargs):
    os.kill(WORKER, signal.SIGKILL)
    time.sleep(30)  # in the writer process: the kernel ends it with the worker


def main() -> None:
    when, group, prefix, roll = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if when == "before-commit":
        etl.ETL._commit = die
    elif when == "mid-write":
        original, calls = Lake.put_table, {"n": 0}

        def put_table(self, key, table):
            calls["n"] += 1
            if calls["n"] == 2:
                self.put(key, b"PAR1 torn")  # half an object, then the process dies
                die()
            return original(self, key, table)

        Lake.put_table = put_table
    settings = ensure_secrets(load_settings(os.environ.get("RIDEMATCH_PARAMS", "params/ci.yaml")))
    etl.run(settings, group=group, prefix=prefix, roll_records=roll, idle_s=2, progress=False)
    sys.exit(3)  # never reached: the worker must have died


if __name__ == "__main__":
    main()
