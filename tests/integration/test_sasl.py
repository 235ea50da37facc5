"""Against a real local broker that demands SASL_SSL with SCRAM-SHA-512 (`STRATA_KAFKA_SECURITY=
sasl_ssl`: the script makes a CA and a broker certificate with keytool and creates the SCRAM user):
the worker, `strata replay` and `strata train` all work through it, and a wrong password fails
quickly with one clear line, not a hang."""
from __future__ import annotations

import subprocess
import time

import pytest

from strata.models.logs.loaders import open_log
from strata.streams import kafka_local
from tests.conftest import TEST_KAFKA_PORT
from tests.integration.harness import Worker, isolated_env, strata_cli, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORT = TEST_KAFKA_PORT + 200
USER, PASSWORD = "strata-test", "s3cret-scram-pw"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kafka-sasl")
    env = {"STRATA_KAFKA_DIR": str(directory), "STRATA_KAFKA_SECURITY": "sasl_ssl",
           "STRATA_KAFKA_SASL_USERNAME": USER, "STRATA_KAFKA_SASL_PASSWORD": PASSWORD}
    kafka_local.run("start", port=PORT, env=env)
    try:
        yield {"STRATA_KAFKA_BOOTSTRAP": f"127.0.0.1:{PORT}", "STRATA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
               "STRATA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "STRATA_KAFKA_SASL_USERNAME": USER,
               "STRATA_KAFKA_SASL_PASSWORD": PASSWORD, "STRATA_KAFKA_SSL_CAFILE": str(directory / "tls" / "ca.pem")}
    finally:
        kafka_local.run("stop", port=PORT, env=env, check=False)


def _strata(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return strata_cli(env, *args, timeout=timeout)


def test_worker_replay_and_train_work_through_sasl_ssl(secure_broker, tmp_path):
    env = {**isolated_env(secure_broker["STRATA_KAFKA_BOOTSTRAP"], "sasl"), **secure_broker}
    log = tmp_path / "log.ndjson"
    source = open_log("users=50,items=200,events=2000", "synthetic", seed=4)
    import orjson

    log.write_bytes(b"\n".join(orjson.dumps(e) for e in source.events()))
    catalog = tmp_path / "catalog.ndjson"
    catalog.write_bytes(b"\n".join(orjson.dumps(r) for r in source.catalog()))

    worker = Worker(env, tmp_path / "data")
    worker.start(timeout=120)
    try:
        done = _strata(worker.env, "replay", "--events", str(log), "--format", "ndjson", "--catalog", str(catalog))
        assert done.returncode == 0, done.stderr
        wait_until(lambda: worker.metric("strata_events_processed_total") == 2000, 120, "the replay applied through SASL_SSL")
        user = next(iter(source.events()))["user_id"]
        status, body = worker.get(f"/users/{user}/profile")
        assert status == 200 and body["events"] > 0

        done = _strata(worker.env, "train", "--factors", "8", "--iterations", "3")
        assert done.returncode == 0, done.stderr
        wait_until(lambda: worker.get(f"/users/{user}/recommendations?k=3")[1].get("model_version") is not None, 60,
                   "the trained factors served")
    finally:
        worker.stop()


@pytest.mark.parametrize("command", [("replay", "--events", "users=5,events=10", "--format", "synthetic"), ("train",), ("worker",)])
def test_a_wrong_password_fails_fast_with_one_clear_line(secure_broker, tmp_path, command):
    env = {**isolated_env(secure_broker["STRATA_KAFKA_BOOTSTRAP"], "sasl-bad"), **secure_broker,
           "STRATA_KAFKA_SASL_PASSWORD": "not-the-password", "STRATA_DATA_DIR": str(tmp_path / "data")}
    started = time.monotonic()
    done = _strata(env, *command, timeout=120)
    assert done.returncode != 0
    assert time.monotonic() - started < 60
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "authentication" in lines[0].lower() and "not-the-password" not in lines[0], done.stderr
