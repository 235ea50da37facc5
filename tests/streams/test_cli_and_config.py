"""Bad CLI arguments and settings say what is wrong and exit non-zero, never with a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from strata.models.ranking import RankParams
from strata.streams.config import ENV_DOC, ConfigError, Settings

REPO = Path(__file__).resolve().parents[2]


def strata(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    child_env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    child_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "strata.streams", *args], capture_output=True, text=True, env=child_env, timeout=60)


@pytest.mark.parametrize(
    "args, message",
    [
        (["replay", "--events", "/nope/missing.csv", "--format", "taobao"], "missing.csv"),
        (["replay", "--events", "x", "--format", "excel"], "invalid choice"),
        (["replay", "--events", "x", "--format", "taobao", "--limit", "-3"], "must be at least 1"),
        (["replay", "--events", "x", "--format", "taobao", "--rate", "fast"], "not a number"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args, message):
    result = strata(*args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_exits_2_naming_the_variable():
    result = strata("profile", "u1", env={"STRATA_WEB_PORT": "seventy"})
    assert result.returncode == 2
    assert "STRATA_WEB_PORT" in result.stderr and "Traceback" not in result.stderr


def test_a_worker_with_a_bad_variant_does_not_start():
    result = strata("worker", env={"STRATA_VARIANTS": "control=;fresh=recency:2"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "STRATA_VARIANTS: variant 'fresh': unknown setting 'recency'; known: share, learning" in result.stderr


def test_the_rank_params_reach_the_settings():
    s = Settings.from_env({"STRATA_RANK_PARAMS": "popularity_half_life_s=43200"})
    assert s.rank_params.popularity_half_life_s == 43_200.0
    assert Settings.from_env({}).rank_params == RankParams()


def test_the_variants_are_read_whole():
    s = Settings.from_env({"STRATA_VARIANTS": "control=learning:off;fresh=rec_0:2,share:3", "STRATA_ATTRIBUTION_WINDOW": "10m"})
    assert [(v.name, v.share, v.learning, v.scale) for v in s.variants] == [
        ("control", 1.0, False, ()), ("fresh", 3.0, True, (("rec_0", 2.0),))]
    assert s.attribution_window_s == 600.0 and s.experiment == "strata-ab"


def test_kafka_refuses_a_script_port_the_workers_would_not_use():
    result = strata("kafka", "status", env={"STRATA_KAFKA_PORT": "19999", "STRATA_KAFKA_BOOTSTRAP": "127.0.0.1:9092"})
    assert result.returncode == 2
    assert "STRATA_KAFKA_BOOTSTRAP=127.0.0.1:19999" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_worker_exits_1_with_a_hint():
    result = strata("profile", "u1", env={"STRATA_WEB_PORT": "9"})
    assert result.returncode == 1
    assert "strata worker" in result.stderr and "Traceback" not in result.stderr


def test_settings_parse_the_profile_parameters():
    s = Settings.from_env({"STRATA_HALF_LIFE": "item=12h", "STRATA_BETA": "purchase=10", "STRATA_CAPS": "item=50"})
    assert s.profile.half_life_s["item"] == 43_200 and s.profile.half_life_s["domain"] == 14 * 86_400
    assert s.profile.beta["purchase"] == 10 and s.profile.beta["view"] == 1
    assert s.profile.caps["item"] == 50


@pytest.mark.parametrize(
    "env",
    [
        {"STRATA_HALF_LIFE": "item=soon"},
        {"STRATA_BETA": "teleport=3"},
        {"STRATA_CAPS": "item=0"},
        {"STRATA_KAFKA_BOOTSTRAP": "no-port"},
        {"STRATA_TOPIC_PREFIX": "bad prefix/"},
        {"STRATA_PARTITONS": "8"},
        {"STRATA_LOG_LEVEL": "loud"},
        {"STRATA_VARIANTS": "control=;fresh=rec_0:x"},
        {"STRATA_VARIANTS": "a=;a="},
        {"STRATA_EXPERIMENT": "two words"},
        {"STRATA_ATTRIBUTION_WINDOW": "0s"},
        {"STRATA_MODEL_SIGNING_KEY": "short"},
        {"STRATA_RANK_PARAMS": "no_such_knob=1"},
        {"STRATA_RANK_PARAMS": "popularity_half_life_s=-5"},
    ],
)
def test_bad_settings_are_refused(env):
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_the_settings_table_documents_every_setting():
    table = (REPO / "docs" / "operations.md").read_text()
    for name, (default, _) in ENV_DOC.items():
        assert f"| `{name}` |" in table, name
        if default:
            assert f"`{default}`" in table, (name, default)


def test_worker_help_lists_every_setting_with_its_default():
    result = strata("worker", "--help")
    assert result.returncode == 0
    for name in ENV_DOC:
        assert name in result.stdout, name
    assert "STRATA_KAFKA_BOOTSTRAP=127.0.0.1:9092" in result.stdout


def test_a_replay_summary_names_the_catalog_only_when_it_sent_one():
    from strata.streams.replay import ReplaySummary

    assert ReplaySummary(catalog=6104, sent=10, seconds=1.0).line().startswith("catalog 6,104 records · sent 10 events")
    events_only = ReplaySummary(sent=30_000, seconds=6.0).line()
    assert events_only.startswith("sent 30,000 events · rejected 0") and "catalog" not in events_only
