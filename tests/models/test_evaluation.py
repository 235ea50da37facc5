"""The prequential evaluator: no peeking, the protocol, hand-computed results, the CLI."""
from __future__ import annotations

import json
import math

import pytest

from strata.models.catalog import Catalog
from strata.models.evaluation.prequential import Dataset, Protocol, evaluate, format_table, prequential
from strata.models.ranking import RankParams, format_rank_params, parse_rank_params
from strata.models.events import Event
from strata.models.evaluation.recommenders import BatchTrainer, Recommender, World
from strata.models.evaluation.registry import MODEL_NAMES, build_models
from tests.models.test_recommenders import ALS, CATALOG, T0, small_log


class Spy(Recommender):
    """Wraps a model and records every event it learns, to check what it knew when asked."""

    def __init__(self, inner: Recommender, trainer: BatchTrainer) -> None:
        super().__init__(inner.world)
        self.inner = inner
        self.trainer = trainer
        self.uses_batch_fit = inner.uses_batch_fit
        self.learned: list[str] = []
        self.asked: list[str] = []
        self.target: Event | None = None

    def learn_one(self, event: Event) -> None:
        self.learned.append(event.event_id)
        self.inner.learn_one(event)

    def rank(self, user_id, k, now):
        e = self.target
        assert e is not None and e.user_id == user_id and e.ts == now
        assert e.event_id not in self.learned, "the model saw the target before it was asked"
        assert e.event_id not in {x.event_id for x in self.trainer._events}, "the batch trainer saw the target"
        assert all(x.ts <= now for x in self.trainer._events)
        self.asked.append(e.event_id)
        return self.inner.rank(user_id, k, now)

    def refit(self, now):
        self.inner.refit(now)


def test_no_model_sees_the_target_before_it_is_asked():
    events = small_log(300)
    world = World(CATALOG)
    trainer = BatchTrainer(world, ALS)
    spies = {n: Spy(m, trainer) for n, m in build_models(MODEL_NAMES, world, trainer).items()}

    def on_ask(name, event):
        spies[name].target = event

    protocol = Protocol(k=5, warmup=0.3, refit_every_s=6 * 3600.0)
    result = prequential(Dataset("log", events, CATALOG), spies, trainer, protocol, on_ask=on_ask)
    n_targets = result["models"]["strata"]["targets"]
    assert n_targets > 20
    for name, spy in spies.items():
        assert len(spy.asked) == n_targets == result["models"][name]["targets"]
        assert spy.learned == [e.event_id for e in events]  # every event, once, in time order
        # and each target was learned right after it was asked
        for eid in spy.asked:
            assert eid in spy.learned


def test_hand_computed_results():
    """u1 saw A; u2 saw A then B; then u1 buys B: pop and repeat both rank B second."""
    cat = Catalog({"A": "c", "B": "c"}, {"c": None})
    events = [
        Event("1", "u1", "A", "view", T0, "c"),
        Event("2", "u2", "A", "view", T0 + 1, "c"),
        Event("3", "u2", "B", "view", T0 + 2, "c"),
        Event("4", "u1", "B", "purchase", T0 + 10, "c"),  # the only target after the warm-up (t ≥ T0 + 5)
        Event("5", "u3", "A", "purchase", T0 + 11, "c"),  # a user without history: not a target
    ]
    result = evaluate(Dataset("hand", events, cat), ["pop", "repeat"], Protocol(k=2, warmup=5 / 11, exclude="none"))
    for name in ("pop", "repeat"):
        m = result["models"][name]
        assert m["targets"] == 1
        assert m["hr"] == 1.0
        assert m["ndcg"] == pytest.approx(1 / math.log2(3))
        assert m["mrr"] == pytest.approx(0.5)
        assert m["coverage"] == pytest.approx(1.0)  # A and B of 2 items
    one = evaluate(Dataset("hand", events, cat), ["pop"], Protocol(k=1, warmup=5 / 11, exclude="none"))["models"]["pop"]
    assert (one["hr"], one["ndcg"], one["coverage"]) == (0.0, 0.0, 0.5)
    # the default filter leaves out the item in view (u1's A), so B comes first for both
    default = evaluate(Dataset("hand", events, cat), ["pop", "repeat"], Protocol(k=1, warmup=5 / 11))
    assert [m["ndcg"] for m in default["models"].values()] == [1.0, 1.0]


