"""Schema-level checks of the Kubernetes manifests in deploy/k8s (parsed with PyYAML; no cluster, no Docker)."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from strata.streams.config import ENV_DOC

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
API_VERSIONS = {"ConfigMap": "v1", "Secret": "v1", "Service": "v1", "StatefulSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


DOCS = documents()


def one(kind: str, pred=lambda d: True) -> dict:
    found = [d for d in DOCS if d["kind"] == kind and pred(d)]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def config() -> dict:
    return one("ConfigMap")["data"]


def env_of(container: dict) -> dict[str, str]:
    """The container's effective STRATA_* settings: the ConfigMaps it loads, then its own env."""
    out: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            out.update(one("ConfigMap", lambda d: d["metadata"]["name"] == source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        out[var["name"]] = var.get("value", "<from>")
    return out


def test_every_document_has_kind_api_version_and_a_valid_name():
    kinds = {d["kind"] for d in DOCS}
    assert {"ConfigMap", "Service", "StatefulSet", "Job", "CronJob"} <= kinds
    for d in DOCS:
        assert d["apiVersion"] == API_VERSIONS[d["kind"]], (d["__file__"], d["kind"], d["apiVersion"])
        assert NAME.match(d["metadata"]["name"]), d["metadata"]["name"]


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == files


def test_every_container_is_complete_and_its_settings_exist():
    for d in DOCS:
        if d["kind"] not in ("StatefulSet", "Job", "CronJob"):
            continue
        spec = pod_spec(d)
        assert spec["containers"], d["__file__"]
        for c in spec["containers"]:
            assert c["name"] and c["image"], d["__file__"]
            for var in c.get("env", []):
                assert var["name"].startswith("POD_") or var["name"] in ENV_DOC, f"{d['__file__']}: {var['name']} is not a setting"
                assert ("value" in var) != ("valueFrom" in var), var
    for name in config():
        assert name in ENV_DOC, f"ConfigMap key {name} is not a setting of streams/config.py"
    secrets = [d for d in DOCS if d["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {"strata-kafka-credentials", "strata-api-token"}
    for secret in secrets:
        assert set(secret["stringData"]) <= set(ENV_DOC)
    worker = pod_spec(one("StatefulSet"))["containers"][0]
    assert {"name": "strata-api-token", "optional": True} in [ref.get("secretRef") for ref in worker["envFrom"]]


def containers() -> list[tuple[str, dict]]:
    return [(d["__file__"], c) for d in DOCS if d["kind"] in ("StatefulSet", "Job", "CronJob") for c in pod_spec(d)["containers"]]


def settings_of(container: dict):
    """The container's settings as `Settings.from_env` reads them in pod strata-0 of namespace shop."""
    from strata.streams.config import Settings

    env = {k: v.replace("$(POD_NAME)", "strata-0").replace("$(POD_NAMESPACE)", "shop")
           for k, v in env_of(container).items() if k.startswith("STRATA_")}
    return Settings.from_env(env)


def test_settings_in_the_manifests_parse_to_what_the_manifests_say():
    from pathlib import PurePosixPath

    cfg = config()
    for where, c in containers():
        s = settings_of(c)  # raises ConfigError on an unknown or bad setting
        assert (s.kafka_bootstrap, s.topic_prefix, s.app_id, s.partitions) == (
            cfg["STRATA_KAFKA_BOOTSTRAP"], cfg["STRATA_TOPIC_PREFIX"], cfg["STRATA_APP_ID"], int(cfg["STRATA_PARTITIONS"])), where
        assert s.log_level == cfg["STRATA_LOG_LEVEL"] and s.security_protocol == cfg["STRATA_KAFKA_SECURITY_PROTOCOL"], where
    (worker,) = pod_spec(one("StatefulSet"))["containers"]
    s = settings_of(worker)
    assert s.web_host == "0.0.0.0" and s.web_port == 6066
    assert s.advertised_url == "http://strata-0.strata.shop.svc.cluster.local:6066"  # not derived from the wildcard bind
    assert PurePosixPath(s.data_dir) == PurePosixPath("/var/lib/strata")


def cli_args(argv: list[str]):
    from strata.streams.cli import build_parser

    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`strata {' '.join(argv)}` is refused by the CLI's parser (streams.cli.build_parser)")


def test_every_container_runs_a_command_the_cli_accepts():
    """The image's ENTRYPOINT is `strata` (deploy/Dockerfile), so `args` is a strata command line."""
    assert '\nENTRYPOINT ["strata"]\n' in (ROOT / "deploy" / "Dockerfile").read_text()
    commands = {}
    for where, c in containers():
        assert "command" not in c, f"{where}: `command` would replace the image's strata entrypoint"
        commands[where] = cli_args(c["args"])
    assert commands["statefulset.yaml"].command == "worker"
    assert commands["topics-job.yaml"].command == "topics" and not commands["topics-job.yaml"].check
    assert commands["trainer-cronjob.yaml"].command == "train" and commands["trainer-cronjob.yaml"].every is None


def test_every_container_runs_the_versioned_image_pulled_if_not_present():
    """Not `strata:latest` (pulled on every start, and a different image on each node): the
    pyproject version, which kustomization.yaml's images: entry can point at a registry."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (entry,) = [i for i in kustomization.get("images", []) if i["name"] == "strata"]
    assert str(entry["newTag"]) == VERSION
    for where, c in containers():
        name, _, tag = c["image"].rpartition(":")
        assert name == "strata" and tag == VERSION, f"{where}: image {c['image']!r}, not strata:{VERSION}"
        assert c["imagePullPolicy"] == "IfNotPresent", where


def test_workers_are_a_statefulset_with_a_volume_at_the_data_dir():
    sts = one("StatefulSet")
    spec = sts["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["replicas"] >= 2
    (worker,) = spec["template"]["spec"]["containers"]
    env = env_of(worker)
    claims = {c["metadata"]["name"]: c for c in spec["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    data = [name for name, path in mounts.items() if path == env["STRATA_DATA_DIR"]]
    assert data and data[0] in claims, (mounts, env["STRATA_DATA_DIR"])
    assert claims[data[0]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claims[data[0]]["spec"]["resources"]["requests"]["storage"]


def test_headless_service_gives_each_pod_the_url_it_advertises():
    sts = one("StatefulSet")
    service = one("Service", lambda d: d["metadata"]["name"] == sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (worker,) = sts["spec"]["template"]["spec"]["containers"]
    env = env_of(worker)
    port = int(env["STRATA_WEB_PORT"])
    assert any(p["containerPort"] == port for p in worker["ports"])
    assert env["STRATA_WEB_HOST"] == "0.0.0.0"  # reachable from the other pods
    url = env["STRATA_WEB_ADVERTISED_URL"]
    assert url == f"http://$(POD_NAME).{service['metadata']['name']}.$(POD_NAMESPACE).svc.cluster.local:{port}"
    # $(VAR) expands only from variables defined earlier in the list.
    names = [v["name"] for v in worker["env"]]
    for ref in re.findall(r"\$\((\w+)\)", url):
        assert names.index(ref) < names.index("STRATA_WEB_ADVERTISED_URL"), ref
    probe = worker["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and probe["port"] in ("http", port)


def test_topics_job_and_trainer_share_the_workers_partition_count():
    """One STRATA_PARTITIONS (the ConfigMap's) everywhere: the topics job creates the events and
    user-factors topics with it and the workers' changelogs get it; nobody overrides it."""
    partitions = int(config()["STRATA_PARTITIONS"])
    assert partitions >= 1
    job = one("Job")
    (creator,) = pod_spec(job)["containers"]
    assert creator["args"] == ["topics"]
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    for d in DOCS:
        if d["kind"] in ("StatefulSet", "Job", "CronJob"):
            for c in pod_spec(d)["containers"]:
                env = env_of(c)
                assert int(env["STRATA_PARTITIONS"]) == partitions, d["__file__"]
                assert env["STRATA_APP_ID"] == config()["STRATA_APP_ID"] and env["STRATA_TOPIC_PREFIX"] == config()["STRATA_TOPIC_PREFIX"]
                assert env["STRATA_KAFKA_BOOTSTRAP"] == config()["STRATA_KAFKA_BOOTSTRAP"]


def test_topics_job_uses_the_topic_specs():
    """The job's `strata topics` creates what streams.topics specifies with that partition count."""
    from strata.streams.config import Settings
    from strata.streams.topics import topic_specs

    specs = topic_specs(Settings.from_env({"STRATA_PARTITIONS": config()["STRATA_PARTITIONS"]}))
    assert specs["events"].partitions == specs["user-factors"].partitions == int(config()["STRATA_PARTITIONS"])


def test_trainer_is_a_cronjob_one_run_at_a_time():
    cron = one("CronJob")
    fields = cron["spec"]["schedule"].split()
    assert len(fields) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = pod_spec(cron)
    assert spec["restartPolicy"] in ("OnFailure", "Never")
    (trainer,) = spec["containers"]
    assert trainer["args"][0] == "train" and "--every" not in trainer["args"]  # the schedule is the CronJob's


def test_pods_run_as_non_root():
    for d in DOCS:
        if d["kind"] in ("StatefulSet", "Job", "CronJob"):
            assert pod_spec(d)["securityContext"]["runAsNonRoot"] is True, d["__file__"]
