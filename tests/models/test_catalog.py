"""Catalog look-ups: domain and overall keys, and the remembered roots of a live catalog."""
from __future__ import annotations

from collections import UserDict

from strata.models.catalog import ROOT_UNKNOWN, Catalog


class LiveParents(UserDict):
    """A parent mapping that counts its changes, as the worker's catalog table views do."""

    def __init__(self, data):
        super().__init__(data)
        self.changes = 0
        self.reads = 0

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.changes = getattr(self, "changes", 0) + 1

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)


def test_layers_walk_to_the_root():
    catalog = Catalog({"i1": "shoes"}, {"shoes": "fashion", "fashion": None})
    assert catalog.layers_for("i1", None) == ("shoes", "fashion")
    assert catalog.layers_for("i9", "shoes") == ("shoes", "fashion")
    assert catalog.layers_for("i9", "unknown") == ("unknown", ROOT_UNKNOWN)
    assert catalog.layers_for("i9", None) == (None, ROOT_UNKNOWN)


def test_a_live_catalog_walks_each_category_once_until_it_changes():
    parents = LiveParents({"shoes": "fashion", "fashion": None})
    catalog = Catalog({}, parents)
    assert [catalog.root_of("shoes") for _ in range(5)] == ["fashion"] * 5
    assert parents.reads == 2  # shoes → fashion → None, once
    parents["fashion"] = "everything"  # the tree changed under the catalog
    parents["everything"] = None
    assert catalog.root_of("shoes") == "everything"


def test_a_plain_mapping_is_walked_every_time():
    parents = {"shoes": "fashion", "fashion": None}
    catalog = Catalog({}, parents)
    assert catalog.root_of("shoes") == "fashion"
    parents["fashion"] = "everything"
    parents["everything"] = None
    assert catalog.root_of("shoes") == "everything"
