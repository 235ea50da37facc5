"""A/B variants of the ranker and the statistics of their comparison.

A variant ranks with its own θ: the shop's learned θ, or the prior θ₀ frozen
(`learning` off), with factors multiplied into terms or whole layers.  Users are
assigned by a hash of the experiment name and the user id, so a user keeps
their variant on every worker and across restarts.

An outcome's rate is R = Σ_i a_i / Σ_i n_i over a variant's users, a_i the
user's attributed events of that outcome and n_i their impressions.  The user
is the unit of randomisation, so R is a ratio of two per-user means and its
variance comes from the delta method (Deng, Knoblich & Lu 2018):

    Var(R) ≈ Var_i(a_i − R·n_i) / (N · n̄²)

over the N users with impressions.  A difference to the control has the
interval (R_v − R_c) ± z·√(Var_v + Var_c).  The sample-ratio check is a χ²
goodness of fit of the users per variant against the configured shares; a
mismatch (p < `SRM_P`) means the assignment or the logging is broken and the
differences are not to be trusted (Fabijan et al. 2019).
"""
from __future__ import annotations

import hashlib
import math
import re
from statistics import NormalDist
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

EXPERIMENT = "strata-ab"
OUTCOMES = ("click", "cart", "purchase")
SRM_P = 0.001
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class Variant:
    """One arm: its relative `share` of users, whether θ learns, and factors on θ by term or layer."""

    name: str
    share: float = 1.0
    learning: bool = True
    scale: tuple[tuple[str, float], ...] = ()


def _number(variant: str, key: str, value: str, positive: bool) -> float:
    """`value` as a finite number, > 0 when `positive`, else ≥ 0."""
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"variant {variant!r}: {key}:{value!r} is not a number") from None
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        bound = "> 0" if positive else "≥ 0"
        raise ValueError(f"variant {variant!r}: {key}:{value} must be a finite number {bound}")
    return x


def _parse_one(part: str, terms: Sequence[str], layers: Mapping[str, Sequence[str]]) -> Variant:
    name, _, settings = (s.strip() for s in part.partition("="))
    if not _NAME.fullmatch(name):
        raise ValueError(f"variant {name!r}: a name is 1-32 characters of A-Z a-z 0-9 _ - (in {part.strip()!r})")
    share, learning, scale, seen = 1.0, True, [], set()
    for item in filter(None, (s.strip() for s in settings.split(","))):
        key, sep, value = (s.strip() for s in item.partition(":"))
        if not sep:
            raise ValueError(f"variant {name!r}: setting {item!r} is not key:value")
        if key in seen:
            raise ValueError(f"variant {name!r}: {key!r} is set twice")
        seen.add(key)
        if key == "share":
            share = _number(name, key, value, positive=True)
        elif key == "learning":
            if value not in ("on", "off"):
                raise ValueError(f"variant {name!r}: learning:{value!r} must be on or off")
            learning = value == "on"
        elif key in layers or key in terms:
            scale.append((key, _number(name, key, value, positive=False)))
        else:
            known = ", ".join(["share", "learning", *layers, *(t for t in terms if t not in layers)])
            raise ValueError(f"variant {name!r}: unknown setting {key!r}; known: {known}")
    return Variant(name, share, learning, tuple(scale))


def parse_variants(text: str, terms: Sequence[str], layers: Mapping[str, Sequence[str]]) -> tuple[Variant, ...]:
    """The variants of STRATA_VARIANTS: ';' between variants, '=' after a name, ',' between
    settings, ':' between a setting's key and value.  Keys are `share` (> 0), `learning` (on|off)
    and any layer or term name (a factor ≥ 0 on θ; a name that is both names the layer).  Blank
    text is one variant, the control; the first variant is always the control.

    >>> parse_variants("control=;fresh=rec_0:2.0,share:2;frozen=learning:off", ["rec_0", "pop"], {"overall": ["pop"]})
    ... # doctest: +NORMALIZE_WHITESPACE
    (Variant(name='control', share=1.0, learning=True, scale=()),
     Variant(name='fresh', share=2.0, learning=True, scale=(('rec_0', 2.0),)),
     Variant(name='frozen', share=1.0, learning=False, scale=()))
    >>> parse_variants(" ", [], {})
    (Variant(name='control', share=1.0, learning=True, scale=()),)
    """
    parts = [p for p in text.split(";") if p.strip()]
    if not parts:
        return (Variant("control"),)
    variants = tuple(_parse_one(p, terms, layers) for p in parts)
    names = [v.name for v in variants]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"variant {name!r}: the name is used {names.count(name)} times")
    return variants


