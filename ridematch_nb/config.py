"""One typed settings object: a params file, the local stack's secrets, the environment.

Precedence, lowest first:

1. the params file (``params/*.yaml``; ``extends:`` pulls in another file first);
2. ``AWS_*`` variables from the environment (for Docker or a real cloud);
3. the profile's ``secrets_file`` (the embedded stack writes its own S3 keys
   there; the local S3 knows no others, so they beat a stray shell AWS key);
4. ``RIDEMATCH_*`` variables from the environment: always win.

Nothing else in the project names an endpoint or a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

PROJECT_ROOT = Path(os.environ.get("RIDEMATCH_HOME", Path(__file__).resolve().parents[1]))
DEFAULT_PARAMS = "params/local.yaml"

# environment variable -> settings field; later names in a tuple win.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "kafka_bootstrap": ("RIDEMATCH_KAFKA_BOOTSTRAP",),
    "topic": ("RIDEMATCH_TOPIC",),
    "s3_endpoint": ("AWS_ENDPOINT_URL", "RIDEMATCH_S3_ENDPOINT"),
    "s3_region": ("AWS_DEFAULT_REGION", "AWS_REGION", "RIDEMATCH_S3_REGION"),
    "bucket": ("RIDEMATCH_BUCKET",),
    "redis_url": ("RIDEMATCH_REDIS_URL",),
    "match_url": ("RIDEMATCH_MATCH_URL",),
    "prefix": ("RIDEMATCH_PREFIX",),
}
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# The consumer groups of the pipeline's two consumers of the topic.
ETL_GROUP = "ridematch-etl"
PUSH_GROUP = "ridematch-online-push"
# Defaults the generator, the ETL, their CLI commands and notebooks share (one place).
PARTITIONS = 6  # of the topic when the generator creates it
ROLL_RECORDS = 100_000  # records of one partition per ETL chunk
ROLL_EVENT_S = 3600.0  # event-time window (from the hour) that also closes a chunk
# The embedded stack's Redis password, kept in the secrets file beside the S3 keys.
REDIS_PASSWORD_KEY = "RIDEMATCH_REDIS_PASSWORD"
# The match service's admin token (POST /admin/reload), in the same file; the
# environment variable of that name wins.
ADMIN_TOKEN_KEY = "RIDEMATCH_ADMIN_TOKEN"


class ConfigError(ValueError):
    """A params file or setting is missing or malformed; the message names file and key."""


class ParameterError(ValueError):
    """A wrong parameter of a stage or command; the message names it and what it must be."""


@dataclass(frozen=True)
class StackSettings:
    """Where and how the embedded stack runs (only local profiles have this)."""

    data_dir: Path
    broker_bucket: str
    weed_master_port: int
    weed_volume_port: int
    weed_filer_port: int
    startup_timeout_s: float = 60.0


@dataclass(frozen=True)
class Settings:
    """Endpoints, names and keys of the servers every stage talks to."""

    kafka_bootstrap: str
    topic: str
    s3_endpoint: str
    s3_region: str
    bucket: str
    redis_url: str
    params_file: Path
    prefix: str = ""  # dataset root inside the bucket: profiles keep their data apart
    match_url: str = ""  # where `serve` listens and 06 calls the match (services.match_url)
    admin_token: str | None = field(default=None, repr=False)  # the service's admin calls
    secrets_file: Path | None = None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    stack: StackSettings | None = None
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    # Feast's offline store and batch engine, when the profile picks them (features.offline)
    feast: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def kafka_port(self) -> int:
        return _port(self.kafka_bootstrap.split(",")[0], "services.kafka_bootstrap")

    @property
    def s3_port(self) -> int:
        return _port(urlparse(self.s3_endpoint).netloc, "services.s3_endpoint")

    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or 6379

    @property
    def redis_address(self) -> str:
        """The Redis URL for messages: its password, if any, masked."""
        if not self.redis_password:
            return self.redis_url
        parts = urlparse(self.redis_url)
        return parts._replace(netloc=":***@" + parts.netloc.rsplit("@", 1)[-1]).geturl()

    @property
    def match_address(self) -> tuple[str, int]:
        """Host and port of ``services.match_url``: where ``serve`` listens, 06 calls."""
        if not self.match_url:
            raise ConfigError(
                f"params file {self.params_file}: services.match_url is not set "
                "(e.g. http://127.0.0.1:18000)"
            )
        netloc = urlparse(self.match_url).netloc
        return netloc.rsplit(":", 1)[0], _port(netloc, "services.match_url")

    @property
    def redis_password(self) -> str | None:
        return urlparse(self.redis_url).password

    def s3_credentials(self) -> tuple[str, str]:
        """The S3 key pair, or a clear error saying where keys come from."""
        if not (self.aws_access_key_id and self.aws_secret_access_key):
            where = f" (expected in {self.secrets_file}, written by `make stack-up`)"
            raise ConfigError(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                + (where if self.secrets_file else "")
            )
        return self.aws_access_key_id, self.aws_secret_access_key

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def redis_url_with_password(url: str, password: str) -> str:
    """``url`` with ``password`` for the default user (any password it had replaced)."""
    from urllib.parse import quote

    parts = urlparse(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f":{quote(password, safe='')}@{host}").geturl()


def with_stack_redis_password(
    settings: Settings, secrets: Mapping[str, str], env: Mapping[str, str] | None = None
) -> Settings:
    """The embedded stack's Redis password from its secrets, for the profile's own Redis
    URL: RIDEMATCH_REDIS_URL names a server of the user's and is taken as it is, and a
    URL that brings a password keeps it."""
    env = os.environ if env is None else env
    password = secrets.get(REDIS_PASSWORD_KEY)
    if not password or settings.redis_password or env.get("RIDEMATCH_REDIS_URL"):
        return settings
    return settings.with_overrides(redis_url=redis_url_with_password(settings.redis_url, password))


def _port(hostport: str, key: str) -> int:
    try:
        return int(hostport.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise ConfigError(f"{key}: '{hostport}' has no port") from None


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A path as given if absolute, else anchored at the project root (never the cwd)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def read_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a params file, following ``extends:`` chains (the child wins key by key)."""
    file = resolve_path(path)
    if not file.is_file():
        raise ConfigError(f"params file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {file} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file {file}: expected a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(read_params(file.parent / parent), data)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (the stack's secrets file); '#' comments and blanks ignored."""
    if not path.is_file():
        return {}
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs


def _section(params: dict[str, Any], name: str, file: Path) -> dict[str, Any]:
    value = params.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"params file {file}: missing or malformed section '{name}'")
    return value


