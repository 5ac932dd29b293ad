"""Release metadata: one version (flow_bridge.__version__) that every adapter's manifest carries."""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from importlib import metadata

import pytest

import flow_bridge
from conftest import ROOT

VERSION = flow_bridge.__version__


def _node() -> str:
    return str(json.loads((ROOT / "adapters" / "node" / "package.json").read_text("utf-8"))["version"])


def _rust() -> str:
    return str(tomllib.loads((ROOT / "adapters" / "rust" / "Cargo.toml").read_text("utf-8"))["package"]["version"])


def _java() -> str:
    pom = ROOT / "adapters" / "java" / "pom.xml"
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(pom).getroot().find("m:version", namespace)
    assert version is not None and version.text, f"{pom} has no <version>"
    return version.text


def _python_adapter() -> str:
    from flow_bridge.adapter import _plugin

    return _plugin.ADAPTER_VERSION.rsplit(" ", 1)[-1]


@pytest.mark.parametrize("read", [_node, _rust, _java, _python_adapter], ids=["node", "rust", "java", "python"])
def test_every_adapter_carries_the_one_version(read):
    assert read() == VERSION, f"bump it to {VERSION} (bridge/__init__.py is the one source)"


def test_installed_metadata_matches_the_source():
    assert metadata.version("flow-bridge") == VERSION


def test_release_basics():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "version" in project["dynamic"] and "version" not in project
    assert project["urls"]["Source"] and any(c.startswith("Programming Language :: Python :: 3.11")
                                             for c in project["classifiers"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