def assign(user_id: str, variants: Sequence[Variant], experiment: str = EXPERIMENT) -> Variant:
    """The user's variant: u = the first 8 bytes (big-endian) of blake2b(experiment NUL user_id)
    over 2⁶⁴, uniform in [0, 1), falls in one variant's part of the cumulative shares.

    >>> vs = (Variant("a"), Variant("b", share=3.0))
    >>> assign("u1", vs) == assign("u1", vs)
    True
    >>> assign("anyone", vs[:1]).name
    'a'
    """
    if not variants:
        raise ValueError("no variants to assign to")
    if len(variants) == 1:
        return variants[0]
    digest = hashlib.blake2b(f"{experiment}\0{user_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    cut = u * sum(v.share for v in variants)
    total = 0.0
    for v in variants:
        total += v.share
        if cut < total:
            return v
    return variants[-1]


def variant_theta(variant: Variant, learned: np.ndarray, prior: np.ndarray, terms: Sequence[str],
                  layers: Mapping[str, Sequence[str]]) -> np.ndarray:
    """θ the variant ranks with: a copy of `learned` (of `prior` when learning is off), each term
    multiplied by its layer's factor and its own.

    >>> v = Variant("x", scale=(("item", 2.0), ("a", 3.0)))
    >>> variant_theta(v, np.array([1.0, 1.0, 1.0]), np.zeros(3), ["a", "b", "c"], {"item": ["a", "b"]})
    array([6., 2., 1.])
    """
    theta = np.array(learned if variant.learning else prior, dtype=np.float64, copy=True)
    if theta.shape != (len(terms),):
        raise ValueError(f"θ has shape {theta.shape}, the terms are {len(terms)}")
    index = {t: n for n, t in enumerate(terms)}
    for name, factor in variant.scale:
        names = layers[name] if name in layers else [name]
        for t in names:
            if t not in index:
                raise ValueError(f"variant {variant.name!r}: {t!r} is not a term")
            theta[index[t]] *= factor
    return theta


@dataclass
class UserTotals:
    """One user's impressions, attributed events by type and attributed revenue within a variant."""

    impressions: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    revenue: float = 0.0


def _ratio(a: np.ndarray, n: np.ndarray) -> tuple[float | None, float | None]:
    """R = Σa/Σn and its delta-method variance (None with < 2 users)."""
    if n.sum() == 0:
        return None, None
    r = float(a.sum() / n.sum())
    if n.size < 2:
        return r, None
    return r, float(np.var(a - r * n, ddof=1) / (n.size * n.mean() ** 2))


def _arm(users: Mapping[str, UserTotals]) -> dict:
    active = [u for u in users.values() if u.impressions > 0]
    n = np.array([u.impressions for u in active], dtype=np.float64)
    impressions = int(sum(u.impressions for u in users.values()))
    revenue = sum(u.revenue for u in users.values())
    fits = {o: _ratio(np.array([u.actions.get(o, 0) for u in active], dtype=np.float64), n) for o in OUTCOMES}
    return {"users": len(users), "impressions": impressions,
            "rates": {o: r for o, (r, _) in fits.items()},
            "revenue_per_impression": float(revenue / impressions) if impressions else None,
            "_var": {o: v for o, (_, v) in fits.items()}}


def _diff(arm: dict, control: dict, outcome: str, z: float) -> dict:
    rv, rc = arm["rates"][outcome], control["rates"][outcome]
    vv, vc = arm["_var"][outcome], control["_var"][outcome]
    d = None if rv is None or rc is None else rv - rc
    half = None if vv is None or vc is None else z * math.sqrt(vv + vc)
    return {"diff": d, "low": None if half is None else d - half, "high": None if half is None else d + half,
            "relative": d / rc if d is not None and rc else None}


def sample_ratio(observed: Mapping[str, int], variants: Sequence[Variant]) -> dict:
    """χ² goodness of fit of the users per variant to the shares; `ok` unless p < SRM_P.

    >>> sample_ratio({"a": 5000, "b": 4500}, [Variant("a"), Variant("b")])["ok"]
    False
    """
    obs = np.array([observed.get(v.name, 0) for v in variants], dtype=np.float64)
    shares = np.array([v.share for v in variants])
    expected = obs.sum() * shares / shares.sum()
    chi2, dof, p = 0.0, len(variants) - 1, 1.0
    if dof > 0 and obs.sum() > 0:
        # scipy only here: importing scipy.stats adds ~70 MB to a process, and workers, which
        # assign variants, never run the report
        from scipy.stats import chi2 as chi2_distribution

        chi2 = float(((obs - expected) ** 2 / expected).sum())
        p = float(chi2_distribution.sf(chi2, dof))
    return {"chi2": chi2, "dof": dof, "p": p, "ok": p >= SRM_P,
            "expected": {v.name: float(e) for v, e in zip(variants, expected)},
            "observed": {v.name: int(o) for v, o in zip(variants, obs)}}


def report(per_user: Mapping[str, Mapping[str, UserTotals]], variants: Sequence[Variant],
           level: float = 0.95) -> dict:
    """Rates per variant, their differences to the control (the first variant) with `level`
    intervals, and the sample-ratio check; JSON-able.  Users in `per_user` under a name that is not
    among `variants` are left out; users with no impressions count in the check only.

    >>> vs = [Variant("c"), Variant("t")]
    >>> rep = report({"c": {"1": UserTotals(4, {"click": 1}), "2": UserTotals(6, {"click": 1})},
    ...               "t": {"3": UserTotals(5, {"click": 2}), "4": UserTotals(5, {"click": 2})}}, vs)
    >>> rep["variants"][0]["rates"]["click"], round(rep["variants"][1]["diff"]["click"]["diff"], 3)
    (0.2, 0.2)
    """
    if not variants:
        raise ValueError("no variants to report on")
    if not 0 < level < 1:
        raise ValueError(f"level {level} is not in (0, 1)")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    arms = [_arm(per_user.get(v.name, {})) for v in variants]
    rows = []
    for n, (v, arm) in enumerate(zip(variants, arms)):
        row = {"name": v.name, **{k: arm[k] for k in ("users", "impressions", "rates", "revenue_per_impression")}}
        if n:
            row["diff"] = {o: _diff(arm, arms[0], o, z) for o in OUTCOMES}
        rows.append(row)
    srm = sample_ratio({v.name: a["users"] for v, a in zip(variants, arms)}, variants)
    return {"variants": rows, "srm": srm, "level": level, "control": variants[0].name}


def _cell(row: dict, outcome: str) -> str:
    rate = row["rates"][outcome]
    text = "–" if rate is None else f"{rate:.4f}"
    d = row.get("diff", {}).get(outcome)
    if d and d["diff"] is not None:
        text += f" {d['diff']:+.4f}"
        if d["low"] is not None:
            text += f" ({d['low']:+.4f} … {d['high']:+.4f})"
    return text


def format_report(rep: dict) -> str:
    """A table of the report, one row per variant, then the sample-ratio line."""
    header = ["variant", "users", "impressions", *OUTCOMES, "revenue/impr"]
    table = [header]
    for row in rep["variants"]:
        rpi = row["revenue_per_impression"]
        table.append([row["name"], str(row["users"]), str(row["impressions"]),
                      *(_cell(row, o) for o in OUTCOMES), "–" if rpi is None else f"{rpi:.4f}"])
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    left = {0, *range(3, 3 + len(OUTCOMES))}
    lines = [f"control: {rep['control']}; differences to it with {100 * rep['level']:.3g} % intervals"]
    lines += ["  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
              for r in table]
    srm = rep["srm"]
    stat = f"χ² {srm['chi2']:.2f}, p {srm['p']:.2g}"
    if srm["ok"]:
        lines.append(f"sample ratio: ok, {stat}")
    else:
        counts = ", ".join(f"{k} {srm['observed'][k]} vs {e:.0f}" for k, e in srm["expected"].items())
        lines.append(f"sample ratio MISMATCH: {stat} (users observed vs expected: {counts})")
    return "\n".join(lines)
