"""One schema: every generated table is current, and the hand-written classes match it.

protocol/schema.json holds the message tables, error kinds and state table;
protocol/generate.py writes the Python, Go, Rust, Node and Java tables and SPEC.md's from it,
and protocol/make_vectors.py writes vectors.json. These tests fail in CI when someone
edits the schema or a vector without regenerating, or edits a generated file by hand.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import pathlib
from types import ModuleType
from typing import Any

import pytest

from flow_bridge.protocol import (
    DEFAULT_MAX_FRAME,
    EVENT_TYPES,
    MAX_MAX_FRAME,
    MIN_MAX_FRAME,
    ErrorKind,
    PluginType,
    _events,
    _schema,
)

ROOT = pathlib.Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "protocol" / "schema.json").read_text("utf-8"))


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"protocol_{name}", ROOT / "protocol" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_script("generate")


def test_generated_files_are_current() -> None:
    stale = [str(path.relative_to(ROOT)) for path in generate.stale()]
    assert stale == [], f"out of date: {', '.join(stale)}; run python protocol/generate.py"


def test_vectors_are_current() -> None:
    make_vectors = load_script("make_vectors")
    assert (ROOT / "protocol" / "vectors.json").read_text("utf-8") == make_vectors.render(), (
        "protocol/vectors.json is out of date; run python protocol/make_vectors.py"
    )


def test_the_check_sees_a_schema_change() -> None:
    """The freshness check can fail: a field added to the schema makes every table stale."""
    changed = copy.deepcopy(SCHEMA)
    changed["messages"][0]["fields"].append({"name": "extra", "type": "str", "default": "", "meaning": "x"})
    stale = {path.relative_to(ROOT).as_posix() for path in generate.stale(changed)}
    assert stale == {
        "protocol/_schema.py", "adapters/go/schema_gen.go", "adapters/rust/src/schema.rs",
        "adapters/node/lib/schema.js", "adapters/java/src/main/java/io/flowbridge/adapter/protocol/Schema.java",
        "SPEC.md",
    }


def test_spec_regions_must_each_be_there_once() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        generate.fill_regions("no markers here", {"hello": "| table |"})


# Required fields that the Python classes let a caller leave out when building an event.
BUILD_DEFAULTS = {"task": {"config"}, "debug": {"config"}}


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@pytest.mark.parametrize("message", SCHEMA["messages"], ids=lambda m: m["type"])
def test_event_classes_declare_the_schema_fields_and_defaults(message: dict[str, Any]) -> None:
    cls = EVENT_TYPES[message["type"]]
    names = [f["name"] for f in message["fields"]]
    assert [f.name for f in dataclasses.fields(cls)] == names == list(cls.FIELDS)
    expected = {f["name"]: f["default"] for f in message["fields"] if "default" in f}
    expected |= {f["name"]: None for f in message["fields"] if "absent" in f}
    defaults = _defaults(cls)
    # A required field may have a default for building an event in Python (a task's empty
    # config); the codec still requires it on the wire, since it reads OPTIONAL from the schema.
    handy = {name: value for name, value in defaults.items() if name not in expected}
    assert set(handy) <= BUILD_DEFAULTS.get(message["type"], set())
    assert {name: value for name, value in defaults.items() if name in expected} == expected


def test_closed_sets_match_the_schema() -> None:
    assert [k.value for k in ErrorKind] == [k["kind"] for k in SCHEMA["error_kinds"]]
    assert [t.value for t in PluginType] == SCHEMA["plugin_types"]
    assert list(_events.LOG_LEVELS) == SCHEMA["log_levels"]
    hello = {f["name"]: f for f in SCHEMA["messages"][0]["fields"]}
    assert (DEFAULT_MAX_FRAME, MIN_MAX_FRAME, MAX_MAX_FRAME) == (
        hello["max_frame"]["default"], hello["max_frame"]["min"], hello["max_frame"]["max"],
    )
    assert _schema.BOUNDS["ready", "concurrency"] == (1, 65536)
