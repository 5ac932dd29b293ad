"""The benchmark harness works: `bench/run.py --smoke` runs every case end to end."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("matplotlib", reason="the chart needs the bench extra: pip install '.[bench]'")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=110, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    report = (tmp_path / "report.md").read_text()
    assert (tmp_path / "throughput.png").read_bytes().startswith(b"\x89PNG")
    assert "| target |" in report
    cases = {run["case"] for run in data["runs"]}
    assert cases >= {"a", "f", "b", "c-node", "c-go", "c-rust", "d", "e"}
    for run in data["runs"]:
        label = f"{run['case']} C={run['concurrency']}"
        assert run["ok"], f"{label}: {run.get('error') or run.get('problems')}"
        assert run["answered"] == run["n"] == run["correct"] > 0, label
        assert run["tasks_per_s"] > 0 and run["plugin_rss_kb"] > 0, label
