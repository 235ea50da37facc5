"""The compose stack (docker-compose.yml), its image (deploy/Dockerfile) and its monitoring
(deploy/prometheus) checked against the code they run: the CLI's parser, the settings, the metrics a
worker exports.  Pure: PyYAML and the standard library, no Docker, no broker, no Prometheus.  The
Kubernetes manifests: tests/streams/test_k8s.py."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from strata.streams.config import ENV_DOC, Settings

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")  # Prometheus' duration syntax


def kafka_version() -> str:
    """The Kafka version `strata kafka start` fetches (deploy/kafka/kafka.sh)."""
    m = re.search(r'^VERSION="\$\{STRATA_KAFKA_VERSION:-([0-9][0-9.]*)\}"', (ROOT / "deploy/kafka/kafka.sh").read_text(), re.M)
    assert m, "deploy/kafka/kafka.sh no longer names its Kafka version as VERSION=\"${STRATA_KAFKA_VERSION:-X.Y.Z}\""
    return m.group(1)


def dockerfile() -> dict:
    """The Dockerfile's ENTRYPOINT and CMD (exec form) and its ENV settings."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    out: dict = {"text": text, "env": {}}
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("ENTRYPOINT", "CMD"):
            out[word] = json.loads(rest)
        elif word == "ENV":
            out["env"].update(pair.split("=", 1) for pair in rest.split())
    return out


def cli_args(argv: list[str]):
    """`strata ARGV` as the CLI's own parser reads it, or the test fails naming the command."""
    from strata.streams.cli import build_parser

    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), f"command {argv!r}: a list of strings (exec form)"
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`strata {' '.join(argv)}` is refused by the CLI's parser (streams.cli.build_parser)")


def strata_services() -> dict[str, dict]:
    """The services that run the Strata image (built from deploy/Dockerfile)."""
    return {name: s for name, s in SERVICES.items()
            if "build" in s or str(s.get("image", "")).split(":")[0] == "strata"}


def environment(service: dict) -> dict[str, str]:
    """A service's environment as compose gives it (mapping or KEY=VALUE list; values as strings)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    out = {}
    for k, v in env.items():
        value = "" if v is None else str(v)
        assert "${" not in value and "$" not in value.replace("$$", ""), f"{k}: {value!r} depends on the shell's environment"
        out[k] = value
    return out


def container_env(service: dict) -> dict[str, str]:
    """What the process in the container sees: the image's ENV, then the service's environment."""
    return {**dockerfile()["env"], **environment(service)}


def command(service: dict) -> list[str]:
    return service.get("command", dockerfile()["CMD"])


def published(service: dict) -> dict[int, str]:
    """container port → the host address it is published on ("" for every interface)."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        assert 1 <= len(parts) <= 3, spec
        container = int(parts[-1].split("/")[0])
        if len(parts) == 3:
            host_ip, host_port = parts[0], parts[1]
        else:
            host_ip, host_port = "", parts[0]
        if len(parts) > 1:
            assert int(host_port) == container, f"{spec}: publish a port on the same number (clients are told the container's)"
        out[container] = host_ip
    return out


