"""Process-local counters and histograms, rendered in the Prometheus text format.

These are observations of this worker process (like any Prometheus client),
not state: nothing here needs to survive a rebalance.
"""
from __future__ import annotations

import os
import re
import threading
from bisect import bisect_left
from collections import defaultdict

import numpy as np

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOOP_LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


GAUGE_HELP = {
    "profiles_stored": "User profiles held in this worker's local store (its assigned partitions).",
    "model_version": "Version of the item-factor model served (milliseconds since the epoch; 0 = none yet).",
    "model_items": "Items with factors in the served model.",
    "changelog_records_recovered": "Profile and user-vector changelog records this process restored in batches since it started.",
    "standby_records_applied": "Changelog records this process applied to the standby copies of other workers' table partitions since it started.",
    "standby_lag": "Changelog records a standby copy of a profile partition trails the partition's end by, at the last fetch.",
    "stale_batches_refetched": "Fetched event batches whose records of some partition would have left a gap after the applied ones (a fetch that came back across a seek or rebalance); those partitions were sought back and fetched again.",
    "ranker_weight": "The ranker's learned weight θ of each term of the score (models.terms), as every worker holds it.",
    "ranker_steps": "Learning steps of θ read from the activity topic, every worker's.",
    "covisit_items": "Items with a co-visitation row in this worker's copy of the shop's co-visitation.",
    "covisit_pairs": "Co-visitation pairs read from the activity topic since this worker started.",
}


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) each thread of this process has used, by thread name: Python's
    name for a Python thread ("main" for the event loop's), the kernel's for a native one (e.g.
    RocksDB's), threads of one pool summed ("strata-answers_0" counts as "strata-answers").
    Linux only (/proc); {} elsewhere.  Which thread a throughput is bound by is the first question
    of any benchmark on two cores, and `strata bench` divides these by the work done."""
    try:
        tasks = os.listdir("/proc/self/task")
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/comm") as f:
            unnamed = f.read().strip()  # a native thread that kept the process's name: "native"
    except (OSError, ValueError):
        return {}
    names = {t.native_id: t.name for t in threading.enumerate()}
    names[threading.main_thread().native_id] = "main"
    out: dict[str, float] = defaultdict(float)
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        comm, _, rest = stat.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        name = names.get(int(task)) or ("native" if comm == unnamed else comm)
        out[re.sub(r"_\d+$", "", name)] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def _label(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Histogram:
    def __init__(self, buckets=LATENCY_BUCKETS_S) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def lines(self, name: str, help_text: str) -> list[str]:
        """The histogram in the Prometheus text format (cumulative buckets, sum, count)."""
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, n in zip(self.buckets, self.counts):
            cumulative += n
            out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.sum}")
        out.append(f"{name}_count {self.count}")
        return out

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def observe_many(self, values: np.ndarray) -> None:
        """Count every value in its bucket (the first bound ≥ it), in one pass: a micro-batch
        observes thousands."""
        if not len(values):
            return
        placed = np.bincount(np.searchsorted(self.buckets, values, side="left"), minlength=len(self.counts))
        for i, n in enumerate(placed.tolist()):
            self.counts[i] += n
        self.sum += float(np.sum(values))
        self.count += len(values)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events = defaultdict(int)  # by type
        self.deadlettered = defaultdict(int)  # by reason
        self.rejected = defaultdict(int)  # records of the other topics, by (topic role, reason)
        self.duplicates = 0
        self.ingested = defaultdict(int)  # events posted over HTTP (streams.ingest), by outcome
        self.impressions = defaultdict(int)  # served lists sent to the impressions topic, by outcome
        self.factors_refused = 0
        self.batches = 0
        self.recommendations = 0  # requests ranked …
        self.recommendation_batches = 0  # … in this many recommend_many calls
        self.recommendations_from_standby = 0  # … of which this many for users of a standby partition
        self.recommendations_refused = 0  # requests answered 503: too many being ranked (streams.views.Admission)
        self.learning_failures = 0  # events whose feedback step for θ failed (streams.agents.Learner)
        self.update_latency = Histogram()
        self.loop_lag = Histogram(LOOP_LAG_BUCKETS_S)
        self.gc_pauses = Histogram(LOOP_LAG_BUCKETS_S)  # full (generation 2) garbage collections
        self.gauges: dict[str, float | dict[str, float]] = {}  # name → value, or labels → value
        self.lag: dict[int, int] = {}  # events partition → lag, set by the /metrics view

    def render(self) -> str:
        lines = [
            "# HELP strata_events_processed_total Events applied to profiles, by behaviour type.",
            "# TYPE strata_events_processed_total counter",
        ]
        lines += [f'strata_events_processed_total{{type="{t}"}} {n}' for t, n in sorted(self.events.items())]
        lines += [
            "# HELP strata_events_deadlettered_total Events rejected to the dead-letter topic, by reason.",
            "# TYPE strata_events_deadlettered_total counter",
        ]
        lines += [f'strata_events_deadlettered_total{{reason="{r}"}} {n}' for r, n in sorted(self.deadlettered.items())]
        lines += [
            "# HELP strata_records_deadlettered_total Records of the catalog, factor and activity topics rejected "
            "to the dead-letter topic, by topic and reason.",
            "# TYPE strata_records_deadlettered_total counter",
        ]
        lines += [f'strata_records_deadlettered_total{{topic="{_label(t)}",reason="{_label(r)}"}} {n}'
                  for (t, r), n in sorted(self.rejected.items())]
        lines += [
            "# HELP strata_http_events_total Events posted over HTTP (POST /events, /events:batch): accepted (acknowledged by "
            "Kafka), rejected (invalid, 400) or failed (not acknowledged, 503).",
            "# TYPE strata_http_events_total counter",
        ]
        lines += [f'strata_http_events_total{{outcome="{o}"}} {self.ingested.get(o, 0)}' for o in ("accepted", "rejected", "failed")]
        lines += [
            "# HELP strata_impressions_total Served recommendation lists sent to the impressions topic (published), "
            "or dropped: Kafka did not take them, or too many were in flight. A dropped impression never fails the response.",
            "# TYPE strata_impressions_total counter",
        ]
        lines += [f'strata_impressions_total{{outcome="{o}"}} {self.impressions.get(o, 0)}' for o in ("published", "dropped")]
        lines += [
            "# HELP strata_events_duplicate_total Events dropped as already applied.",
            "# TYPE strata_events_duplicate_total counter",
            f"strata_events_duplicate_total {self.duplicates}",
            "# HELP strata_factor_messages_refused_total Item-factor messages refused as corrupt or inconsistent.",
            "# TYPE strata_factor_messages_refused_total counter",
            f"strata_factor_messages_refused_total {self.factors_refused}",
            "# HELP strata_batches_total Micro-batches processed.",
            "# TYPE strata_batches_total counter",
            f"strata_batches_total {self.batches}",
            "# HELP strata_recommendations_total Recommendation requests ranked by this worker.",
            "# TYPE strata_recommendations_total counter",
            f"strata_recommendations_total {self.recommendations}",
            "# HELP strata_recommendation_batches_total Rankings of concurrent requests together; requests / batches is the mean batch.",
            "# TYPE strata_recommendation_batches_total counter",
            f"strata_recommendation_batches_total {self.recommendation_batches}",
            "# HELP strata_recommendations_from_standby_total Requests for users of a partition another worker owns, answered from this worker's standby copy instead of forwarded.",
            "# TYPE strata_recommendations_from_standby_total counter",
            f"strata_recommendations_from_standby_total {self.recommendations_from_standby}",
            "# HELP strata_learning_failures_total Events whose feedback step for the ranker's weights failed (logged; the event was applied).",
            "# TYPE strata_learning_failures_total counter",
            f"strata_learning_failures_total {self.learning_failures}",
            "# HELP strata_recommendations_refused_total Requests answered 503 with Retry-After: STRATA_MAX_RANKING requests were being ranked.",
            "# TYPE strata_recommendations_refused_total counter",
            f"strata_recommendations_refused_total {self.recommendations_refused}",
        ]
        lines += self.update_latency.lines(
            "strata_update_latency_seconds", "Time from an event's Kafka timestamp to its profile being written.")
        lines += self.loop_lag.lines(
            "strata_event_loop_lag_seconds",
            "How late the event loop woke a periodic 50 ms sleep: how long HTTP requests, timers and the stream "
            "waited behind the step that held the loop.")
        lines += self.gc_pauses.lines(
            "strata_gc_full_collection_seconds",
            "How long each full (generation-2) garbage collection of the worker took: it holds the event loop throughout.")
        for name, value in sorted(self.gauges.items()):
            help_text = GAUGE_HELP.get(name)
            if help_text:
                lines.append(f"# HELP strata_{name} {help_text}")
            lines.append(f"# TYPE strata_{name} gauge")
            if isinstance(value, dict):
                lines += [f"strata_{name}{{{labels}}} {v}" for labels, v in value.items()]
            else:
                lines.append(f"strata_{name} {value}")
        lines += [
            "# HELP strata_consumer_lag Events not yet processed on an assigned events partition (high-water mark - next offset to process).",
            "# TYPE strata_consumer_lag gauge",
        ]
        lines += [f'strata_consumer_lag{{partition="{p}"}} {n}' for p, n in sorted(self.lag.items())]
        lines += [
            "# HELP strata_thread_cpu_seconds_total CPU seconds used by this process's threads, by thread name (main: the event loop).",
            "# TYPE strata_thread_cpu_seconds_total counter",
        ]
        lines += [f'strata_thread_cpu_seconds_total{{thread="{_label(name)}"}} {seconds:.2f}'
                  for name, seconds in sorted(thread_cpu_seconds().items())]
        lines += [
            "# HELP strata_consumer_lag_total Sum of strata_consumer_lag over this worker's partitions.",
            "# TYPE strata_consumer_lag_total gauge",
            f"strata_consumer_lag_total {sum(self.lag.values())}",
        ]
        return "\n".join(lines) + "\n"


metrics = Metrics()