def _typed(section: dict[str, Any], key: str, kind: type, file: Path, prefix: str) -> Any:
    if key not in section:
        raise ConfigError(f"params file {file}: missing key '{prefix}.{key}'")
    value = section[key]
    try:
        if kind is str and not isinstance(value, str | int | float):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"params file {file}: key '{prefix}.{key}' should be {kind.__name__}, got {value!r}"
        ) from None


def load_settings(
    params_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings for a params file (default: $RIDEMATCH_PARAMS or params/local.yaml)."""
    env = os.environ if env is None else env
    file = resolve_path(params_file or env.get("RIDEMATCH_PARAMS") or DEFAULT_PARAMS)
    params = read_params(file)
    svc = _section(params, "services", file)
    values: dict[str, Any] = {
        name: _typed(svc, name, str, file, "services")
        for name in ("kafka_bootstrap", "topic", "s3_endpoint", "s3_region", "bucket", "redis_url")
    }
    values["prefix"] = str(svc.get("prefix") or "").strip("/")
    values["match_url"] = str(svc.get("match_url") or "").rstrip("/")
    for name, variables in ENV_OVERRIDES.items():
        for var in variables:
            if env.get(var):
                values[name] = env[var]

    secrets_file = resolve_path(svc["secrets_file"]) if svc.get("secrets_file") else None
    keys = {k: env.get(k) for k in SECRET_KEYS}
    secrets = read_env_file(secrets_file) if secrets_file is not None else {}
    keys.update({k: v for k, v in secrets.items() if k in SECRET_KEYS})
    for k in SECRET_KEYS:
        if env.get(f"RIDEMATCH_{k}"):
            keys[k] = env[f"RIDEMATCH_{k}"]

    stack = None
    if "stack" in params:
        st = _section(params, "stack", file)
        spec = {f.name: f.type for f in fields(StackSettings)}
        kinds = {"data_dir": str, "broker_bucket": str, "startup_timeout_s": float}
        raw = {
            name: _typed(st, name, kinds.get(name, int), file, "stack")
            for name in spec
            if name in st or name != "startup_timeout_s"
        }
        raw["data_dir"] = resolve_path(raw["data_dir"])
        stack = StackSettings(**raw)

    notebooks = params.get("notebooks") or {}
    if not isinstance(notebooks, dict):
        raise ConfigError(f"params file {file}: 'notebooks' should map notebook names to params")
    feast = params.get("feast") or {}
    if not isinstance(feast, dict):
        raise ConfigError(f"params file {file}: 'feast' should be a mapping (offline_store, ...)")
    settings = Settings(
        **values,
        params_file=file,
        secrets_file=secrets_file,
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        stack=stack,
        notebooks=notebooks,
        feast=feast,
        admin_token=env.get(ADMIN_TOKEN_KEY) or secrets.get(ADMIN_TOKEN_KEY),
    )
    settings = with_stack_redis_password(settings, secrets, env)
    settings.kafka_port  # noqa: B018 - validate endpoints early, naming the key
    settings.s3_port  # noqa: B018
    if settings.match_url:
        settings.match_address  # noqa: B018
    return settings