def listeners(text: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,…' → {NAME: (host, port)}."""
    out = {}
    for item in text.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def depends(service: dict) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


# -- the Strata services ----------------------------------------------------------------------
def test_strata_services_run_the_versioned_image_of_the_dockerfile():
    services = strata_services()
    assert {"topics", "worker", "trainer"} <= set(services)
    assert dockerfile()["ENTRYPOINT"] == ["strata"]
    for name, s in services.items():
        assert s["image"] == f"strata:{VERSION}", f"{name}: image {s['image']!r}, not the pyproject version {VERSION}"
        assert s["build"]["dockerfile"] == "deploy/Dockerfile" and (ROOT / s["build"]["context"] / s["build"]["dockerfile"]).is_file()


def test_every_strata_service_runs_a_command_the_cli_accepts():
    commands = {name: cli_args(command(s)) for name, s in strata_services().items()}
    assert commands["topics"].command == "topics" and not commands["topics"].check  # creates them
    assert commands["worker"].command == "worker"
    assert commands["trainer"].command == "train" and commands["trainer"].every == 600  # --every 10m
    # and the image's default command, for `docker run strata:VERSION`
    assert cli_args(dockerfile()["CMD"]).command == "worker"


def test_every_setting_is_known_and_the_services_agree_on_kafka_and_the_topics():
    parsed = {}
    for name, s in strata_services().items():
        env = container_env(s)
        unknown = [k for k in env if k.startswith("STRATA_") and k not in ENV_DOC and not k.startswith(("STRATA_KAFKA_", "STRATA_TEST_"))]
        assert not unknown, f"{name}: {unknown} are not settings of streams/config.py (every command would fail at start-up)"
        parsed[name] = Settings.from_env({k: v for k, v in env.items() if k.startswith("STRATA_")})
    for what in ("kafka_bootstrap", "topic_prefix", "app_id", "partitions"):
        values = {name: getattr(s, what) for name, s in parsed.items()}
        assert len(set(values.values())) == 1, f"the Strata services disagree on {what}: {values}"
    for name in parsed:
        assert parsed[name].kafka_bootstrap != ENV_DOC["STRATA_KAFKA_BOOTSTRAP"][0], f"{name} would look for Kafka on its own loopback"
    for k in dockerfile()["env"]:
        assert k in ENV_DOC, f"deploy/Dockerfile sets {k}, which is not a setting"


def test_kafka_is_the_local_brokers_version_with_a_listener_for_the_containers_and_one_for_the_host():
    kafka = SERVICES["kafka"]
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft, one node
    bound, advertised = listeners(env["KAFKA_LISTENERS"]), listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) <= set(protocols), (bound, protocols)
    assert set(advertised) <= set(bound), "every advertised listener must be one the broker binds"
    for name, (_, port) in advertised.items():
        assert bound[name][1] == port, f"listener {name} is advertised on port {port} but bound on {bound[name][1]}"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in bound and controller not in advertised
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert int(node) == int(env["KAFKA_NODE_ID"]) and voter == f"{kafka.get('hostname', 'kafka')}:{bound[controller][1]}"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "CLUSTER_ID: a base64 UUID (kafka-storage.sh random-uuid)"
    host_names = {"kafka", kafka.get("hostname")}
    # The containers: STRATA_KAFKA_BOOTSTRAP is the listener advertised under the service's name …
    bootstrap = {container_env(s)["STRATA_KAFKA_BOOTSTRAP"] for s in strata_services().values()}
    (inside,) = [name for name, (host, _) in advertised.items() if host in host_names]
    assert bootstrap == {f"{advertised[inside][0]}:{advertised[inside][1]}"}
    # … the host: a listener advertised as localhost, on the port published.
    (outside,) = [name for name, (host, _) in advertised.items() if host == "localhost"]
    assert advertised[outside][1] in published(kafka)
    assert advertised[inside][1] not in published(kafka), "the containers' listener advertises a name the host cannot resolve"
    health = kafka["healthcheck"]["test"]
    assert health[0] in ("CMD", "CMD-SHELL") and "kafka-broker-api-versions.sh" in " ".join(health)


def test_the_topics_are_created_once_kafka_is_healthy_and_before_the_worker_and_trainer_start():
    assert "healthcheck" in SERVICES["kafka"]
    assert depends(SERVICES["topics"]) == {"kafka": "service_healthy"}
    assert SERVICES["topics"].get("restart", "no") == "no", "a one-shot: compose waits for it to exit 0"
    for name in ("worker", "trainer", "replay"):
        deps = depends(SERVICES[name])
        assert deps.get("topics") == "service_completed_successfully", name
        assert deps.get("kafka") == "service_healthy", name


def test_the_worker_listens_for_the_other_containers_and_advertises_its_service_name():
    worker = SERVICES["worker"]
    settings = Settings.from_env({k: v for k, v in container_env(worker).items() if k.startswith("STRATA_")})
    assert settings.web_host == "0.0.0.0"
    url = urlsplit(settings.advertised_url)
    assert url.hostname in ("worker", worker.get("hostname")) and url.port == settings.web_port
    assert settings.web_port in published(worker)
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in worker["volumes"]}
    assert mounts.get(str(settings.data_dir)) in COMPOSE["volumes"], "the worker's RocksDB state on a named volume"


def _open_paths() -> set[str]:
    """The paths streams.views serves without the API token (read from the source: importing the views builds the app)."""
    m = re.search(r"^OPEN_PATHS = frozenset\(\{([^}]*)\}\)", (ROOT / "streams" / "views.py").read_text(), re.M)
    assert m, "streams/views.py no longer defines OPEN_PATHS as a frozenset literal"
    return set(re.findall(r'"([^"]+)"', m.group(1)))