def test_next_new_targets_skip_the_item_in_view():
    """The default targets: events of a user with history whose item differs from their previous item."""
    cat = Catalog({"A": "c", "B": "c"}, {"c": None})
    events = [
        Event("1", "u1", "A", "view", T0, "c"),
        Event("2", "u1", "A", "cart", T0 + 6, "c"),      # the item in view again: never a target
        Event("3", "u1", "B", "view", T0 + 7, "c"),      # new: a target
        Event("4", "u1", "A", "purchase", T0 + 8, "c"),  # back to A after B: a target
        Event("5", "u2", "B", "view", T0 + 10, "c"),     # no history: not a target
    ]
    assert evaluate(Dataset("h", events, cat), ["pop"], Protocol(k=1, warmup=0.5))["models"]["pop"]["targets"] == 2
    every = Protocol(k=1, warmup=0.5, next_new=False)
    assert evaluate(Dataset("h", events, cat), ["pop"], every)["models"]["pop"]["targets"] == 3
    carts = Protocol(k=1, warmup=0.5, next_new=False, targets=("cart", "purchase"))
    assert evaluate(Dataset("h", events, cat), ["pop"], carts)["models"]["pop"]["targets"] == 2


def test_warmup_cuts_time_not_events():
    """30 % of the time span: nine events in the first second and one an hour later leave one target."""
    cat = Catalog({f"I{n}": "c" for n in range(10)}, {"c": None})
    events = [Event(str(n), "u1", f"I{n}", "view", T0 + n * 0.1, "c") for n in range(9)]
    events.append(Event("9", "u1", "I9", "view", T0 + 3600, "c"))
    assert evaluate(Dataset("h", events, cat), ["pop"], Protocol(k=1))["models"]["pop"]["targets"] == 1
    assert evaluate(Dataset("h", events, cat), ["pop"], Protocol(k=1, cut="events"))["models"]["pop"]["targets"] == 7


def test_candidate_filter_applies_to_every_model():
    cat = Catalog({"A": "c", "B": "c"}, {"c": None})
    events = [
        Event("1", "u1", "A", "purchase", T0, "c"),
        Event("2", "u2", "A", "view", T0 + 1, "c"),
        Event("3", "u2", "B", "view", T0 + 2, "c"),
        Event("4", "u1", "B", "purchase", T0 + 10, "c"),
    ]
    for exclude in ("purchased", "seen"):
        r = evaluate(Dataset("hand", events, cat), ["pop", "repeat"], Protocol(k=1, warmup=0.5, exclude=exclude))
        for m in r["models"].values():
            assert m["ndcg"] == 1.0  # A is filtered, B comes first


def test_result_shape_and_layer_ablations():
    events = small_log(300)
    result = evaluate(Dataset("log", events, CATALOG), MODEL_NAMES, Protocol(k=5, warmup=0.5), als_params=ALS)
    assert set(result) >= {"dataset", "protocol", "k", "models"}
    for name, m in result["models"].items():
        assert set(m) >= {"hr", "ndcg", "mrr", "coverage", "targets", "events_per_s"}
        assert 0 <= m["mrr"] <= m["ndcg"] <= m["hr"] <= 1
        assert sum(b["targets"] for b in m["timeline"]) == m["targets"]
    assert result["models"]["strata-item"]["params"]["layers"] == ["item"]
    assert result["models"]["strata"]["params"]["updates"] > 0  # the term weights learned online
    vs = result["models"]["strata"]["vs_best_baseline"]
    best = max((n for n in result["models"] if not n.startswith("strata")), key=lambda n: result["models"][n]["ndcg"])
    assert vs["model"] == best and vs["targets"] == result["models"]["strata"]["targets"]
    assert vs["delta"] == pytest.approx(result["models"]["strata"]["ndcg"] - result["models"][best]["ndcg"])
    assert vs["ci95"][0] <= vs["delta"] <= vs["ci95"][1]
    assert "vs_best_baseline" not in result["models"][best]
    assert "paired bootstrap" in format_table(result)
    shop = result["models"]["strata-fixed"]["params"]["shop_rates"]  # what the run taught, for the docs
    assert 0 < shop["chances"] < len(events) and 0 < shop["revisit_rate"] < 1
    assert list(shop["domain_share"]) == ["1", "2-3", "4-7", "8-15", "16+"]
    assert all(0 < mu < 1 for mu in shop["domain_share"].values())
    json.dumps(result)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k must be"),
        ({"targets": ("buy",)}, "targets must be"),
        ({"warmup": 1.0}, "warmup"),
        ({"warmup": 0.6, "until": 0.5}, "until"),
        ({"exclude": "some"}, "exclude"),
        ({"cut": "rows"}, "cut"),
        ({"refit_every_s": 0.0}, "refit_every_s"),
    ],
)
def test_protocol_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Protocol(**kwargs)


