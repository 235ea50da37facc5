"""Shoppers who act on served lists by a preference the ranker does not know (docs/design.md §7 "feedback").

Each shopper reads a served list from the top and stops at the first item they act on (the
cascade model of Craswell et al. 2008): position p is looked at with probability γ^p, and an item
looked at is clicked with probability σ(u(j)), the hidden utility

    u(j) = a_cat · [j is in one of the shopper's liked categories]
         − a_seen · [the shopper has touched j before]
         + a_0

so these shoppers want *new* items of the categories they like, and pass over what they have
already seen: the opposite of what a recency list shows.  A click is followed by a cart with
probability `cart_after_click`.  A shopper's liked categories are the `liked` categories they
touched most in their history; everything they act on joins what they have touched.

>>> shop = SimulatedShop({"a": "c1", "b": "c1", "x": "c2"}, [("u", "a")], seed=1)
>>> shop.utility("u", "b") > shop.utility("u", "x") > shop.utility("u", "a")  # new and liked, new, seen
True
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Preference:
    """The hidden preference and the reading behaviour of the simulated shoppers."""

    liked_category: float = 2.0  # a_cat
    seen: float = 3.0  # a_seen
    bias: float = -1.5  # a_0
    look_on: float = 0.85  # γ: the chance of reading one position further
    cart_after_click: float = 0.3
    liked: int = 2  # categories a shopper likes: their most touched ones


class SimulatedShop:
    """What each shopper has touched and likes, and how they act on a list (module doc)."""

    def __init__(self, category_of: Mapping[str, str], history: Iterable[tuple[str, str]], seed: int = 0,
                 preference: Preference | None = None) -> None:
        self.category_of = category_of
        self.preference = preference or Preference()
        self.touched: dict[str, set[str]] = {}
        self._categories: dict[str, Counter] = {}
        self._rng = np.random.default_rng(seed)
        for user, item in history:
            self.observe(user, item)

    def observe(self, user: str, item: str) -> None:
        """The shopper touched `item`."""
        self.touched.setdefault(user, set()).add(item)
        category = self.category_of.get(item)
        if category is not None:
            self._categories.setdefault(user, Counter())[category] += 1

    def liked(self, user: str) -> set[str]:
        counts = self._categories.get(user)
        return {c for c, _ in counts.most_common(self.preference.liked)} if counts else set()

    def utility(self, user: str, item: str) -> float:
        p = self.preference
        liked = self.category_of.get(item) in self.liked(user)
        seen = item in self.touched.get(user, ())
        return p.liked_category * liked - p.seen * seen + p.bias

    def act(self, user: str, items: Sequence[str]) -> tuple[int, list[str]] | None:
        """Where in `items` the shopper acts, and what they do there (["click"] or ["click",
        "cart"]); None when they leave the list untouched.  What they act on counts as touched."""
        p, draw = self.preference, self._rng.random
        for position, item in enumerate(items):
            if position and draw() >= p.look_on:
                return None
            if draw() < 1.0 / (1.0 + math.exp(-self.utility(user, item))):
                actions = ["click", "cart"] if draw() < p.cart_after_click else ["click"]
                self.observe(user, item)
                return position, actions
        return None


__all__ = ["Preference", "SimulatedShop"]
