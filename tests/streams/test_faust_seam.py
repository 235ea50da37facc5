"""The seam to Faust holds: every private name, override and signature of faust, mode, aiokafka and
rocksdict that `strata.streams.batching` relies on (its `RELIES_ON`) is still there in the installed
packages, in the shape the module uses.  No broker: a failure names the symbol that moved, before
the integration suite would meet it as a stalled worker or a silently dead override."""
from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import re
import textwrap
import tomllib
from pathlib import Path

import faust
import pytest
from packaging.requirements import Requirement

from strata.streams import batching
from strata.streams.batching import RELIES_ON, BatchingConsumer, ExternalChangelogGlobalTable, Reliance

ROOT = Path(__file__).resolve().parents[2]


def resolve(dotted: str):
    """The module or class a dotted path names: the longest importable prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


def shown(obj) -> str:
    """A callable's parameters as `inspect.signature` shows them, annotations left out: they change
    with typing clean-ups that do not change what a caller or an override must pass."""
    sig = inspect.signature(obj)
    return str(sig.replace(parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
                           return_annotation=sig.empty))


def sets_on_self(cls: type, name: str) -> bool:
    """Whether a method of `cls` or of a class it extends assigns `self.<name>` (an attribute made
    in `__init__` or later, which the class itself does not have)."""
    for klass in inspect.getmro(cls):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # built in, or no source
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and node.attr == name
                    and isinstance(node.value, ast.Name) and node.value.id == "self"):
                return True
    return False


def problems(entry: Reliance) -> list[str]:
    """What no longer holds of one entry, each line naming the symbol; empty when it all holds."""
    symbol = f"{entry.owner}.{entry.name}"
    try:
        owner = resolve(entry.owner)
    except (ImportError, AttributeError) as exc:
        return [f"{entry.owner}: cannot be imported ({exc}), needed for {entry.name}: {entry.why}"]
    found = []
    present = hasattr(owner, entry.name) or (inspect.isclass(owner) and sets_on_self(owner, entry.name))
    if not present:
        found.append(f"{symbol}: gone (needed: {entry.why})")
    elif entry.signature is not None:
        actual = shown(getattr(owner, entry.name))
        if actual != entry.signature:
            found.append(f"{symbol}: signature changed: {entry.signature} → {actual} (needed: {entry.why})")
    if entry.used_by:
        user = resolve(entry.used_by)
        if not re.search(rf"\.{re.escape(entry.name)}\b", inspect.getsource(user)):
            found.append(f"{symbol}: {entry.used_by} no longer uses it, so ours no longer runs ({entry.why})")
    return found


@pytest.mark.parametrize("entry", RELIES_ON, ids=lambda e: f"{e.owner}.{e.name}")
def test_what_the_seam_relies_on_is_still_there(entry: Reliance):
    assert not problems(entry), "\n".join(problems(entry))


def test_the_check_names_what_moved():
    """The check can fail: a made-up name, a changed signature and a caller that does not use the
    name are each reported with the symbol."""
    consumer = "faust.transport.drivers.aiokafka.Consumer"
    assert problems(Reliance(consumer, "_no_such_name", None, "a test")) == [
        f"{consumer}._no_such_name: gone (needed: a test)"]
    assert problems(Reliance(consumer, "_new_offset", "(self, tp, extra)", "a test")) == [
        f"{consumer}._new_offset: signature changed: (self, tp, extra) → (self, tp) (needed: a test)"]
    assert "no longer uses it" in problems(Reliance(consumer, "_new_offset", "(self, tp)", "a test",
                                                    used_by="faust.tables.recovery.Recovery"))[0]
    assert "cannot be imported" in problems(Reliance("faust.no_such_module.Thing", "x", None, "a test"))[0]


@pytest.mark.parametrize("ours", [BatchingConsumer, ExternalChangelogGlobalTable], ids=lambda c: c.__name__)
def test_overrides_are_listed_and_keep_the_signature_they_override(ours: type):
    """Every method of ours that a Faust class also has is an override: listed in RELIES_ON (so a
    Faust release that adds a name our helper already has is caught) and called as Faust calls it."""
    base = ours.__mro__[1]
    listed = {e.name for e in RELIES_ON if e.owner == f"{base.__module__}.{base.__qualname__}"}
    for name, value in vars(ours).items():
        if not inspect.isfunction(value) or name.startswith("__") or not hasattr(base, name):
            continue
        assert name in listed, f"{ours.__name__}.{name} overrides {base.__module__}.{base.__qualname__}.{name}, " \
                               "which RELIES_ON does not list"
        assert shown(value) == shown(getattr(base, name)), \
            f"{ours.__name__}.{name}{shown(value)} differs from the {shown(getattr(base, name))} it overrides"


async def test_install_makes_the_app_consume_through_the_batching_consumer():
    """A real app, not started: the swapped class is the one Faust makes its consumer from, and the
    consumer's own attributes in RELIES_ON exist on it."""
    app = faust.App("seam-test", broker="kafka://localhost:1", store="memory://")
    route = batching.install(app, "events")
    consumer = app.consumer
    assert isinstance(consumer, BatchingConsumer) and consumer.route is route
    own = [e.name for e in RELIES_ON if e.owner == "faust.transport.drivers.aiokafka.Consumer"]
    assert [name for name in own if not hasattr(consumer, name)] == []


def _seam_distributions() -> set[str]:
    """The distributions that provide the packages RELIES_ON names (faust-streaming, aiokafka, …)."""
    providers = importlib.metadata.packages_distributions()
    return {dist for entry in RELIES_ON for dist in providers[entry.owner.split(".")[0]]}


def test_installed_versions_are_inside_the_pinned_ranges():
    """The versions the seam is checked against are the ones pyproject.toml admits."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {req.name: req.specifier for req in map(Requirement, declared)}
    seam = _seam_distributions()
    assert {"faust-streaming", "aiokafka", "rocksdict"} <= seam
    outside = {dist: (importlib.metadata.version(dist), str(pins[dist]))
               for dist in seam if dist in pins and not pins[dist].contains(importlib.metadata.version(dist))}
    assert not outside, f"installed outside the pinned range (installed, pinned): {outside}"