class _Healthz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_the_worker_healthcheck_passes_on_200_and_fails_on_503():
    """The healthcheck's own command, run against a stand-in for /healthz (as the worker answers
    while it recovers or rebalances: 503): the image has python, and no curl."""
    worker = SERVICES["worker"]
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python" and test[2] == "-c", test
    assert "curl" not in dockerfile()["text"] or test[1] == "curl"
    code = test[3]
    port = Settings.from_env({k: v for k, v in container_env(worker).items() if k.startswith("STRATA_")}).web_port
    assert f"http://127.0.0.1:{port}/healthz" in code
    assert "/healthz" in _open_paths(), "the healthcheck sends no token"
    for k in ("interval", "timeout", "start_period"):
        assert DURATION.match(worker["healthcheck"][k]), (k, worker["healthcheck"][k])

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        probe = code.replace(f"127.0.0.1:{port}", f"127.0.0.1:{server.server_address[1]}")
        for status, healthy in ((200, True), (503, False)):
            _Healthz.status = status
            rc = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode
            assert (rc == 0) is healthy, f"/healthz {status}: the healthcheck exited {rc}"
    finally:
        server.shutdown()
        server.server_close()


# -- Prometheus -------------------------------------------------------------------------------
def prometheus_config() -> dict:
    return yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_prometheus_in_the_monitoring_profile_reads_this_config_and_scrapes_the_worker():
    prom = SERVICES["prometheus"]
    assert "monitoring" in prom["profiles"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in prom["volumes"]}
    config_file = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    directory = str(Path(config_file).parent)
    assert (ROOT / mounts[directory]).resolve() == PROMETHEUS_DIR
    config = prometheus_config()
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_DIR / rule_file).is_file(), rule_file
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "strata"]
    assert job.get("metrics_path", "/metrics") == "/metrics" and "/metrics" in _open_paths()
    worker = Settings.from_env({k: v for k, v in container_env(SERVICES["worker"]).items() if k.startswith("STRATA_")})
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"worker:{worker.web_port}"]


def test_the_alert_rules_are_complete_and_cover_lag_dead_letters_model_age_and_down_workers():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), names
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"].strip(), r["alert"]
        assert "for" not in r or DURATION.match(r["for"]), (r["alert"], r.get("for"))
        assert r["expr"].count("(") == r["expr"].count(")") and r["expr"].count("{") == r["expr"].count("}"), r["alert"]
    exprs = " ; ".join(" ".join(r["expr"].split()) for r in rules)
    assert "strata_consumer_lag_total" in exprs
    assert "rate(strata_events_deadlettered_total[5m])" in exprs
    assert "time() - strata_model_version / 1000" in exprs  # the version is in epoch milliseconds …
    assert "strata_model_version == 0" in exprs and "absent(strata_model_version" in exprs
    assert 'up{job="strata"} == 0' in exprs


def exported_metrics() -> dict[str, str]:
    """Every metric a worker's /metrics can show: family name (and sample names: _total, _bucket, …) → type.
    Rendered in-process from streams.metrics, with every gauge the views set (streams/*.py) and the
    description table names filled in."""
    from prometheus_client.parser import text_string_to_metric_families

    from strata.streams.metrics import GAUGE_HELP, Metrics

    m = Metrics()
    set_in_code = set(re.findall(r'metrics\.gauges\["(\w+)"\]', "".join(p.read_text() for p in (ROOT / "streams").glob("*.py"))))
    assert set_in_code, "no gauge set in streams/*.py: the pattern is stale"
    for name in set(GAUGE_HELP) | set_in_code:
        m.gauges[name] = 1.0
    m.lag = {0: 5}
    out = {}
    for family in text_string_to_metric_families(m.render()):
        out[family.name] = family.type
        out.update({s.name: family.type for s in family.samples})
        if family.type == "counter":
            out[family.name + "_total"] = "counter"
    return out


def test_alerts_name_only_metrics_a_worker_exports_and_use_them_as_their_type():
    exported = exported_metrics()
    jobs = {j["job_name"] for j in prometheus_config()["scrape_configs"]}
    for r in alert_rules():
        expr = r["expr"]
        for name in re.findall(r"\b(strata_[a-z0-9_]+)", expr):
            assert name in exported, f"{r['alert']}: {name} is not a metric of streams/metrics.py"
        for func, name in re.findall(r"\b(rate|irate|increase|delta|deriv)\(\s*(strata_[a-z0-9_]+)", expr):
            wanted = "counter" if func in ("rate", "irate", "increase") else "gauge"
            assert exported[name] == wanted, f"{r['alert']}: {func}() of {name}, a {exported[name]}"
        for job in re.findall(r'\bjob="([^"]+)"', expr):
            assert job in jobs, f"{r['alert']}: job {job!r} is not scraped by prometheus.yml"
        for text in r["annotations"].values():
            for name in re.findall(r"\b(strata_[a-z0-9_]+)", text):
                assert name in exported, f"{r['alert']}: the annotation names {name}, not a metric"
    from strata.streams.metrics import GAUGE_HELP

    assert "milliseconds" in GAUGE_HELP["model_version"], "the model-age alert divides strata_model_version by 1000"
