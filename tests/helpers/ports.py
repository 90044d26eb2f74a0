"""Free loopback ports for tests that start a server of their own or need a dead address.

Drawn at random, so test workers running side by side rarely reach for the same one.
"""

import random

from ridematch_nb.stack.control import port_is_free
from ridematch_nb.stack.services import GRPC_OFFSET


def free_port(twin_offset: int | None = None) -> int:
    """A port nobody listens on; with ``twin_offset``, ``port + twin_offset`` is free too."""
    for port in random.sample(range(30000, 50000), 500):
        if port_is_free(port) and (twin_offset is None or port_is_free(port + twin_offset)):
            return port
    raise RuntimeError("no free loopback port found in 30000-50000")


def free_weed_port() -> int:
    """A port whose SeaweedFS gRPC twin (+10000) is free too."""
    return free_port(GRPC_OFFSET)
