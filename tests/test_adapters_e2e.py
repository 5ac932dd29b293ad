"""Every language's echo example behind the real bridge: 1,000 tasks, 64 in flight."""

from __future__ import annotations

import json
import random
import shutil
import signal

import pytest

from conftest import ROOT

LANGS = sorted(p.parent.name for p in (ROOT / "examples" / "echo").glob("*/run"))
# Tools an example needs to build itself; without them it is skipped with the reason, not failed.
TOOLCHAINS = {"java": ("java", "mvn")}


def lang_param(lang: str) -> object:
    missing = [tool for tool in TOOLCHAINS.get(lang, ()) if shutil.which(tool) is None]
    return pytest.param(lang, id=lang, marks=[pytest.mark.skip(reason=f"{', '.join(missing)} not installed")]
                        if missing else [])


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("lang", [lang_param(lang) for lang in LANGS])
def test_thousand_tasks_through_each_adapter(lang, port, engine_factory, bridge_factory, tmp_path):
    stats = tmp_path / "stats.json"
    engine = engine_factory(port, "--concurrency", "64", "--stats", str(stats))
    # The first start may build the example (npm, go, cargo), hence the generous start timeout.
    bridge = bridge_factory(port, [str(ROOT / "examples" / "echo" / lang / "run")], "--start-timeout", "600s")
    rng = random.Random(11)
    payloads = ["温度" * rng.randint(0, 3) + "x" * rng.randint(0, 40) for _ in range(1000)]
    engine.send(*[{"config": {"i": i, "payload": p}, "elementJob": f"e{i}"} for i, p in enumerate(payloads)])
    engine.close_input()
    assert engine.proc.wait(600) == 0, bridge.log()[-3000:]
    answers = {a["elementJob"]: a for a in engine.answers()}
    assert len(answers) == 1000 == len(engine.answers())
    for i, payload in enumerate(payloads):
        assert answers[f"e{i}"]["status"] is True, answers[f"e{i}"]
        assert answers[f"e{i}"]["result"] == {"i": i, "n": len(payload)}
    figures = json.loads(stats.read_text())
    print(f"{lang}: {figures['tasks_per_s']} tasks/s, p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")
    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0
    assert bridge.leftovers() == []
