"""Process-local counters and histograms, rendered in the Prometheus text format by prometheus-client.

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
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOOP_LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


GAUGE_HELP = {
    "profiles_stored": "User profiles held in this worker's local store (its assigned partitions).",
    "model_version": "Version of the item-factor model served (milliseconds since the epoch; 0 = none yet).",
    "model_items": "Items with factors in the served model.",
    "changelog_records_recovered": "Profile and user-vector changelog records this process restored in batches since it started.",
    "standby_records_applied": "Changelog records this process applied to the standby copies of other workers' table partitions since it started.",
    "catalog_records_applied": "Catalog records (the catalog topic is the global catalog table's changelog) this process applied in batches since it started.",
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


class Histogram:
    def __init__(self, buckets=LATENCY_BUCKETS_S) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def family(self, name: str, help_text: str) -> HistogramMetricFamily:
        """The histogram as prometheus-client's (cumulative buckets, sum, count).  Counted here rather
        than in a prometheus-client Histogram: a micro-batch observes thousands of values at once."""
        buckets, cumulative = [], 0
        for bound, n in zip(self.buckets, self.counts):
            cumulative += n
            buckets.append((str(bound), cumulative))
        buckets.append(("+Inf", self.count))
        return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=self.sum)

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
        self.ab_impressions = defaultdict(int)  # served lists applied to their users' profiles, by variant
        self.ab_actions = defaultdict(int)  # attributed events, by (variant, type, how)
        self.ab_revenue = defaultdict(float)  # the prices of attributed purchases, by variant
        self.attribution_unmatched = defaultdict(int)  # events whose rec_id was not attributed, by reason
        self.factors_refused = 0
        self.batches = 0
        self.recommendations = 0  # requests ranked …
        self.recommendation_batches = 0  # … in this many recommend_many calls
        self.recommendations_from_standby = 0  # … of which this many for users of a standby partition
        self.owner_unreachable = 0  # requests answered 503: the worker owning the user could not be reached
        self.recommendations_refused = 0  # requests answered 503: too many being ranked (streams.views.Admission)
        self.learning_failures = 0  # events whose feedback step for θ failed (streams.agents.Learner)
        self.learning_steps = defaultdict(int)  # feedback steps asked for, by (learner, taken or none)
        self.update_latency = Histogram()
        self.loop_lag = Histogram(LOOP_LAG_BUCKETS_S)
        self.gc_pauses = Histogram(LOOP_LAG_BUCKETS_S)  # full (generation 2) garbage collections
        self.gauges: dict[str, float | dict[str, float]] = {}  # name → value, or labels → value
        self.lag: dict[int, int] = {}  # events partition → lag, set by the /metrics view

    def render(self) -> str:
        """This process's metrics in the Prometheus text format (prometheus-client's exposition)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry).decode()

    def _feedback_families(self):
        """The A/B counts (docs/design.md §4): served lists and attributed events by variant."""
        yield _counter("strata_ab_impressions", "Served lists applied to their users' state, by A/B variant.", "variant",
                       self.ab_impressions)
        actions = CounterMetricFamily("strata_ab_attributed", "Events attributed to a served list, by variant, event type "
                                      "and how (rec_id: carried the list's id; view_through: an item of a list served "
                                      "within the attribution window).", labels=("variant", "type", "how"))
        for labels, n in sorted(self.ab_actions.items()):
            actions.add_metric(labels, n)
        yield actions
        yield _counter("strata_ab_revenue", "Prices (context.price) of attributed purchases, by variant.", "variant", self.ab_revenue)
        steps = CounterMetricFamily("strata_learning_steps", "Feedback steps of θ this worker asked for, by source "
                                    "(next_event: the item a shopper went to next; served_list: acts on a served list, "
                                    "or another item chosen after one) and outcome (taken, or none: no pair to learn from).",
                                    labels=("source", "outcome"))
        for labels, n in sorted(self.learning_steps.items()):
            steps.add_metric(labels, n)
        yield steps
        yield _counter("strata_attribution_unmatched", "Events with a rec_id that was not attributed, by reason (the event is "
                       "applied all the same).", "reason", self.attribution_unmatched)

    def families(self):
        """Every metric as a prometheus-client metric family."""
        yield _counter("strata_events_processed", "Events applied to profiles, by behaviour type.", "type", self.events)
        yield _counter("strata_events_deadlettered", "Events rejected to the dead-letter topic, by reason.", "reason", self.deadlettered)
        rejected = CounterMetricFamily("strata_records_deadlettered", "Records of the catalog, factor and activity topics rejected "
                                       "to the dead-letter topic, by topic and reason.", labels=("topic", "reason"))
        for (topic, reason), n in sorted(self.rejected.items()):
            rejected.add_metric((topic, reason), n)
        yield rejected
        yield _counter("strata_http_events", "Events posted over HTTP (POST /events, /events:batch): accepted (acknowledged by "
                       "Kafka), rejected (invalid, 400) or failed (not acknowledged, 503).", "outcome",
                       {o: self.ingested.get(o, 0) for o in ("accepted", "rejected", "failed")})
        yield _counter("strata_impressions", "Served recommendation lists sent to the impressions topic (published), or dropped: "
                       "Kafka did not take them, or too many were in flight. A dropped impression never fails the response.",
                       "outcome", {o: self.impressions.get(o, 0) for o in ("published", "dropped")})
        yield from self._feedback_families()
        for name, help_text, value in (
            ("strata_events_duplicate", "Events dropped as already applied.", self.duplicates),
            ("strata_factor_messages_refused", "Item-factor messages refused as corrupt or inconsistent.", self.factors_refused),
            ("strata_batches", "Micro-batches processed.", self.batches),
            ("strata_recommendations", "Recommendation requests ranked by this worker.", self.recommendations),
            ("strata_recommendation_batches", "Rankings of concurrent requests together; requests / batches is the mean batch.",
             self.recommendation_batches),
            ("strata_recommendations_from_standby", "Requests for users of a partition another worker owns, answered from this "
             "worker's standby copy instead of forwarded.", self.recommendations_from_standby),
            ("strata_learning_failures", "Events whose feedback step for the ranker's weights failed (logged; the event was applied).",
             self.learning_failures),
            ("strata_owner_unreachable", "Requests answered 503 with Retry-After because the worker owning the user did not answer "
             "the forwarded request.", self.owner_unreachable),
            ("strata_recommendations_refused", "Requests answered 503 with Retry-After: STRATA_MAX_RANKING requests were being ranked.",
             self.recommendations_refused),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        yield self.update_latency.family("strata_update_latency_seconds", "Time from an event's Kafka timestamp to its profile being written.")
        yield self.loop_lag.family(
            "strata_event_loop_lag_seconds",
            "How late the event loop woke a periodic 50 ms sleep: how long HTTP requests, timers and the stream "
            "waited behind the step that held the loop.")
        yield self.gc_pauses.family(
            "strata_gc_full_collection_seconds",
            "How long each full (generation-2) garbage collection of the worker took: it holds the event loop throughout.")
        for name, value in sorted(self.gauges.items()):
            help_text = GAUGE_HELP.get(name, name)
            if isinstance(value, tuple):  # (label, {label value: value})
                label, values = value
                gauge = GaugeMetricFamily(f"strata_{name}", help_text, labels=(label,))
                for key, v in values.items():
                    gauge.add_metric((key,), v)
                yield gauge
            else:
                yield GaugeMetricFamily(f"strata_{name}", help_text, value=value)
        lag = GaugeMetricFamily("strata_consumer_lag", "Events not yet processed on an assigned events partition "
                                "(high-water mark - next offset to process).", labels=("partition",))
        for partition, n in sorted(self.lag.items()):
            lag.add_metric((str(partition),), n)
        yield lag
        yield _counter("strata_thread_cpu_seconds", "CPU seconds used by this process's threads, by thread name (main: the event loop).",
                       "thread", {name: round(seconds, 2) for name, seconds in thread_cpu_seconds().items()})
        yield GaugeMetricFamily("strata_consumer_lag_total", "Sum of strata_consumer_lag over this worker's partitions.",
                                value=sum(self.lag.values()))


class _Collector(Collector):
    def __init__(self, metrics: "Metrics") -> None:
        self.metrics = metrics

    def collect(self):
        return self.metrics.families()


def _counter(name: str, help_text: str, label: str, values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=(label,))
    for key, n in sorted(values.items()):
        family.add_metric((key,), n)
    return family


metrics = Metrics()
