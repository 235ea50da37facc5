"""The Faust application: topics, tables and the objects agents and views share.

Agents live in `streams.agents`, views in `streams.views`; both are imported
explicitly by `streams.worker` (no venusian scanning).
"""
from __future__ import annotations

import logging as _logging

import aiohttp
import faust

from strata.models.catalog import Catalog
from strata.models.learned import LearnedRanker
from strata.streams.batching import ExternalChangelogGlobalTable
from strata.streams.batching import install as install_batch_route
from strata.streams.config import Settings
from strata.streams.deadletter import DeadLetterQueue
from strata.streams.feeds import EndOffsets, FactorFeed, ShopFeed
from strata.streams.state import CatalogTableView, KeyCounts, catalog_problem
from strata.streams.topics import MAX_MESSAGE_BYTES, topic_specs

settings = Settings.from_env()
_specs = topic_specs(settings)

FORWARD_TIMEOUT_S = 5.0  # a request forwarded to its user's owner: longer is an owner that hangs


def forwarding_client() -> aiohttp.ClientSession:
    """The HTTP client `table_route` forwards requests to their owner with.  Bounded: an owner that
    accepts connections and never answers (stopped, swapping, its loop stuck) costs the client a
    503 after FORWARD_TIMEOUT_S (`streams.views.owner_route`), not aiohttp's default of minutes."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S, connect=1.0))


app = faust.App(
    settings.app_id,
    broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
    broker_credentials=None,
    store="rocksdb://",
    datadir=str(settings.data_dir),
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    web_bind=settings.web_host,
    web_host=settings.web_host,
    web_port=settings.web_port,
    autodiscover=False,
    origin="strata.streams",
    # A worker is ready within seconds: short sessions, no rebalance delay.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=1.0,
    broker_rebalance_timeout=20.0,
    broker_request_timeout=30.0,
    consumer_auto_offset_reset="earliest",
    consumer_max_fetch_size=MAX_MESSAGE_BYTES,
    producer_max_request_size=MAX_MESSAGE_BYTES,
    producer_max_batch_size=512 * 1024,
    # No linger: every batch ends with `producer.flush()`, and aiokafka's flush waits for the
    # linger to expire (5 ms of each small batch's latency); a big batch fills its record
    # batches before the sender runs, so throughput does not need it.
    producer_linger=0.0,
    # One fetch is one batch of the events route (streams.batching): bigger batches, fewer flushes.
    broker_max_poll_records=settings.batch_size,
    producer_acks=-1,
    stream_wait_empty=False,
    # With standbys, each table partition is also kept by another worker (when there is one);
    # they follow the changelog in batches (streams.batching) and answer recommendations.
    table_standby_replicas=settings.standby_replicas,
    worker_redirect_stdouts=False,
    web_cors_options=None,
    HttpClient=forwarding_client,
)

# aiokafka logs every produced record at DEBUG; with the hot path sending one changelog record
# per user per batch, building those log records alone cost ~8% of a worker (py-spy).
_logging.getLogger("aiokafka").setLevel(max(_logging.INFO, _logging.getLevelName(settings.log_level.upper())))

if settings.security_protocol != "PLAINTEXT":
    import ssl as _ssl

    _ctx = _ssl.create_default_context(cafile=settings.ssl_cafile or None) if "SSL" in settings.security_protocol else None
    if settings.security_protocol.startswith("SASL"):
        app.conf.broker_credentials = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=_ctx,
        )
    else:
        app.conf.broker_credentials = faust.SSLCredentials(_ctx)


def _topic(key: str, value_serializer: str = "raw"):
    """A Faust topic for one of our TopicSpecs (raw bytes in and out: the agents decode)."""
    spec = _specs[key]
    return app.topic(
        spec.name,
        partitions=spec.partitions,
        compacting=spec.compacted,
        key_serializer="raw",
        value_serializer=value_serializer,
        config=spec.config(),
    )


events_topic = _topic("events")
# The events topic skips Faust's per-message delivery: fetched records go in batches to
# streams.agents.apply_events (see streams.batching).  Registering the topic with the
# conductor keeps it in the group's subscription and assignment like any agent's topic.
events_route = install_batch_route(app, events_topic.get_topic_name())
app.topics.add(events_topic)
catalog_topic = _topic("catalog")
deadletter_topic = _topic("deadletter", value_serializer="json")
user_factors_topic = _topic("user-factors")
activity_topic = _topic("activity")
attributions_topic = _topic("attributions")

# user_id → msgpack-encoded models.profile.Profile; written in batches by streams.state.
# key_type/value_type bytes make Faust use the raw codec everywhere: in the changelog, in
# recovery and in table_route's key → partition mapping (a Schema alone is not enough).
# Changelogs are compacted (Faust's default), but Kafka only compacts closed segments, and the
# default segment (1 GiB or 7 days) would hold millions of superseded profile versions that a
# recovering worker replays one message at a time (Faust's recovery path, ≈ 4,000 records/s
# here).  Hourly segments keep a changelog near one record per user plus the last hour.
CHANGELOG_CONFIG = {"segment.ms": str(3_600_000), "min.cleanable.dirty.ratio": "0.2"}
user_to_profile = app.Table(
    "user_to_profile", partitions=settings.partitions, key_type=bytes, value_type=bytes, extra_topic_configs=CHANGELOG_CONFIG
)

# The catalog topic *is* this table's changelog: every worker holds the whole catalog and,
# since the records come from outside the group, follows every partition as a standby.
class _CatalogTable(ExternalChangelogGlobalTable):
    """The catalog: a global table on the catalog topic whose records are checked as they come."""

    def apply_changelog_batch(self, batch, *args, **kwargs):
        # New catalog records: the hot path's lookup caches must not answer from before them.
        super().apply_changelog_batch([event for event in batch if catalog_record_ok(event.message)], *args, **kwargs)
        for view in _catalog_views:
            view.invalidate()


_catalog_views: list = []


app.conf.GlobalTable = _CatalogTable
catalog_table = app.GlobalTable(
    "catalog",
    partitions=_specs["catalog"].partitions,
    changelog_topic=catalog_topic,
    key_type=bytes,
    value_type=bytes,
    recovery_buffer_size=1,
    synchronize_all_active_partitions=True,
)
_catalog_views[:] = [CatalogTableView(catalog_table, "item"), CatalogTableView(catalog_table, "category")]
catalog = Catalog(*_catalog_views)

# user_id → the batch job's long-term user vector (msgpack [version, float32 bytes]), co-partitioned with events.
user_to_vector = app.Table(
    "user_to_vector", partitions=settings.partitions, key_type=bytes, value_type=bytes, extra_topic_configs=CHANGELOG_CONFIG
)
# These recover from their changelogs in batches (streams.batching), not one message at a time;
# a recovered catalog batch must empty the hot path's lookup caches like any applied change.
events_route.recovered_tables.update({user_to_profile.name, user_to_vector.name, catalog_table.name})


def _catalog_recovered(table, standby: bool) -> None:
    if table is catalog_table:
        for view in _catalog_views:
            view.invalidate()


events_route.on_recovered.append(_catalog_recovered)


def catalog_record_ok(record) -> bool:
    """Whether a catalog-topic record may be applied to the catalog table; one that may not is
    dead-lettered with its reason (the table keeps the key's last valid record)."""
    problem = catalog_problem(record.key, record.value)
    if problem is None:
        return True
    deadletters.submit(record, *problem, source="catalog")
    return False


events_route.filters[catalog_table.name] = catalog_record_ok

# Profiles held per local partition, for /metrics: kept by the agent's batched writes, counted
# again after partitions moved or were recovered (streams.state.KeyCounts).
profile_counts = KeyCounts(user_to_profile)
events_route.on_rebalance.append(profile_counts.clear)
# (A standby's writes are not counted: it turns active only through a rebalance, which clears.)
events_route.on_recovered.append(lambda table, standby: profile_counts.clear() if table is user_to_profile and not standby else None)

rank_params = settings.rank_params
# Derived state every worker holds in full, rebuilt from its topic on start (see streams.feeds).
# Records refused where no one can await the send (the feeds, the catalog's changelog batches).
deadletters = DeadLetterQueue(lambda value: deadletter_topic.send(value=value))
factor_feed = FactorFeed(settings, deadletters=deadletters)
shop_feed = ShopFeed(settings, half_life_s=rank_params.popularity_half_life_s, deadletters=deadletters)
end_offsets = EndOffsets(settings)
_served: list[LearnedRanker] = []


def served_ranker() -> LearnedRanker:
    """The ranker of the current factor version (none before the first), over the shop's live
    co-visitation, popularity and θ: what requests are answered with and what the agent learns on."""
    model = factor_feed.current
    if not _served or _served[0].model is not model:
        _served[:] = [LearnedRanker(model, catalog.category_of, catalog.root_of, shop_feed.covisits,
                                    shop_feed.popularity, shop_feed.weights, settings.profile, rank_params)]
    return _served[0]  # for the consumer lag on /metrics
