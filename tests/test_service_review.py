"""Service projects at their edges: what `init --add`, `init --from-scripts` and `package` make of them.

Real CLI runs in subprocesses: projects are made with `flow-bridge init`, packed with
`flow-bridge package`, and the archives read back. Docker cannot run here, so a Linux
archive's Dockerfile is checked against the archive itself: every path it copies from the
build context is in it, and every folder it builds in holds what that build needs.
"""

from __future__ import annotations

import fnmatch
import json
import pathlib
import shlex
import shutil
import subprocess

import pytest
import yaml

from conftest import FLOW_BRIDGE, Archive

NEEDS_NODE = pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
NEEDS_GO = pytest.mark.skipif(shutil.which("go") is None, reason="needs go")


def cli(*args: str, cwd: pathlib.Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOW_BRIDGE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stderr
    return done


def copied_from_context(line: str) -> list[str]:
    """The sources of a COPY line that reads the build context (none for COPY --from=)."""
    words = line.split(None, 1)
    if words[0] != "COPY" or "--from=" in line:
        return []
    rest = words[1]
    paths = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    return list(paths[:-1])


def check_dockerfile_against(files: dict[str, bytes]) -> list[str]:
    """What a docker build would fail on at once: a copied path or a build folder not in the archive."""
    lines = [line for line in files["Dockerfile"].decode().splitlines() if line and not line.startswith("#")]
    for line in lines:
        for source in copied_from_context(line):
            if source == ".":
                continue
            if "*" in source:
                assert any(fnmatch.fnmatchcase(n, source) for n in files), f"{line}: no file matches {source}"
            else:
                assert any(n == source or n.startswith(source.rstrip("/") + "/") for n in files), \
                    f"{line}: {source} is not in the archive"
        if line.startswith("RUN cd "):
            folder = shlex.split(line)[2]
            assert any(n.startswith(folder + "/") for n in files), f"{line}: no folder {folder} in the archive"
        if line.startswith("RUN pip install --no-cache-dir -r"):
            for requirement in shlex.split(line)[4:][1::2]:
                assert requirement in files, line
    return lines


def pack(project: pathlib.Path, target: str) -> tuple[dict[str, bytes], dict[str, int]]:
    ok(cli("package", ".", "--target", target, "--version", "1.0.0", cwd=project))
    (archive,) = (project / "dist").glob(f"*-{target}.*")
    packed = Archive(archive)
    return packed.files, packed.modes


@pytest.mark.timeout(240)
@NEEDS_NODE
def test_a_python_node_and_exec_service_packs_for_linux_with_each_plugin_built_in_its_folder(tmp_path):
    project = tmp_path / "svc"
    ok(cli("init", str(project), "--lang", "python", "--name", "pyA", "--no-build"))
    ok(cli("init", str(project), "--lang", "node", "--name", "nodeB", "--add", "--no-build"))
    ok(cli("init", str(project), "--lang", "exec", "--name", "exC", "--add"))
    # Stray files a user's folder has: none of them goes in.
    for stray in ("__pycache__/x.pyc", "plugins/nodeB/node_modules/m/index.js", ".git/HEAD", "plugins/exC/target/t",
                  "plugins/nodeB/__pycache__/y.pyc"):
        (project / stray).parent.mkdir(parents=True, exist_ok=True)
        (project / stray).write_text("stray\n")
    files, modes = pack(project, "linux")
    lines = check_dockerfile_against(files)
    assert "RUN cd plugins/nodeB && npm install --omit=dev --no-audit --no-fund && mkdir -p node_modules" in lines
    assert "COPY --from=node /src/plugins/nodeB/node_modules ./plugins/nodeB/node_modules" in lines
    assert "RUN pip install --no-cache-dir -r requirements.txt -r plugins/exC/requirements.txt" in lines
    assert not [n for n in files if set(n.split("/")) & {"__pycache__", "node_modules", ".git", "target"}]
    for run in ("run", "plugins/nodeB/run", "plugins/exC/run"):
        assert modes[run] & 0o111, run
    assert {"handler.py", "plugins/nodeB/handler.js", "plugins/nodeB/adapter/index.js",
            "plugins/exC/handler.py"} <= set(files)

    windows, win_modes = pack(project, "windows")
    assert yaml.safe_load(windows["service.yml"])["Command"] == "flow-bridge run --config config.yml"
    config = yaml.safe_load(windows["config.yml"])
    assert [(p["name"], p["command"]) for p in config["plugins"]] == [
        ("pyA", ["python", "handler.py"]), ("nodeB", ["node", "plugins/nodeB/handler.js"]),
        ("exC", ["python", "plugins/exC/handler.py"])]
    for _, command in [(p["name"], p["command"]) for p in config["plugins"]]:
        assert command[-1] in windows, command
    assert not [n for n in windows if set(n.split("/")) & {"__pycache__", "node_modules", ".git", "target"}]
    assert win_modes["plugins/nodeB/run"] & 0o111


@pytest.mark.timeout(120)
def test_a_service_from_scripts_packs_for_linux_without_a_requirements_file_it_does_not_have(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "report.py").write_text(
        "#!/usr/bin/env python3\nimport json, sys\njson.load(sys.stdin)\nprint(json.dumps({'ok': 1}))\n")
    (scripts / "report.py").chmod(0o755)
    project = tmp_path / "svc"
    ok(cli("init", str(project), "--from-scripts", str(scripts)))
    files, modes = pack(project, "linux")
    lines = check_dockerfile_against(files)
    assert not [line for line in lines if "requirements.txt" in line], lines
    assert modes["scripts/report.py"] & 0o111
    # The archive alone answers a task, as the image's CMD would serve it.
    app = tmp_path / "app"
    for name, data in files.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_bytes(data)
        (app / name).chmod(modes[name])
    answer = ok(cli("call", "--plugin", "report", "-q", "--config", "config.yml", cwd=app))
    assert json.loads(answer.stdout.strip().splitlines()[-1])["result"] == {"ok": 1}


@pytest.mark.timeout(300)
@NEEDS_GO
def test_a_go_plugin_added_to_a_service_is_built_in_its_folder_for_linux_and_windows(tmp_path):
    project = tmp_path / "svc"
    ok(cli("init", str(project), "--lang", "python", "--name", "pyA"))
    ok(cli("init", str(project), "--lang", "go", "--name", "goB", "--add"))
    files, _ = pack(project, "linux")
    lines = check_dockerfile_against(files)
    assert ("RUN cd plugins/goB && CGO_ENABLED=0 go build -buildvcs=false -trimpath "
            "-o /out/plugins/goB/handler .") in lines
    assert "COPY --from=build /out/plugins/goB/handler plugins/goB/.bin/handler" in lines
    windows, _ = pack(project, "windows")
    commands = {p["name"]: p["command"] for p in yaml.safe_load(windows["config.yml"])["plugins"]}
    assert commands == {"pyA": ["python", "handler.py"], "goB": ["plugins/goB/handler.exe"]}
    assert windows["plugins/goB/handler.exe"][:2] == b"MZ"


@pytest.mark.parametrize("folder", ["../elsewhere", "/tmp", "plugins/missing"])
def test_a_plugin_folder_outside_the_project_is_refused_before_anything_runs(folder, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "build").write_text("#!/bin/sh\ntouch ran-outside\n")
    (tmp_path / "elsewhere" / "build").chmod(0o755)
    project = tmp_path / "svc"
    ok(cli("init", str(project), "--lang", "python", "--name", "pyA", "--no-build"))
    ok(cli("init", str(project), "--lang", "exec", "--name", "exB", "--add"))
    config = project / "config.yml"
    config.write_text(config.read_text().replace("dir: plugins/exB", f"dir: {folder}"))
    done = cli("package", ".", "--target", "linux", "--version", "1.0.0", cwd=project)
    assert done.returncode == 2, done.stderr
    assert f"package.plugins.exB.dir: '{folder}' is not" in done.stderr and "like plugins/myPlugin" in done.stderr
    assert not (project / "dist").exists()
    assert not (tmp_path / "elsewhere" / "ran-outside").exists()


def test_from_scripts_says_what_it_leaves_out_and_how_to_name_a_script_without_ascii_letters(tmp_path):
    scripts = tmp_path / "scripts"
    (scripts / "sub").mkdir(parents=True)
    for name in ("good.sh", "notes.sh", "sub/inner.sh"):
        (scripts / name).write_text("#!/bin/sh\ncat >/dev/null; echo '{}'\n")
    (scripts / "good.sh").chmod(0o755)
    (scripts / "sub" / "inner.sh").chmod(0o755)
    made = ok(cli("init", str(tmp_path / "svc"), "--from-scripts", str(scripts)))
    assert "left out notes.sh: not executable" in made.stderr and "chmod +x" in made.stderr
    assert "left out the folders sub/" in made.stderr
    assert [p["name"] for p in yaml.safe_load((tmp_path / "svc" / "config.yml").read_text())["plugins"]] == ["good"]
    (scripts / "报告.sh").write_text("#!/bin/sh\necho '{}'\n")
    (scripts / "报告.sh").chmod(0o755)
    refused = cli("init", str(tmp_path / "other"), "--from-scripts", str(scripts))
    assert refused.returncode == 2
    assert "报告.sh: no plugin name can be made" in refused.stderr and "ASCII letter" in refused.stderr
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("plugins, says", [
    pytest.param("[]", "and this one is empty: add an entry, or remove plugins:", id="empty"),
    pytest.param("[{name: a, command: './s.sh \"open', exec: true}]",
                 "cannot be split into arguments (No closing quotation): close its quotes, or write the command "
                 "as a list", id="unclosed-quote"),
])
def test_a_plugins_list_that_cannot_serve_says_what_to_do(plugins, says, tmp_path):
    config = tmp_path / "service.yml"
    config.write_text(f"plugins: {plugins}\n")
    done = cli("call", "--plugin", "a", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2 and says in done.stderr, done.stderr
