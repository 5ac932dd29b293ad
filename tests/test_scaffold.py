"""`flow-bridge init`: a new project in each language answers a task straight away."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest
import yaml

from conftest import FLOW_BRIDGE, ROOT, LineCollector, close_pipes, wait_for

LANGS = ["python", "exec", "node", "go", "rust", "java"]
# Go, Rust and Java build on init; a cold Rust or Maven build takes a while.
TIMEOUTS = {"python": 60, "exec": 60, "node": 60, "go": 240, "rust": 600, "java": 600}
TOOLS = {"node": "node", "go": "go", "rust": "cargo", "java": "mvn"}


def needs(lang: str) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.timeout(TIMEOUTS[lang])]
    tool = TOOLS.get(lang)
    if tool and shutil.which(tool) is None:
        marks.append(pytest.mark.skip(reason=f"{tool} is not installed"))
    return marks


def init(cwd: os.PathLike[str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOW_BRIDGE, "init", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def call(project: os.PathLike[str], lang: str, *args: str) -> tuple[int, dict, str]:
    # No --exec even for exec projects: their config.yml says so, and call reads ./config.yml.
    done = subprocess.run([*FLOW_BRIDGE, "call", *args, "--", "./run"], cwd=project,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


@pytest.mark.parametrize("lang", [pytest.param(lang, id=lang, marks=needs(lang)) for lang in LANGS])
def test_init_then_call_answers_a_task(lang, tmp_path):
    # tmp_path is outside the repository: the project must not lean on this checkout.
    done = init(tmp_path, "plugin", "--lang", lang, "--name", f"my-{lang}")
    assert done.returncode == 0, done.stderr
    assert "flow-bridge call -- ./run" in done.stdout
    project = tmp_path / "plugin"

    code, answer, err = call(project, lang)
    assert (code, answer["status"], answer["result"]) == (0, True, {"greeting": "hello, world"}), err
    code, answer, err = call(project, lang, "--config-json", '{"name": "温度"}')
    assert (code, answer["result"]) == (0, {"greeting": "hello, 温度"}), err
    code, answer, _ = call(project, lang, "--config-json", "[1, 2]")
    assert (code, answer["status"]) == (1, False)
    assert "config must be a JSON object" in answer["info"]

    config = yaml.safe_load((project / "config.yml").read_text())
    assert config["flow-engine"] == {"host": "127.0.0.1", "port": 2333, "connect-timeout": "15s",
                                     "retry-interval": "30s", "heartbeat-interval": "30s"}
    assert config["plugin"] == {"name": f"my-{lang}", "type": "service", "timeout": "600s",
                                "exec": lang == "exec"}
    assert config["package"]["lang"] == lang and config["package"]["version"] == "0.1.0"
    readme = (project / "README.md").read_text()
    assert "flow-bridge call -- ./run" in readme
    assert "flow-bridge run --config config.yml -- ./run" in readme
    assert "flow-bridge package . --target linux" in readme
    assert "{{" not in readme
    assert os.access(project / "run", os.X_OK)
    # Self-contained: no file points back into this checkout.
    for path in project.rglob("*"):
        if path.is_file() and not {".bin", "target", "node_modules"} & set(path.relative_to(project).parts):
            assert str(ROOT) not in path.read_text(errors="replace"), path


@pytest.mark.parametrize("lang", [pytest.param(lang, id=lang, marks=needs(lang))
                                  for lang in ["node", "go", "rust", "java"]])
def test_adapter_is_copied_without_tests_or_build_output(lang, tmp_path):
    done = init(tmp_path, "p", "--lang", lang, "--name", "copy", "--no-build")
    assert done.returncode == 0, done.stderr
    adapter = tmp_path / "p" / "adapter"
    names = {p.relative_to(adapter).as_posix() for p in adapter.rglob("*") if p.is_file()}
    marker = {"node": "index.js", "go": "serve.go", "rust": "src/lib.rs",
              "java": "src/main/java/io/flowbridge/adapter/Session.java"}[lang]
    assert marker in names
    assert not [n for n in names if "test" in n.split("/")[0] or n.endswith("_test.go") or n.startswith("src/test/")]
    assert not [n for n in names if n.split("/")[0] in ("node_modules", "target", "bench")]
    if lang == "rust":
        manifest = (adapter / "Cargo.toml").read_text()
        assert "[[example]]" not in manifest and "../" not in manifest
        assert not (tmp_path / "p" / "target").exists()  # --no-build


@pytest.mark.timeout(60)
def test_config_yml_serves_an_engine_as_a_user_plugin(tmp_path, port, engine_factory):
    done = init(tmp_path, "p", "--lang", "python", "--name", "userPlugin", "--type", "user")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((tmp_path / "p" / "config.yml").read_text())["plugin"]["type"] == "user"
    engine = engine_factory(port)
    # The name and type come from config.yml; only the address is given here.
    bridge = subprocess.Popen([*FLOW_BRIDGE, "run", "--config", "config.yml", "--port", str(port), "--", "./run"],
                              cwd=tmp_path / "p", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = LineCollector(bridge.stderr)
    try:
        engine.send({"config": {"name": "engine"}, "elementJob": "e1"})
        (answer,) = engine.wait_answers(1, timeout=30)
        assert answer["status"] is True and answer["result"] == {"greeting": "hello, engine"}
        wait_for(lambda: engine.err.find("plugin registered"), 10, "the registration log line")
        assert engine.err.find(r"name=userPlugin mode=user"), engine.err.texts()
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(30) == 0, "\n".join(err.texts())
    finally:
        close_pipes(bridge, err)


@pytest.mark.parametrize("args", [
    pytest.param([], id="no-name"),
    pytest.param(["--name", ""], id="empty"),
])
def test_missing_name_says_how_to_give_one(args, tmp_path):
    done = init(tmp_path, "p", "--lang", "python", *args)
    assert done.returncode == 2
    assert "--name: the plugin needs a name" in done.stderr
    assert "--name myPlugin" in done.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("name, hint", [
    pytest.param("my plugin", "my-plugin", id="space"),
    pytest.param("1st", "st", id="digit-first"),
    pytest.param("温度", "myPlugin", id="not-ascii"),
    pytest.param("a" * 65, "a" * 64, id="too-long"),
])
def test_a_name_the_platform_refuses_is_explained(name, hint, tmp_path):
    done = init(tmp_path, "p", "--lang", "python", "--name", name)
    assert done.returncode == 2
    assert "is not a plugin name the platform accepts" in done.stderr
    assert "letters, digits, '-' and '_', starting with a letter" in done.stderr
    assert f"(for example {hint})" in done.stderr
    assert not (tmp_path / "p").exists()


def test_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "keep.txt").write_text("mine")
    done = init(tmp_path, "p", "--lang", "python", "--name", "x")
    assert done.returncode == 2
    assert "not an empty folder" in done.stderr and "name a new or empty folder" in done.stderr
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["keep.txt"]


def test_an_empty_folder_is_fine(tmp_path):
    (tmp_path / "p").mkdir()
    done = init(tmp_path, "p", "--lang", "exec", "--name", "x")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p" / "handler.py").is_file()


def test_unknown_language_is_a_usage_error(tmp_path):
    done = init(tmp_path, "p", "--lang", "cobol", "--name", "x")
    assert done.returncode == 2
    assert "'cobol' is not one of" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_adapters_flag_names_where_the_adapters_are(tmp_path):
    adapters = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "adapters" / "node", adapters / "node", ignore=shutil.ignore_patterns("node_modules"))
    done = init(tmp_path, "p", "--lang", "node", "--name", "n", "--adapters", str(adapters))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p" / "adapter" / "index.js").read_bytes() == (adapters / "node" / "index.js").read_bytes()
    code, answer, err = call(tmp_path / "p", "node")
    assert (code, answer["result"]) == (0, {"greeting": "hello, world"}), err

    done = init(tmp_path, "q", "--lang", "go", "--name", "g", "--adapters", str(adapters))
    assert done.returncode == 2
    assert "does not hold the go adapter (no go.mod)" in done.stderr
    assert "pass --adapters with the adapters/ folder of a flow-bridge checkout" in done.stderr
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("points_to", [pytest.param("missing", id="relative"),
                                       pytest.param("/nonexistent/flow-bridge-target", id="absolute")])
def test_init_into_a_dangling_link_is_refused_cleanly(points_to, tmp_path):
    (tmp_path / "p").symlink_to(points_to)
    done = init(tmp_path, "p", "--lang", "python", "--name", "x")
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith(f"\nError: p is a symbolic link to {points_to}, which does not exist: init writes a "
                                "new project into a folder; name a new folder, or create the folder the link points "
                                "to first\n"), done.stderr
    assert not os.path.lexists(tmp_path / "missing")


def test_init_under_a_file_says_it_cannot_write_there(tmp_path):
    (tmp_path / "afile").write_text("")
    done = init(tmp_path, "afile/p", "--lang", "exec", "--name", "x")
    assert done.returncode == 2, done.stderr
    assert "Error: cannot write the project into afile/p: Not a directory" in done.stderr
    assert "name a folder you can write to" in done.stderr and "Traceback" not in done.stderr


def _node_adapter_copy(tmp_path):
    adapters = tmp_path / "adapters"
    shutil.copytree(ROOT / "adapters" / "node", adapters / "node", ignore=shutil.ignore_patterns("node_modules"))
    return adapters


@pytest.mark.parametrize("existed", [pytest.param(False, id="new-folder"), pytest.param(True, id="empty-folder")])
@pytest.mark.parametrize("how", ["dotdot-in-files", "link-out"])
def test_init_copies_nothing_from_outside_the_adapter(how, existed, tmp_path):
    adapters = _node_adapter_copy(tmp_path)
    if existed:
        (tmp_path / "p").mkdir()
    (tmp_path / "secret.txt").write_text("not the adapter's")
    manifest = adapters / "node" / "package.json"
    if how == "dotdot-in-files":
        doc = json.loads(manifest.read_text())
        doc["files"] = [*doc.get("files", []), "../../secret.txt"]
        manifest.write_text(json.dumps(doc))
    else:
        (adapters / "node" / "lib" / "secret.js").symlink_to(tmp_path / "secret.txt")
    done = init(tmp_path, "p", "--lang", "node", "--name", "n", "--adapters", str(adapters), "--no-build")
    assert done.returncode == 2, done.stderr
    assert "leads outside the node adapter's folder" in done.stderr and "init copies only the adapter's own files" \
        in done.stderr
    # Nothing half-made is left: the folder init made is gone, the one that was there is empty again.
    assert (list((tmp_path / "p").iterdir()) == []) if existed else not (tmp_path / "p").exists()
