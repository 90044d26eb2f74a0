"""Redis, the online store's server: a client for the configured URL, and a check that
tells an unreachable server from one that refuses our credentials."""

from __future__ import annotations

import redis
import redis.exceptions as rx

from ridematch_nb.config import Settings


class RedisUnavailable(RuntimeError):
    """Redis cannot be reached or refuses our credentials; names which and the fix."""


# a Redis that stops answering raises redis.TimeoutError after these instead of holding
# its caller forever: a generous bound for the pipeline's writers (an fsync of Redis's
# append-only file can stall a write for a second or two), a tight one for serving,
# which reads on the service's event loop, where a wait stops every request
TIMEOUTS_S = {"socket_connect_timeout": 2.0, "socket_timeout": 30.0}
SERVING_TIMEOUTS_S = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}


def redis_client(settings: Settings, serving: bool = False, **kw) -> redis.Redis:
    """A client for the profile's Redis (its URL carries the stack's password), with
    ``TIMEOUTS_S``, or ``SERVING_TIMEOUTS_S`` for a match's reads, unless the caller or
    the URL says otherwise."""
    bounds = SERVING_TIMEOUTS_S if serving else TIMEOUTS_S
    return redis.Redis.from_url(settings.redis_url, **{**bounds, **kw})


def redis_check(url: str, timeout_s: float = 2.0) -> None:
    """PING; raises whatever the client raises (the stack's health probe)."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    finally:
        client.close()


def check_redis(settings: Settings) -> None:
    """Raise RedisUnavailable, saying which, when Redis cannot be reached or refuses
    our credentials; any other failure is not hidden behind either."""
    where = f"Redis (online store) at {settings.redis_address}"
    try:
        redis_check(settings.redis_url)
    except (
        rx.AuthenticationError,
        rx.AuthenticationWrongNumberOfArgsError,
        rx.ResponseError,
    ) as exc:
        if isinstance(exc, rx.ResponseError) and "NOAUTH" not in str(exc):
            raise  # not about credentials: not ours to rename
        if settings.redis_password:
            problem = f"refused our credentials ({exc})"
            fix = (
                f"the password comes from {settings.secrets_file or 'RIDEMATCH_REDIS_URL'}; "
                "restart the local stack (make stack-down && make stack-up)"
            )
        else:
            problem = f"requires a password and we sent none ({exc})"
            fix = "give it in RIDEMATCH_REDIS_URL (redis://:PASSWORD@host:port/db)"
        raise RedisUnavailable(f"{where} {problem}.\n  fix: {fix}") from exc
    except (rx.ConnectionError, rx.TimeoutError) as exc:
        raise RedisUnavailable(
            f"{where} is not reachable ({exc}).\n  fix: start the local stack with `make stack-up`"
        ) from exc
