"""The benchmarks' plumbing: machine info with library versions, percentiles, clear failures."""
from __future__ import annotations

import os
import subprocess
import sys

from strata.streams.benchmarks.common import machine_info, percentiles_ms


def test_machine_info_names_cores_memory_python_and_library_versions():
    info = machine_info()
    assert info["cores"] >= 1 and info["memory_bytes"] > 0 and info["python"].count(".") == 2
    assert info["libraries"]["faust-streaming"].startswith("0.15")
    assert info["libraries"]["aiokafka"] and info["libraries"]["rocksdict"] and info["libraries"]["implicit"]


def test_percentiles_are_in_milliseconds():
    p = percentiles_ms([0.001] * 98 + [0.1, 0.2])
    assert p["p50"] == 1.0 and p["max"] == 200.0 and 1.0 <= p["p99"] <= 200.0


def _strata(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`strata ARGS` in a subprocess, with none of this environment's STRATA_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return subprocess.run([sys.executable, "-m", "strata.streams", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_serve_without_a_worker_exits_1_with_a_hint():
    result = _strata("bench", "serve", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1, result
    assert "strata worker" in result.stderr and "Traceback" not in result.stderr


def test_train_bench_on_a_tiny_synthetic_log_reports_fit_seconds(tmp_path):
    out = tmp_path / "train.json"
    result = _strata("bench", "train", "--synthetic-users", "200", "--synthetic-items", "500", "--synthetic-events", "5000",
                     "--iterations", "2", "--dims", "8", "--json", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    import json

    body = json.loads(out.read_text())
    assert body["synthetic"]["events"] == 5000 and body["synthetic"]["fit_s"] > 0
    assert body["als"]["factors"] == 8 and body["machine"]["libraries"]
    assert "train: synthetic 200×500×5,000" in result.stderr


def test_profile_size_bench_measures_what_the_workers_store():
    from strata.models.catalog import Catalog
    from strata.models.events import parse_event
    from strata.models.logs.loaders import open_log
    from strata.models.profile import ProfileParams, build_profiles
    from strata.streams.benchmarks.common import bench_profile_size

    params = ProfileParams(caps={"item": 20, "domain": 10, "overall": 5})
    result = bench_profile_size("users=40,items=300,events=3000", "synthetic", params)
    source = open_log("users=40,items=300,events=3000", "synthetic")
    profiles = build_profiles((parse_event(e, 2e9) for e in source.events()), Catalog.from_records(list(source.catalog())), params)
    assert result["users"] == len(profiles)
    assert result["stored_bytes"]["max"] == max(len(p.to_bytes()) for p in profiles.values())
    assert result["interest_bytes"]["max"] == max(len(p.interest_bytes()) for p in profiles.values())
    assert result["interest_bytes"]["max"] < result["stored_bytes"]["max"]  # the ledgers are apart
    assert result["users_at_item_cap"] == sum(len(p.w["item"]) >= 20 for p in profiles.values()) > 0


def test_thread_cpu_is_counted_for_the_thread_that_spent_it():
    import threading
    import time

    from strata.streams.metrics import thread_cpu_seconds

    if not os.path.exists("/proc/self/task"):
        import pytest

        pytest.skip("per-thread CPU comes from Linux /proc")
    before = thread_cpu_seconds()
    spun, measured = threading.Event(), threading.Event()

    def spin() -> None:
        started = time.thread_time()
        while time.thread_time() - started < 0.3:
            pass
        spun.set()
        measured.wait(10)  # stays alive to be measured: an ended thread leaves /proc

    worker = threading.Thread(target=spin, name="spinner_0")
    worker.start()
    assert spun.wait(10)
    during = thread_cpu_seconds()
    measured.set()
    worker.join()
    assert during.get("spinner", 0.0) >= 0.1, during  # the pool suffix is dropped
    assert during["main"] - before["main"] < 0.15, (before, during)  # the main thread only waited


def test_cpu_per_unit_divides_by_the_work_and_names_the_bound():
    from strata.streams.benchmarks.common import cpu_line, cpu_per_unit

    cpu = cpu_per_unit({"main": 1.0, "idle": 3.0}, {"main": 10.0, "strata-answers": 4.5, "idle": 3.0}, 4000, 1.5, 2)
    assert cpu["worker_ms"] == {"main": 2.25, "strata-answers": 1.125}
    assert cpu["client_ms"] == 0.375
    assert cpu["bound_per_s"] == {"event_loop": round(1000 / 2.25, 1), "2_cores": round(2000 / 3.75, 1)}
    line = cpu_line(cpu, "request")
    assert line.startswith("CPU per request: worker main 2.25 ms, strata-answers 1.12 ms; client 0.38 ms")
    assert "444/s (event loop), 533/s (2 cores)" in line
    events = cpu_per_unit({}, {"main": 3.0}, 100_000, None, None)
    assert events["bound_per_s"] == {"event_loop": round(1000 / 0.03, 1)} and "client" not in cpu_line(events, "event")
    assert "main 30.0 µs" in cpu_line(events, "event")
    two = cpu_per_unit({}, {"main": 4.0}, 2000, 1.0, 2, loops=2)  # two workers' loops, summed
    assert two["bound_per_s"] == {"2_event_loops": 1000.0, "2_cores": 800.0}
    assert "1,000/s (2 event loops), 800/s (2 cores)" in cpu_line(two, "request")


def test_the_benches_read_the_thread_cpu_the_worker_renders():
    from strata.streams.benchmarks.common import parse_metrics, thread_cpu
    from strata.streams.metrics import Metrics, thread_cpu_seconds

    if not thread_cpu_seconds():
        import pytest

        pytest.skip("per-thread CPU comes from Linux /proc")
    series = parse_metrics(Metrics().render())
    one = thread_cpu([series])
    assert "main" in one and all(v >= 0 for v in one.values())
    assert thread_cpu([series, series]) == {name: 2 * v for name, v in one.items()}  # summed over workers


def test_thread_names_survive_the_prometheus_text_both_ways(monkeypatch):
    import strata.streams.metrics as m
    from strata.streams.benchmarks.common import parse_metrics, thread_cpu

    odd = 'pool "x"\\y\nz'
    monkeypatch.setattr(m, "thread_cpu_seconds", lambda: {odd: 1.5, "main": 2.0})
    text = m.Metrics().render()
    assert 'strata_thread_cpu_seconds_total{thread="pool \\"x\\"\\\\y\\nz"} 1.5' in text
    assert thread_cpu([parse_metrics(text)]) == {odd: 1.5, "main": 2.0}


def test_bench_serve_reads_the_share_of_requests_from_standby_summed_over_workers():
    from strata.streams.benchmarks.common import counter_share, parse_metrics, summed
    from strata.streams.metrics import Metrics

    a, b = Metrics(), Metrics()
    before = summed([parse_metrics(a.render()), parse_metrics(b.render())])
    a.recommendations, a.recommendations_from_standby = 40, 10
    b.recommendations, b.recommendations_from_standby = 60, 40
    after = summed([parse_metrics(a.render()), parse_metrics(b.render())])
    assert counter_share("strata_recommendations_from_standby_total", before, after) == 0.5
    assert counter_share("strata_recommendations_from_standby_total", before, before) is None  # nothing ranked in between
    # a worker that does not count them
    assert counter_share("strata_recommendations_from_standby_total", {}, {"strata_recommendations_total": 5.0}) is None


def test_serve_refuses_a_url_given_twice_and_fewer_clients_than_workers():
    url = "http://127.0.0.1:9"
    result = _strata("bench", "serve", "--url", url, "--url", url + "/")
    assert result.returncode == 1 and "--url given twice" in result.stderr, result
    result = _strata("bench", "serve", "--url", url, "--url", "http://127.0.0.1:10", "--concurrency", "1")
    assert result.returncode == 1 and "less than the 2 URLs" in result.stderr, result


def _stream_result(rate: float, p99: float, loop_ms: float) -> dict:
    return {"events_per_s": rate, "ratio": rate / 200_000, "cpu_per_event": {"worker_ms": {"main": loop_ms}},
            "latency_ms": {"p99": p99}}


def test_several_stream_runs_give_their_median_range_and_runs_at_the_target():
    from strata.streams.benchmarks.stream import runs_line, summarise_runs

    runs = [_stream_result(48_000, 40.0, 0.040), _stream_result(62_000, 98.0, 0.030), _stream_result(52_000, 35.0, 0.036)]
    summary = summarise_runs(runs)
    assert summary["runs"] == runs
    assert summary["events_per_s"] == {"median": 52_000, "min": 48_000, "max": 62_000}
    assert summary["p99_ms"] == {"median": 40.0, "min": 35.0, "max": 98.0}
    assert summary["event_loop_us_per_event"]["median"] == 36.0
    assert summary["runs_at_target"] == 2
    assert "median 52,000 events/s (48,000 … 62,000), 2 of 3 at 50,000/s or more" in runs_line(summary)


def test_runs_are_refused_for_benches_that_run_once():
    result = _strata("bench", "serve", "--runs", "3")
    assert result.returncode == 2, result
    assert "--runs is for `bench stream`" in result.stderr and "Traceback" not in result.stderr


def test_the_loop_lag_of_a_phase_names_the_bucket_of_its_longest_wait():
    from strata.streams.benchmarks.stream import loop_lag, summary_line

    before = {0.01: 5.0, 0.1: 6.0, 1.0: 6.0, float("inf"): 6.0}
    after = {0.01: 105.0, 0.1: 106.0, 1.0: 108.0, float("inf"): 108.0}  # 100 ≤ 10 ms, 2 in 0.1-1 s
    lag = loop_lag(before, after)
    assert lag["observations"] == 102 and lag["longest_le_ms"] == 1000.0
    assert lag["p99"] is not None and 100.0 < lag["p99"] <= 1000.0
    assert loop_lag(before, {**after, float("inf"): 109.0})["longest_le_ms"] == "+Inf"
    assert loop_lag(after, after)["longest_le_ms"] is None  # nothing observed in between

    result = {"events_per_s": 30_000, "workers": 1, "ratio": 0.1, "raw_consume_per_s": 300_000,
              "latency_ms": {"offered_rate": 2000, "p50": 8, "p95": 20, "p99": 30}, "loop_lag_ms": lag}
    assert summary_line(result).endswith("event loop held during the backlog: p99 " + f"{lag['p99']} ms, longest ≤ 1000 ms")


def test_the_in_process_ranking_bench_reports_its_percentiles():
    from strata.streams.benchmarks.ranking import bench_ranking

    result = bench_ranking(n_items=20_000, dims=32, requests=30, popularity_events=5_000)
    assert result["requests"] == 30 and 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
