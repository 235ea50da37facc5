"""Item → category → root: which domain and overall key an event belongs to.

A category is part of a tree only when the catalog holds a record for it
(`parent_id` None marks a root).  Categories without a record, and items
without a category, fall under the single overall key `*` (docs/design.md §2).
"""
from __future__ import annotations

from typing import Mapping, MutableMapping

ROOT_UNKNOWN = "*"
MAX_DEPTH = 32
ROOTS_REMEMBERED = 100_000
_MISSING = object()


class Catalog:
    """Look-ups over two mappings; they may be plain dicts or live tables."""

    def __init__(
        self,
        item_category: Mapping[str, str] | None = None,
        category_parent: Mapping[str, str | None] | None = None,
    ) -> None:
        self.item_category: Mapping[str, str] = item_category if item_category is not None else {}
        self.category_parent: Mapping[str, str | None] = category_parent if category_parent is not None else {}
        self._roots: dict[str, str] = {}  # see root_of
        self._roots_at: int | None = None

    @classmethod
    def from_records(cls, records) -> "Catalog":
        catalog = cls({}, {})
        for record in records:
            catalog.add(record)
        return catalog

    def add(self, record: Mapping) -> None:
        """Take one catalog record: `{"item_id", "category_id"}` or `{"category_id", "parent_id"}`."""
        kind, key, value = parse_record(record)
        target = self.item_category if kind == "item" else self.category_parent
        assert isinstance(target, MutableMapping)
        target[key] = value

    def category_of(self, item_id: str) -> str | None:
        return self.item_category.get(item_id)

    def root_of(self, category_id: str) -> str:
        """The root of `category_id`'s tree (`*` for a category the catalog does not hold).

        Remembered per category when the parent mapping says when it changes (a `changes`
        counter, as the worker's live table views have): every event asks, and walking the tree
        is a look-up per level.  Plain mappings are walked every time.
        """
        parents = self.category_parent
        changes = getattr(parents, "changes", None)
        if changes is None:
            return self._walk(category_id)
        if changes != self._roots_at:
            self._roots, self._roots_at = {}, changes
        root = self._roots.get(category_id)
        if root is None:
            if len(self._roots) >= ROOTS_REMEMBERED:  # events may name categories nobody has
                self._roots = {}
            root = self._roots[category_id] = self._walk(category_id)
        return root

    def _walk(self, category_id: str) -> str:
        node = category_id
        for _ in range(MAX_DEPTH):
            parent = self.category_parent.get(node, _MISSING)
            if parent is _MISSING:
                return ROOT_UNKNOWN if node == category_id else node
            if parent is None:
                return node
            node = parent
        return node  # a cycle or a very deep tree: stop where we are

    def layers_for(self, item_id: str, category_id: str | None) -> tuple[str | None, str]:
        """(domain key, overall key) for an event on `item_id`."""
        domain = category_id if category_id is not None else self.category_of(item_id)
        if domain is None:
            return None, ROOT_UNKNOWN
        return domain, self.root_of(domain)


class InvalidCatalogRecord(ValueError):
    pass


def parse_record(record: Mapping) -> tuple[str, str, str | None]:
    """('item', item_id, category_id) or ('category', category_id, parent_id)."""
    if not isinstance(record, Mapping):
        raise InvalidCatalogRecord(f"a catalog record must be an object, got {type(record).__name__}")

    def text(name: str, optional: bool = False) -> str | None:
        value = record.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not 1 <= len(str(value)) <= 128:
            raise InvalidCatalogRecord(f"'{name}' must be a 1-128 character id, got {value!r:.40}")
        return str(value)

    if "item_id" in record:
        return "item", text("item_id"), text("category_id")  # type: ignore[return-value]
    if "category_id" in record:
        return "category", text("category_id"), text("parent_id", optional=True)  # type: ignore[return-value]
    raise InvalidCatalogRecord("a catalog record needs 'item_id' or 'category_id'")
