"""The operator's dashboard: `GET /ui` (one page, no external scripts) and the JSON it reads.

The page reads only this worker's JSON views: `/stats` (below: the stream over the last ten
minutes, dead letters, the model), `/users/{id}/profile` and `/users/{id}/recommendations`.
"""
from __future__ import annotations

import functools
import time
from collections import deque
from importlib import resources

from faust import web

from strata.streams.app import app, factor_feed, settings
from strata.streams.metrics import metrics
from strata.streams.views import consumer_lag

SAMPLE_EVERY_S = 5.0
SAMPLES = 120  # ten minutes


class StreamSamples:
    """Every `SAMPLE_EVERY_S`: the events applied so far and the consumer lag, the last `SAMPLES` kept."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=SAMPLES)

    def add(self, at: float, applied: int, lag: int) -> None:
        self.samples.append((at, applied, lag))

    def series(self) -> list[dict]:
        """[{"t", "events_per_s", "lag"}] between consecutive samples."""
        points = list(self.samples)
        return [{"t": t1, "events_per_s": round(max(n1 - n0, 0) / (t1 - t0), 1), "lag": lag}
                for (t0, n0, _), (t1, n1, lag) in zip(points, points[1:]) if t1 > t0]


stream_samples = StreamSamples()


@app.timer(interval=SAMPLE_EVERY_S)
async def sample_stream() -> None:
    stream_samples.add(time.time(), sum(metrics.events.values()), sum((await consumer_lag()).values()))


@app.page("/stats")
async def stats(view: web.View, request: web.Request) -> web.Response:
    """The dashboard's figures: the stream's series, events by type, dead letters by reason, the model."""
    model = factor_feed.current
    now = time.time()
    return view.json({
        "now": now,
        "series": stream_samples.series(),
        "sample_every_s": SAMPLE_EVERY_S,
        "events": dict(metrics.events),
        "duplicates": metrics.duplicates,
        "deadlettered": dict(metrics.deadlettered),
        "records_rejected": {f"{topic}: {reason}": n for (topic, reason), n in metrics.rejected.items()},
        "model": {
            "version": model.version if model is not None else None,
            # versions are the trainer's wall clock in milliseconds (streams.trainer)
            "age_s": round(now - model.version / 1000.0, 1) if model is not None else None,
            "items": len(model) if model is not None else 0,
            "pinned": factor_feed.pinned,
        },
        "variants": variant_rates(),
    })


def variant_rates() -> list[dict]:
    """Each A/B variant's lists applied on this worker and the clicks attributed to them (rate: clicks
    per list, as `strata ab report` computes over every worker)."""
    out = []
    for variant in settings.variants:
        lists = metrics.ab_impressions.get(variant.name, 0)
        clicks = sum(n for (name, type_, _), n in metrics.ab_actions.items() if name == variant.name and type_ == "click")
        out.append({"name": variant.name, "lists": lists, "clicks": clicks,
                    "rate": f"{clicks / lists:.3f} clicks a list ({lists:,} lists)" if lists else "no lists yet"})
    return out


@functools.cache
def _page() -> str:
    return resources.files("strata.streams").joinpath("dashboard.html").read_text(encoding="utf-8")


@app.page("/ui")
async def dashboard(view: web.View, request: web.Request) -> web.Response:
    return view.html(_page())
