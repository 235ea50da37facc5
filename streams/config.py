"""Settings: the one place that reads the environment.

Every setting has an environment variable with the prefix ``STRATA_`` and a
default that works on a developer machine.  `Settings.from_env()` parses and
checks them all at once, so a typo fails at start-up with a clear message
instead of deep inside a worker.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from strata.models.ab import EXPERIMENT, Variant, parse_variants
from strata.models.attribution import ATTRIBUTION_WINDOW_S
from strata.models.events import EVENT_TYPES
from strata.models.learned import LAYER_TERMS
from strata.models.ranking import RankParams, parse_rank_params
from strata.models.terms import TERMS
from strata.models.profile import DEFAULT_BETA, DEFAULT_CAPS, DEFAULT_HALF_LIFE_S, LAYERS, ProfileParams


class ConfigError(ValueError):
    """A setting that cannot be used, with the variable's name in the message."""


# name → (default, description); the README's settings table is generated from this.
ENV_DOC: dict[str, tuple[str, str]] = {
    "STRATA_KAFKA_BOOTSTRAP": ("127.0.0.1:9092", "Kafka bootstrap servers (comma-separated host:port)"),
    "STRATA_TOPIC_PREFIX": ("strata.", "prefix of every topic Strata creates or reads"),
    "STRATA_APP_ID": ("strata", "Faust application id and consumer group; prefixes changelog topics"),
    "STRATA_PARTITIONS": ("8", "partitions of the events topic (and so of the profile table)"),
    "STRATA_WEB_HOST": ("127.0.0.1", "address the HTTP views listen on (0.0.0.0 for every interface)"),
    "STRATA_WEB_PORT": ("6066", "port the HTTP views listen on"),
    "STRATA_WEB_ADVERTISED_URL": (
        "",
        "URL other workers use to reach this one (table_route forwarding), e.g. http://strata-0.strata:6066; "
        "default http://STRATA_WEB_HOST:STRATA_WEB_PORT, or the host's FQDN when listening on 0.0.0.0",
    ),
    "STRATA_STANDBY_REPLICAS": (
        "0",
        "standby copies of each table partition that other workers keep (1: a take-over without replaying the changelog, "
        "and recommendations answered by the worker a request reaches; costs the update latency, see README)",
    ),
    "STRATA_DATA_DIR": ("./var/data", "worker state: RocksDB tables and local files"),
    "STRATA_LOG_LEVEL": ("info", "worker log level"),
    "STRATA_BATCH_SIZE": ("50000", "most events fetched per micro-batch of the hot path (and user vectors per batch); a worker behind on its partitions takes this many at once"),
    "STRATA_BATCH_WINDOW_MS": ("20", "longest wait to fill a micro-batch of user vectors"),
    "STRATA_BETA": (",".join(f"{t}={DEFAULT_BETA[t]:g}" for t in EVENT_TYPES), "behaviour weights β"),
    "STRATA_HALF_LIFE": ("item=3d,domain=14d,overall=60d", "half-life per layer (s, m, h or d)"),
    "STRATA_CAPS": ("item=200,domain=50,overall=20", "most keys kept per layer"),
    "STRATA_DEDUP_HORIZON": (
        "7d",
        "an event id seen again within this much event time of its user's newest event is dropped as a duplicate; "
        "an event older than that is dead-lettered as too_late (it could be a copy of a forgotten one)",
    ),
    "STRATA_PURCHASE_HORIZON": ("365d", "a purchase keeps its item out of the user's recommendations this long (event time)"),
    "STRATA_MAX_MODEL_ITEMS": ("10000000", "most items an item-factor model on the factor topic may hold; a manifest claiming more is refused before anything is allocated"),
    "STRATA_MAX_MODEL_FACTORS": ("1024", "most factors (dimensions) an item-factor model may have"),
    "STRATA_MAX_RANKING": ("64", "recommendation requests ranked or waiting at once; above it a request is answered 503 with Retry-After"),
    "STRATA_API_TOKEN": (
        "",
        "when set (16+ printable characters), every HTTP view but /healthz and /metrics requires `Authorization: Bearer <token>`; "
        "the CLI and the benchmarks send it",
    ),
    "STRATA_MODEL_SIGNING_KEY": (
        "",
        "when set (32+ printable characters), `strata train` signs each item-factor version (HMAC-SHA256) and workers refuse "
        "versions without a valid signature: a producer on the factor topic without the key cannot change what is recommended",
    ),
    "STRATA_RANK_PARAMS": (
        "",
        "the ranker's parameters as name=value,… (e.g. what `strata evaluate --tune` printed: "
        "popularity_half_life_s=43200); unset, the defaults",
    ),
    "STRATA_VARIANTS": (
        "control=",
        "A/B variants of the ranker, e.g. control=learning:off;learned= or control=;fresh=rec_0:2,share:2 "
        "(per variant: share, learning:on|off, a factor on a term's or layer's weight); the first is the control",
    ),
    "STRATA_EXPERIMENT": (EXPERIMENT, "the A/B experiment's name: salts the hash that assigns each user a variant"),
    "STRATA_ATTRIBUTION_WINDOW": (
        "30m",
        "an event without rec_id on an item served to its user this long before is attributed to that list (view-through); "
        "an event with a rec_id older than this is not",
    ),
    "STRATA_KAFKA_SECURITY_PROTOCOL": ("PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    "STRATA_KAFKA_SASL_MECHANISM": ("", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)"),
    "STRATA_KAFKA_SASL_USERNAME": ("", "SASL user name"),
    "STRATA_KAFKA_SASL_PASSWORD": ("", "SASL password"),
    "STRATA_KAFKA_SSL_CAFILE": ("", "CA bundle to verify the brokers (with SSL / SASL_SSL)"),
}

