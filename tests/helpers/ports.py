"""Free loopback ports for the stack's tests, whose SeaweedFS needs a twin port free too.
Other tests take `ridematch_nb.ports.free_port` (the system's choice).

Drawn at random, so test workers running side by side rarely reach for the same one.
"""

import random

from ridematch_nb.ports import port_is_free
from ridematch_nb.stack.services import GRPC_OFFSET


def free_weed_port() -> int:
    """A port whose SeaweedFS gRPC twin (+10000) is free too."""
    for port in random.sample(range(30000, 50000), 500):
        if port_is_free(port) and port_is_free(port + GRPC_OFFSET):
            return port
    raise RuntimeError("no free loopback port pair found in 30000-50000")