def test_rank_params_round_trip():
    rp = parse_rank_params("item_own_weight=3,base_weights=0.6/0.2/0.2,popular_pool=100,repeat_prior=0.25")
    assert rp.repeat_prior == 0.25
    assert parse_rank_params("repeat_prior=none", rp).repeat_prior is None
    assert rp.item_own_weight == 3.0 and rp.popular_pool == 100
    assert rp.base_weights == pytest.approx((0.6, 0.2, 0.2))
    assert parse_rank_params(format_rank_params(rp)) == rp
    assert format_rank_params(RankParams()) == ""
    for bad in ("nonsense=1", "item_own_weight", "item_own_weight=x"):
        with pytest.raises(ValueError):
            parse_rank_params(bad)


# -- the command line ------------------------------------------------------------------
def run_cli(capsys, *args):
    from strata.streams.cli import main

    try:
        code = main(["evaluate", *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--events", "/nope/missing.csv", "--format", "taobao"], "missing.csv"),
        (["--events", "x", "--format", "excel"], "invalid choice"),
        (["--events", "x", "--format", "synthetic", "--models", "strata,svd"], "unknown model(s) svd"),
        (["--events", "x", "--format", "synthetic", "--targets", "cart,buy"], "targets must be"),
        (["--events", "x", "--format", "synthetic", "--warmup", "1.5"], "between 0 and 1"),
        (["--events", "x", "--format", "synthetic", "--k", "0"], "at least 1"),
        (["--events", "x", "--format", "synthetic", "--refit-every", "soon"], "refit-every"),
        (["--events", "x", "--format", "synthetic", "--rank-params", "bogus=1"], "bad rank parameter"),
        (["--events", "x", "--format", "synthetic", "--tune", "--warmup", "0.3"], "--warmup must be"),
        (["--events", "x", "--format", "synthetic", "--exclude-seen", "--exclude-purchased"], "exclude each other"),
        (["--events", "x", "--format", "synthetic", "--tune", "--tune-knobs", "warp_speed"], "--tune-knobs takes"),
        (["--events", "x", "--format", "synthetic", "--tune", "--tune-sample", "0"], "--tune-sample must be"),
        (["--events", "x", "--format", "synthetic", "--target-sample", "0"], "target_sample must be"),
    ],
)
def test_cli_bad_arguments_exit_2_with_a_message(capsys, args, message):
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_cli_end_to_end(capsys, tmp_path):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    code, out, err = run_cli(
        capsys, "--events", "users=40,items=120,events=1500", "--format", "synthetic",
        "--models", "strata,pop,repeat,cooc", "--factors", "4", "--iterations", "2",
        "--json", str(out_json), "--plot", str(out_png), "--no-progress",
    )
    assert code == 0, err
    assert "NDCG@10" in out and "strata" in out
    result = json.loads(out_json.read_text())
    assert set(result["models"]) == {"strata", "pop", "repeat", "cooc"}
    assert result["protocol"]["candidate_filter"] == "in-view"
    assert result["protocol"]["next_new"] is True
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_tuning_never_looks_at_the_second_half():
    from strata.models.evaluation.prequential import tune

    events = small_log(300)
    mid = events[0].ts + (events[-1].ts - events[0].ts) / 2
    # a different second half: every later event goes to another item
    other = [e if e.ts <= mid else e._replace(item_id="i39" if e.item_id != "i39" else "i0") for e in events]
    grid = {"item_own_weight": (1.0, 100.0), "recency_rank": (True, False)}
    kw = dict(grid=grid, als_params=ALS)
    a = tune(Dataset("a", events, CATALOG), Protocol(k=5), **kw)
    b = tune(Dataset("b", other, CATALOG), Protocol(k=5), **kw)
    assert a == b
    assert [t["knob"] for t in a[1]] == ["item_own_weight", "recency_rank"]
