"""Kafka SASL/SSL settings reach every client: the Faust app's broker credentials and each aiokafka
client we construct (replay, trainer, feeds, topic admin, benchmarks); views bind loopback unless told."""
from __future__ import annotations

import ast
import asyncio
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from strata.streams.config import ConfigError, Settings

REPO = Path(__file__).resolve().parents[2]
CA = "/etc/ssl/certs/ca-certificates.crt"

SASL_SSL = {
    "STRATA_KAFKA_BOOTSTRAP": "kafka.example:9093",
    "STRATA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "STRATA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "STRATA_KAFKA_SASL_USERNAME": "strata",
    "STRATA_KAFKA_SASL_PASSWORD": "s3cret",
}


def test_sasl_ssl_settings_become_aiokafka_kwargs():
    if not Path(CA).is_file():
        pytest.skip(f"{CA} absent")
    kwargs = Settings.from_env({**SASL_SSL, "STRATA_KAFKA_SSL_CAFILE": CA}).aiokafka_kwargs()
    assert kwargs["bootstrap_servers"] == "kafka.example:9093"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "strata" and kwargs["sasl_plain_password"] == "s3cret"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_plaintext_kwargs_carry_no_credentials_and_ssl_carries_no_sasl():
    assert Settings.from_env({}).aiokafka_kwargs() == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    kwargs = Settings.from_env({"STRATA_KAFKA_SECURITY_PROTOCOL": "SSL"}).aiokafka_kwargs()
    assert kwargs["security_protocol"] == "SSL" and "ssl_context" in kwargs and "sasl_mechanism" not in kwargs


def test_password_is_not_in_the_settings_repr():
    assert "s3cret" not in repr(Settings.from_env(SASL_SSL))
    assert "0123456789abcdef" not in repr(Settings.from_env({"STRATA_API_TOKEN": "0123456789abcdef"}))