_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, what: str = "duration") -> float:
    """'90', '90s', '15m', '2h', '3d' → seconds."""
    m = _DURATION.fullmatch(text)
    if not m:
        raise ConfigError(f"{what}: {text!r} is not a duration like 30s, 15m, 2h or 3d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _pairs(name: str, text: str, keys: tuple[str, ...], value) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, sep, v = part.partition("=")
        k = k.strip()
        if not sep or k not in keys:
            raise ConfigError(f"{name}: expected {', '.join(f'{x}=…' for x in keys)}, got {part!r}")
        out[k] = value(v.strip(), f"{name} {k}")
    return out


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a number") from None


def _int(env: Mapping[str, str], name: str, lo: int, hi: int) -> int:
    text = env.get(name, ENV_DOC[name][0])
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: {value} is outside {lo}–{hi}")
    return value


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, ENV_DOC[name][0]).strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")


def _token(text: str) -> str:
    """STRATA_API_TOKEN: empty (no authentication), or 16+ printable ASCII characters without spaces."""
    if text and not (len(text) >= 16 and text.isascii() and text.isprintable() and " " not in text):
        raise ConfigError("STRATA_API_TOKEN must be at least 16 printable ASCII characters without spaces "
                          "(e.g. `openssl rand -hex 32`)")
    return text


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _advertised_url(text: str) -> str:
    """'' (derive it) or http(s)://host:port with nothing after the port."""
    if not text:
        return ""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(text)
        port = url.port
    except ValueError:
        port = None
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.hostname or port is None or url.path not in ("", "/") or url.query:
        raise ConfigError(f"STRATA_WEB_ADVERTISED_URL: {text!r} is not a URL like http://strata-0.strata:6066")
    if url.hostname in ("0.0.0.0", "::"):
        raise ConfigError("STRATA_WEB_ADVERTISED_URL: other workers cannot reach a wildcard address; give a host name or IP")
    return text.rstrip("/")


def _experiment(get) -> tuple[tuple[Variant, ...], str, float]:
    """The A/B variants, the experiment's name and the attribution window."""
    try:
        variants = parse_variants(get("STRATA_VARIANTS"), TERMS, LAYER_TERMS)
    except ValueError as exc:
        raise ConfigError(f"STRATA_VARIANTS: {exc}") from None
    experiment = get("STRATA_EXPERIMENT")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", experiment):
        raise ConfigError(f"STRATA_EXPERIMENT: {experiment!r} may only hold 1-64 letters, digits, '.', '_' and '-'")
    window = parse_duration(get("STRATA_ATTRIBUTION_WINDOW"), "STRATA_ATTRIBUTION_WINDOW")
    if not 1 <= window <= 7 * 86400:
        raise ConfigError(f"STRATA_ATTRIBUTION_WINDOW: {window:g} s is outside 1 s – 7 days")
    return variants, experiment, window


