"""The example plugin of docs/plugins.md, pip-installed into a fresh virtual environment, is discovered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from matrix_core.plugins import load_plugins

HELLO_PLUGIN = Path(__file__).parent / "fixtures" / "matrix-hello"
PIP_OFFLINE = ("--no-deps", "--no-build-isolation", "--no-index")


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv that sees this environment's packages (matrix-core and its dependencies, pip and setuptools),
    with matrix-hello installed there, and only there, by pip from its source folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site_packages = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    outer = sysconfig.get_paths()["purelib"]
    (Path(site_packages) / "outer_environment.pth").write_text(f"import site; site.addsitedir({outer!r})\n")
    # pip builds in the source folder: build a copy, so no egg-info lands beside the tests' in-process import
    source = shutil.copytree(HELLO_PLUGIN, venv.parent / "matrix-hello-source")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", *PIP_OFFLINE, str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return python


def matrix_in(python: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return subprocess.run([python, "-m", "matrix_core", *args], capture_output=True, text=True, timeout=300, env=env)


def test_installed_plugin_appears_in_plugins_list(venv_python):
    result = matrix_in(venv_python, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    hello = next(row for row in json.loads(result.stdout) if row["name"] == "hello")
    assert hello["status"] == "ok", hello["error"]
    assert hello["source"] == "entry point"
    assert hello["version"] == "0.3.0"
    assert hello["hooks"] == ["matrix_register_agents", "matrix_register_backends", "matrix_register_orchestrators"]
    assert hello["components"] == {"orchestrators": ["hello"], "agents": ["hello.greeter"], "backends": ["echo"]}


def test_installed_plugin_ships_its_default_config(venv_python):
    result = matrix_in(venv_python, "run", "hello", "--print-config", "hello.greeting=Howdy")
    assert result.returncode == 0, result.stderr
    assert "type: echo" in result.stdout, "from hello.yaml, installed as package data"
    assert "greeting: Howdy" in result.stdout


def test_the_outer_environment_does_not_have_it(venv_python):
    assert "hello" not in [info.name for info in load_plugins().infos]


def test_installed_plugin_runs_on_ray_workers(venv_python, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": 1, "name": "Ada"}\n{"id": 2, "name": "Alan"}\n')
    output = tmp_path / "out.jsonl"
    result = matrix_in(venv_python, "run", "hello", "-i", str(tmp_path / "in.jsonl"), "-o", str(output), "-q")
    assert result.returncode == 0, result.stderr
    records = sorted((json.loads(line) for line in output.read_text().splitlines()), key=lambda r: r["id"])
    assert records == [
        {"id": "1", "status": "success", "reason": "", "greeting": "echo: Hello, Ada!"},
        {"id": "2", "status": "success", "reason": "", "greeting": "echo: Hello, Alan!"},
    ]
    assert "2 tasks (2 success)" in result.stderr


def test_installed_plugin_runs_on_its_bundled_input(venv_python, tmp_path):
    output = tmp_path / "out.jsonl"
    result = matrix_in(venv_python, "run", "hello", "-o", str(output), "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(line)["id"] for line in output.read_text().splitlines()) == ["ada", "alan", "grace"]
