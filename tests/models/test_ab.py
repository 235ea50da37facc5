"""A/B variants: parsing, sticky assignment, θ per variant, and the report's statistics."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from strata.models.ab import (
    SRM_P, UserTotals, Variant, assign, format_report, parse_variants, report, sample_ratio, variant_theta,
)
from strata.models.learned import LAYER_TERMS
from strata.models.terms import TERMS, theta0

USERS = [f"u{n}" for n in range(10_000)]


def parse(text: str) -> tuple[Variant, ...]:
    return parse_variants(text, TERMS, LAYER_TERMS)


# --- parse_variants ---------------------------------------------------------------------------

def test_parse_the_example():
    assert parse("control=;fresh=rec_0:2.0,share:2;frozen=learning:off") == (
        Variant("control"),
        Variant("fresh", share=2.0, scale=(("rec_0", 2.0),)),
        Variant("frozen", learning=False),
    )


@pytest.mark.parametrize("text", ["", "   ", ";", " ; "])
def test_parse_blank_is_one_control(text):
    assert parse(text) == (Variant("control"),)


def test_parse_layers_spaces_and_bare_names():
    assert parse(" a ; b = overall : 0 , learning : on ; c=item:0.5,share:0.25,") == (
        Variant("a"), Variant("b", scale=(("overall", 0.0),)), Variant("c", share=0.25, scale=(("item", 0.5),)),
    )


@pytest.mark.parametrize("text, message", [
    ("a=;b=bogus:1", r"variant 'b'.*unknown setting 'bogus'.*known: share, learning, item, domain, overall, own"),
    ("a=;b=rec_0:abc", r"variant 'b'.*rec_0.*'abc' is not a number"),
    ("a=;b=rec_0:nan", r"variant 'b'.*rec_0:nan must be a finite number ≥ 0"),
    ("a=;b=share:inf", r"variant 'b'.*share:inf must be a finite number > 0"),
    ("a=;b=share:0", r"variant 'b'.*share:0 must be a finite number > 0"),
    ("a=;b=share:-1", r"variant 'b'.*share:-1 must be a finite number > 0"),
    ("a=;b=pop:-0.5", r"variant 'b'.*pop:-0.5 must be a finite number ≥ 0"),
    ("a=;b=learning:maybe", r"variant 'b'.*learning:'maybe' must be on or off"),
    ("a=;b=pop", r"variant 'b'.*setting 'pop' is not key:value"),
    ("a=;b=pop:1,pop:2", r"variant 'b'.*'pop' is set twice"),
    ("a=;b=;a=pop:1", r"variant 'a'.*used 2 times"),
    ("a=;b c=", r"variant 'b c'.*1-32 characters"),
    ("a=;" + "x" * 33 + "=", r"variant 'x{33}'.*1-32 characters"),
    ("a=;=pop:1", r"variant ''.*1-32 characters"),
])
def test_parse_errors_name_the_variant_and_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)


names = st.text("abcXYZ019_-", min_size=1, max_size=32)
settings_ = st.fixed_dictionaries({
    "share": st.floats(0.01, 100), "learning": st.booleans(),
    "scale": st.dictionaries(st.sampled_from(TERMS + ("overall",)), st.floats(0, 10), max_size=4),
})


@given(st.dictionaries(names, settings_, min_size=1, max_size=5))
def test_parse_reads_back_what_is_written(spec):
    text = ";".join(
        f"{name}=share:{s['share']!r},learning:{'on' if s['learning'] else 'off'}"
        + "".join(f",{k}:{f!r}" for k, f in s["scale"].items())
        for name, s in spec.items())
    assert parse(text) == tuple(
        Variant(name, s["share"], s["learning"], tuple(s["scale"].items())) for name, s in spec.items())


# --- assign -----------------------------------------------------------------------------------

@given(st.text(max_size=40), st.lists(st.floats(0.01, 10), min_size=1, max_size=6))
def test_assign_is_sticky_and_picks_a_variant(user, shares):
    variants = tuple(Variant(f"v{n}", s) for n, s in enumerate(shares))
    first = assign(user, variants)
    assert first in variants
    assert assign(user, variants) is first
    assert assign(user, variants, "other") in variants


@pytest.mark.parametrize("shares", [(1.0, 1.0), (1.0, 3.0), (2.0, 1.0, 1.0)])
def test_split_follows_the_shares_within_three_sd(shares):
    variants = tuple(Variant(f"v{n}", s) for n, s in enumerate(shares))
    counts = {v.name: 0 for v in variants}
    for user in USERS:
        counts[assign(user, variants).name] += 1
    for v in variants:
        p = v.share / sum(shares)
        sd = math.sqrt(len(USERS) * p * (1 - p))
        assert abs(counts[v.name] - len(USERS) * p) <= 3 * sd, (v.name, counts)


def test_another_experiment_reshuffles():
    variants = (Variant("a"), Variant("b"))
    moved = sum(assign(u, variants) != assign(u, variants, "another") for u in USERS[:2000])
    assert 800 < moved < 1200  # independent halves: about half the users change arm


def test_one_variant_needs_no_hash_and_none_is_an_error():
    assert assign("anyone", (Variant("only"),)).name == "only"
    with pytest.raises(ValueError):
        assign("anyone", ())


def assigned_totals(variants, users=USERS, experiment="strata-ab"):
    per_user: dict[str, dict[str, UserTotals]] = {v.name: {} for v in variants}
    for u in users:
        per_user[assign(u, variants, experiment).name][u] = UserTotals(impressions=1)
    return per_user


def test_report_of_a_fair_split_passes_the_sample_ratio_check():
    variants = (Variant("a"), Variant("b"))
    srm = report(assigned_totals(variants), variants)["srm"]
    assert srm["ok"] and srm["p"] >= SRM_P and srm["dof"] == 1
    assert sum(srm["observed"].values()) == len(USERS)
    assert srm["expected"] == {"a": 5000.0, "b": 5000.0}


def test_report_of_a_1_to_3_split_passes_the_sample_ratio_check():
    variants = (Variant("a"), Variant("b", share=3))
    srm = report(assigned_totals(variants), variants)["srm"]
    assert srm["ok"] and srm["expected"] == {"a": 2500.0, "b": 7500.0}


def test_losing_a_tenth_of_one_arm_is_a_sample_ratio_mismatch():
    variants = (Variant("a"), Variant("b"))
    per_user = assigned_totals(variants)
    b = sorted(per_user["b"])
    per_user["b"] = {u: per_user["b"][u] for u in b[: int(len(b) * 0.9)]}
    rep = report(per_user, variants)
    assert not rep["srm"]["ok"] and rep["srm"]["p"] < SRM_P
    assert "sample ratio MISMATCH" in format_report(rep)


def test_sample_ratio_of_one_variant_or_no_users():
    one = sample_ratio({"a": 123}, [Variant("a")])
    assert (one["chi2"], one["dof"], one["p"], one["ok"]) == (0.0, 0, 1.0, True)
    none = sample_ratio({}, [Variant("a"), Variant("b")])
    assert (none["chi2"], none["p"], none["ok"]) == (0.0, 1.0, True)


# --- variant_theta ----------------------------------------------------------------------------

def test_learning_off_ranks_with_the_prior():
    learned, prior = np.arange(len(TERMS), dtype=float), theta0()
    theta = variant_theta(Variant("frozen", learning=False), learned, prior, TERMS, LAYER_TERMS)
    np.testing.assert_array_equal(theta, prior)
    assert theta is not prior


def test_layer_and_term_factors_multiply_and_inputs_stay():
    learned, prior = np.arange(1, len(TERMS) + 1, dtype=float), theta0()
    kept_learned, kept_prior = learned.copy(), prior.copy()
    v = Variant("x", scale=(("item", 2.0), ("rec_0", 3.0), ("pop", 0.0)))
    theta = variant_theta(v, learned, prior, TERMS, LAYER_TERMS)
    expected = learned.copy()
    for n, t in enumerate(TERMS):
        expected[n] *= (2.0 if t in LAYER_TERMS["item"] else 1.0) * (3.0 if t == "rec_0" else 1.0) * (
            0.0 if t == "pop" else 1.0)
    np.testing.assert_array_equal(theta, expected)
    assert theta[TERMS.index("rec_0")] == 6.0 * learned[TERMS.index("rec_0")]
    np.testing.assert_array_equal(learned, kept_learned)
    np.testing.assert_array_equal(prior, kept_prior)


def test_a_name_that_is_a_layer_and_a_term_scales_the_layer():
    v = parse("d=domain:0")[0]
    theta = variant_theta(v, np.ones(len(TERMS)), theta0(), TERMS, LAYER_TERMS)
    assert [t for t, x in zip(TERMS, theta) if x == 0] == list(LAYER_TERMS["domain"])


@given(st.dictionaries(st.sampled_from(TERMS + tuple(LAYER_TERMS)), st.floats(0, 10), max_size=6))
def test_theta_is_learned_times_the_product_of_factors(scale):
    learned = np.linspace(-1, 1, len(TERMS))
    theta = variant_theta(Variant("x", scale=tuple(scale.items())), learned, theta0(), TERMS, LAYER_TERMS)
    for n, t in enumerate(TERMS):
        factor = math.prod(f for k, f in scale.items() if k == t or t in LAYER_TERMS.get(k, ()))
        assert theta[n] == pytest.approx(learned[n] * factor)


def test_theta_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError):
        variant_theta(Variant("x"), np.ones(3), np.ones(3), TERMS, LAYER_TERMS)


# --- report -----------------------------------------------------------------------------------

def delta_variance(a: list[float], n: list[float]) -> float:
    """Var(Σa/Σn) by the formula of Deng et al. 2018, written out with the statistics module."""
    r = sum(a) / sum(n)
    return statistics.variance([ai - r * ni for ai, ni in zip(a, n)]) / (len(n) * statistics.fmean(n) ** 2)


def test_delta_method_by_hand():
    control = {"c1": UserTotals(4, {"click": 1}), "c2": UserTotals(2, {}), "c3": UserTotals(5, {"click": 2}),
               "c0": UserTotals(0, {})}
    treatment = {"t1": UserTotals(3, {"click": 2, "cart": 1}, 9.0), "t2": UserTotals(4, {"click": 1}),
                 "t3": UserTotals(6, {"click": 3, "purchase": 1}, 21.0)}
    rep = report({"c": control, "t": treatment}, [Variant("c"), Variant("t")], level=0.9)
    c, t = rep["variants"]
    assert (c["users"], c["impressions"], t["users"], t["impressions"]) == (4, 11, 3, 13)
    assert c["rates"] == {"click": 3 / 11, "cart": 0.0, "purchase": 0.0}
    assert t["rates"]["click"] == pytest.approx(6 / 13)
    assert t["revenue_per_impression"] == pytest.approx(30 / 13) and c["revenue_per_impression"] == 0.0
    assert "diff" not in c and rep["control"] == "c" and rep["level"] == 0.9

    var_c = delta_variance([1, 0, 2], [4, 2, 5])
    var_t = delta_variance([2, 1, 3], [3, 4, 6])
    z = 1.6448536269514722  # Φ⁻¹(0.95)
    d = t["diff"]["click"]
    assert d["diff"] == pytest.approx(6 / 13 - 3 / 11)
    assert d["low"] == pytest.approx(6 / 13 - 3 / 11 - z * math.sqrt(var_c + var_t))
    assert d["high"] == pytest.approx(6 / 13 - 3 / 11 + z * math.sqrt(var_c + var_t))
    assert d["relative"] == pytest.approx((6 / 13 - 3 / 11) / (3 / 11))
    assert t["diff"]["cart"]["relative"] is None  # the control's cart rate is 0


def test_too_few_users_give_rates_without_intervals():
    rep = report({"c": {"1": UserTotals(5, {"click": 1}), "2": UserTotals(5, {})},
                  "t": {"3": UserTotals(4, {"click": 2}), "4": UserTotals(0, {})}},
                 [Variant("c"), Variant("t"), Variant("empty")])
    t, empty = rep["variants"][1:]
    assert t["rates"]["click"] == 0.5
    assert t["diff"]["click"] == {"diff": 0.4, "low": None, "high": None, "relative": pytest.approx(4.0)}
    assert empty["users"] == 0 and empty["rates"]["click"] is None
    assert empty["diff"]["click"]["diff"] is None and empty["revenue_per_impression"] is None
    format_report(rep)


def simulate(rng: np.random.Generator, users: int, click_p: float, prefix: str) -> dict[str, UserTotals]:
    impressions = rng.poisson(8, users) + 1
    clicks = rng.binomial(impressions, click_p * rng.uniform(0.5, 1.5, users))
    return {f"{prefix}{n}": UserTotals(int(i), {"click": int(c)}) for n, (i, c) in enumerate(zip(impressions, clicks))}


def test_a_clearly_better_treatment_has_an_interval_above_zero():
    rng = np.random.default_rng(7)
    rep = report({"c": simulate(rng, 2000, 0.05, "c"), "t": simulate(rng, 2000, 0.065, "t")},
                 [Variant("c"), Variant("t")])
    d = rep["variants"][1]["diff"]["click"]
    assert 0 < d["low"] < d["diff"] < d["high"]
    assert d["low"] < 0.015 < d["high"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_identical_arms_have_an_interval_around_zero(seed):
    rng = np.random.default_rng(seed)
    rep = report({"c": simulate(rng, 2000, 0.05, "c"), "t": simulate(rng, 2000, 0.05, "t")},
                 [Variant("c"), Variant("t")])
    d = rep["variants"][1]["diff"]["click"]
    assert d["low"] < 0 < d["high"]


def test_intervals_cover_about_the_level_in_aa_tests():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(200):
        rep = report({"c": simulate(rng, 200, 0.05, "c"), "t": simulate(rng, 200, 0.05, "t")},
                     [Variant("c"), Variant("t")], level=0.9)
        d = rep["variants"][1]["diff"]["click"]
        covered += d["low"] <= 0 <= d["high"]
    assert 0.84 <= covered / 200 <= 0.96


def test_report_refuses_a_bad_level_or_no_variants():
    with pytest.raises(ValueError):
        report({}, [Variant("c")], level=1.0)
    with pytest.raises(ValueError):
        report({}, [])


def test_report_is_json_able():
    import json
    rng = np.random.default_rng(0)
    rep = report({"c": simulate(rng, 50, 0.05, "c"), "t": simulate(rng, 50, 0.05, "t")},
                 [Variant("c"), Variant("t")])
    assert json.loads(json.dumps(rep)) == rep


# --- format_report ----------------------------------------------------------------------------

def test_format_report_has_every_variant_and_the_sample_ratio_line():
    rng = np.random.default_rng(5)
    variants = [Variant("control"), Variant("fresh"), Variant("frozen", learning=False)]
    rep = report({v.name: simulate(rng, 300, 0.05, v.name) for v in variants}, variants)
    text = format_report(rep)
    lines = text.splitlines()
    for v in variants:
        assert any(line.startswith(v.name) for line in lines)
    assert lines[-1].startswith("sample ratio: ok, χ² ") and ", p " in lines[-1]
    fresh = next(line for line in lines if line.startswith("fresh"))
    d = rep["variants"][1]["diff"]["click"]
    assert f"{d['diff']:+.4f} ({d['low']:+.4f} … {d['high']:+.4f})" in fresh
    assert " … " not in next(line for line in lines if line.startswith("control"))