def _signing_key(text: str) -> str:
    if text and not re.fullmatch(r"[\x21-\x7e]{32,}", text):
        raise ConfigError("STRATA_MODEL_SIGNING_KEY must be at least 32 printable ASCII characters without spaces "
                          "(e.g. `openssl rand -hex 32`)")
    return text


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "strata."
    app_id: str = "strata"
    partitions: int = 8
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_advertised_url: str = ""  # "" → derived from web_host/web_port, see `advertised_url`
    standby_replicas: int = 0
    data_dir: Path = Path("./var/data")
    log_level: str = "info"
    batch_size: int = 50_000
    batch_window_s: float = 0.02
    profile: ProfileParams = field(default_factory=ProfileParams)
    max_model_items: int = 10_000_000
    max_model_factors: int = 1024
    max_ranking: int = 64
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    api_token: str = field(default="", repr=False)
    ssl_cafile: str = ""
    model_signing_key: str = field(default="", repr=False)
    rank_params: RankParams = field(default_factory=RankParams)
    variants: tuple[Variant, ...] = (Variant("control"),)
    experiment: str = EXPERIMENT
    attribution_window_s: float = ATTRIBUTION_WINDOW_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        # STRATA_KAFKA_* also configure the local broker script, STRATA_TEST_* the test suite (README).
        unknown = sorted(
            k for k in env if k.startswith("STRATA_") and k not in ENV_DOC and not k.startswith(("STRATA_KAFKA_", "STRATA_TEST_"))
        )
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(ENV_DOC)}")
        get = lambda name: env.get(name, ENV_DOC[name][0]).strip()  # noqa: E731

        bootstrap = get("STRATA_KAFKA_BOOTSTRAP")
        for server in bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"STRATA_KAFKA_BOOTSTRAP: {server!r} is not host:port")
        prefix = get("STRATA_TOPIC_PREFIX")
        if not re.fullmatch(r"[A-Za-z0-9._-]{0,100}", prefix):
            raise ConfigError(f"STRATA_TOPIC_PREFIX: {prefix!r} may only hold letters, digits, '.', '_' and '-'")
        app_id = get("STRATA_APP_ID")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", app_id):
            raise ConfigError(f"STRATA_APP_ID: {app_id!r} may only hold letters, digits, '.', '_' and '-'")
        protocol = get("STRATA_KAFKA_SECURITY_PROTOCOL").upper()
        if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError(f"STRATA_KAFKA_SECURITY_PROTOCOL: {protocol!r} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")

        mechanism = get("STRATA_KAFKA_SASL_MECHANISM").upper()
        if protocol.startswith("SASL"):
            mechanism = mechanism or "PLAIN"
            if mechanism not in SASL_MECHANISMS:
                raise ConfigError(f"STRATA_KAFKA_SASL_MECHANISM: {mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}")
            if not get("STRATA_KAFKA_SASL_USERNAME"):
                raise ConfigError(f"STRATA_KAFKA_SASL_USERNAME is required with STRATA_KAFKA_SECURITY_PROTOCOL={protocol}")
        cafile = get("STRATA_KAFKA_SSL_CAFILE")
        if cafile and "SSL" in protocol and not Path(cafile).expanduser().is_file():
            raise ConfigError(f"STRATA_KAFKA_SSL_CAFILE: {cafile!r} is not a readable file")

        beta = {**DEFAULT_BETA, **_pairs("STRATA_BETA", get("STRATA_BETA"), EVENT_TYPES, _number)}
        half = {**DEFAULT_HALF_LIFE_S, **_pairs("STRATA_HALF_LIFE", get("STRATA_HALF_LIFE"), LAYERS, parse_duration)}
        caps = {**DEFAULT_CAPS, **_pairs("STRATA_CAPS", get("STRATA_CAPS"), LAYERS, lambda v, w: int(_number(v, w)))}
        try:
            params = ProfileParams(
                beta=beta, half_life_s=half, caps=caps,
                dedup_horizon_s=parse_duration(get("STRATA_DEDUP_HORIZON"), "STRATA_DEDUP_HORIZON"),
                purchase_horizon_s=parse_duration(get("STRATA_PURCHASE_HORIZON"), "STRATA_PURCHASE_HORIZON"),
            )
        except ValueError as exc:
            raise ConfigError(f"profile parameters: {exc}") from None
        variants, experiment, window = _experiment(get)
        try:
            rank_params = parse_rank_params(get("STRATA_RANK_PARAMS"))
        except ValueError as exc:
            raise ConfigError(f"STRATA_RANK_PARAMS: {exc}") from None

        return cls(
            kafka_bootstrap=bootstrap,
            topic_prefix=prefix,
            app_id=app_id,
            partitions=_int(env, "STRATA_PARTITIONS", 1, 1024),
            web_host=get("STRATA_WEB_HOST"),
            web_port=_int(env, "STRATA_WEB_PORT", 1, 65535),
            web_advertised_url=_advertised_url(get("STRATA_WEB_ADVERTISED_URL")),
            standby_replicas=_int(env, "STRATA_STANDBY_REPLICAS", 0, 8),
            data_dir=Path(get("STRATA_DATA_DIR")).expanduser(),
            log_level=_choice(env, "STRATA_LOG_LEVEL", ("debug", "info", "warning", "error", "critical")),
            batch_size=_int(env, "STRATA_BATCH_SIZE", 1, 100_000),
            batch_window_s=_int(env, "STRATA_BATCH_WINDOW_MS", 0, 10_000) / 1000.0,
            profile=params,
            max_model_items=_int(env, "STRATA_MAX_MODEL_ITEMS", 1, 1_000_000_000),
            max_model_factors=_int(env, "STRATA_MAX_MODEL_FACTORS", 1, 65_536),
            max_ranking=_int(env, "STRATA_MAX_RANKING", 1, 100_000),
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=get("STRATA_KAFKA_SASL_USERNAME"),
            sasl_password=env.get("STRATA_KAFKA_SASL_PASSWORD", ""),
            api_token=_token(env.get("STRATA_API_TOKEN", "")),
            model_signing_key=_signing_key(env.get("STRATA_MODEL_SIGNING_KEY", "")),
            ssl_cafile=cafile,
            variants=variants,
            experiment=experiment,
            attribution_window_s=window,
            rank_params=rank_params,
        )

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def web_url(self) -> str:
        """Where a client on this machine reaches the views (the bind address; loopback for a wildcard bind)."""
        host = "127.0.0.1" if self.web_host in _WILDCARD_HOSTS else self.web_host
        return f"http://{_url_host(host)}:{self.web_port}"

    @property
    def advertised_url(self) -> str:
        """The URL this worker tells the group (Faust's canonical_url): `table_route` forwards a request
        for a user to the advertised URL of the worker owning the user's partition, so it must be
        reachable from the other workers — not 0.0.0.0, and in Kubernetes the pod's stable DNS name."""
        if self.web_advertised_url:
            return self.web_advertised_url
        if self.web_host in _WILDCARD_HOSTS:
            import socket

            host = socket.getfqdn()
            if host.startswith("localhost"):  # /etc/hosts maps the host name to loopback: the plain name is better
                host = socket.gethostname()
            return f"http://{_url_host(host)}:{self.web_port}"
        return f"http://{_url_host(self.web_host)}:{self.web_port}"

    @property
    def signing_key(self) -> bytes | None:
        """The item-factor signing key (STRATA_MODEL_SIGNING_KEY), None when unset."""
        return self.model_signing_key.encode() if self.model_signing_key else None

    def auth_headers(self) -> dict[str, str]:
        """The HTTP headers a client of the views sends (the bearer token, when one is set)."""
        return {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}

    def security_env(self) -> dict[str, str]:
        """The Kafka security settings, the API token and the model signing key as environment variables, for a child process
        (e.g. a benchmark's workers) that must reach the same cluster and answer the same clients."""
        env = {"STRATA_KAFKA_SECURITY_PROTOCOL": self.security_protocol}
        for name, value in (("STRATA_API_TOKEN", self.api_token), ("STRATA_MODEL_SIGNING_KEY", self.model_signing_key),
                            ("STRATA_KAFKA_SASL_MECHANISM", self.sasl_mechanism), ("STRATA_KAFKA_SASL_USERNAME", self.sasl_username),
                            ("STRATA_KAFKA_SASL_PASSWORD", self.sasl_password), ("STRATA_KAFKA_SSL_CAFILE", self.ssl_cafile)):
            if value:
                env[name] = value
        return env

    def aiokafka_kwargs(self) -> dict:
        """Connection settings for every plain aiokafka client we create (replay, trainer, feeds, admin,
        benchmarks); the Faust app gets the same through `broker_credentials` (streams.app)."""
        kwargs: dict = {"bootstrap_servers": self.kafka_bootstrap, "security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism or "PLAIN",
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if "SSL" in self.security_protocol:
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile or None)
        return kwargs