@pytest.mark.parametrize("token", ["short", "sixteen chars with spaces", "0123456789abcdé!"])
def test_a_weak_or_unsendable_api_token_stops_the_worker_with_its_name(token):
    done = subprocess.run([sys.executable, "-m", "strata.streams", "worker"], env={**os.environ, "STRATA_API_TOKEN": token},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "STRATA_API_TOKEN must be at least 16 printable ASCII characters" in done.stderr
    assert token not in done.stderr


def test_clients_send_the_token_only_when_one_is_set():
    assert Settings.from_env({}).auth_headers() == {}
    assert Settings.from_env({"STRATA_API_TOKEN": "t" * 16}).auth_headers() == {"Authorization": "Bearer " + "t" * 16}


@pytest.mark.parametrize(
    "env, message",
    [
        ({**SASL_SSL, "STRATA_KAFKA_SASL_MECHANISM": "GSSAPI"}, "STRATA_KAFKA_SASL_MECHANISM"),
        ({**SASL_SSL, "STRATA_KAFKA_SASL_USERNAME": ""}, "STRATA_KAFKA_SASL_USERNAME"),
        ({**SASL_SSL, "STRATA_KAFKA_SSL_CAFILE": "/nope/ca.pem"}, "STRATA_KAFKA_SSL_CAFILE"),
        ({"STRATA_KAFKA_SECURITY_PROTOCOL": "KERBEROS"}, "STRATA_KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_unusable_security_settings_are_refused_by_name(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


class _Recorded(Exception):
    pass


def test_every_client_we_construct_gets_the_security_kwargs(monkeypatch):
    """Construct the real clients of replay, topics (admin), trainer and feeds with SASL settings:
    each constructor receives them (the fake constructor records its kwargs and stops there)."""
    import aiokafka
    import aiokafka.admin

    settings = Settings.from_env({k: v for k, v in SASL_SSL.items() if k != "STRATA_KAFKA_SECURITY_PROTOCOL"} | {"STRATA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    seen: list[tuple[str, dict]] = []

    def fake(name):
        def construct(*args, **kwargs):
            seen.append((name, kwargs))
            raise _Recorded(name)

        return construct

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", fake("producer"))
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", fake("consumer"))
    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", fake("admin"))

    from strata.streams import replay, topics, trainer

    calls = [
        lambda: replay.new_producer(settings),
        lambda: asyncio.run(topics.ensure_topics(settings)),
        lambda: asyncio.run(topics.partitions_of(settings, "t")),
    ]
    calls.append(lambda: asyncio.run(trainer.read_snapshot(settings)))
    for call in calls:
        with pytest.raises(_Recorded):
            call()
    assert {name for name, _ in seen} == {"producer", "admin", "consumer"}
    for name, kwargs in seen:
        assert kwargs["security_protocol"] == "SASL_PLAINTEXT", name
        assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512", name
        assert kwargs["sasl_plain_username"] == "strata" and kwargs["sasl_plain_password"] == "s3cret", name
        assert kwargs["bootstrap_servers"] == "kafka.example:9093", name


def test_no_aiokafka_client_is_built_without_the_settings_kwargs():
    """Source check over streams/: every AIOKafkaProducer/Consumer/AdminClient(...) call spreads
    `settings.aiokafka_kwargs()` (a new client that forgets it would connect without SASL/SSL)."""
    offenders = []
    for path in sorted((REPO / "streams").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"):
                    spread = [kw.value for kw in node.keywords if kw.arg is None]
                    if not any(isinstance(v, ast.Call) and getattr(v.func, "attr", None) == "aiokafka_kwargs" for v in spread):
                        offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"aiokafka clients built without settings.aiokafka_kwargs(): {offenders}"


def test_faust_app_gets_the_same_credentials():
    """The worker's Faust consumer and producer take their auth from app.conf.broker_credentials."""
    if not Path(CA).is_file():
        pytest.skip(f"{CA} absent")
    code = (
        "import json\n"
        "from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth\n"
        "from streams.app import app\n"
        "auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)\n"
        "print(json.dumps({k: (v if isinstance(v, str) else type(v).__name__) for k, v in auth.items()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    env.update(SASL_SSL, STRATA_KAFKA_SSL_CAFILE=CA)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    auth = json.loads(result.stdout.strip().splitlines()[-1])
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "strata" and auth["sasl_plain_password"] == "s3cret"
    assert auth["ssl_context"] == "SSLContext"


def test_views_listen_on_loopback_unless_configured():
    s = Settings.from_env({})
    assert s.web_host == "127.0.0.1" and s.advertised_url == "http://127.0.0.1:6066"
    wide = Settings.from_env({"STRATA_WEB_HOST": "0.0.0.0", "STRATA_WEB_PORT": "7000"})
    assert wide.web_url == "http://127.0.0.1:7000"  # local clients
    assert not wide.advertised_url.startswith("http://0.0.0.0")  # the group never gets a wildcard
    pod = Settings.from_env({"STRATA_WEB_HOST": "0.0.0.0", "STRATA_WEB_ADVERTISED_URL": "http://strata-1.strata.shop.svc:6066"})
    assert pod.advertised_url == "http://strata-1.strata.shop.svc:6066"


@pytest.mark.parametrize("url", ["strata-0:6066", "http://strata-0", "http://0.0.0.0:6066", "ftp://x:1", "http://x:6066/path"])
def test_bad_advertised_urls_are_refused(url):
    with pytest.raises(ConfigError, match="STRATA_WEB_ADVERTISED_URL"):
        Settings.from_env({"STRATA_WEB_ADVERTISED_URL": url})


def test_security_env_gives_a_child_process_the_same_settings():
    if not Path(CA).is_file():
        pytest.skip(f"{CA} absent")
    parent = Settings.from_env({**SASL_SSL, "STRATA_KAFKA_SSL_CAFILE": CA})
    child = Settings.from_env({"STRATA_KAFKA_BOOTSTRAP": parent.kafka_bootstrap, **parent.security_env()})
    assert (child.security_protocol, child.sasl_mechanism, child.sasl_username, child.sasl_password, child.ssl_cafile) == (
        "SASL_SSL", "SCRAM-SHA-512", "strata", "s3cret", CA)
    assert Settings.from_env({}).security_env() == {"STRATA_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
