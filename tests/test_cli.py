"""The command line: lazy loading, listings, exit codes and one-line errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from matrix_core import __version__
from matrix_core.cli import cli
from matrix_core.plugins import load_plugins

HEAVY_MODULES = ("ray", "torch", "vllm", "sglang", "openai", "httpx", "aiohttp", "omegaconf", "pyarrow", "rich")


def matrix(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, prog_name="matrix")


def run_subprocess(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_help_imports_no_heavy_module():
    probe = (
        "import sys\n"
        "from matrix_core.cli import main\n"
        "sys.argv = ['matrix', '--help']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY_MODULES)!r}))\n"
    )
    result = run_subprocess(probe)
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout and "run" in result.stdout
    assert "LOADED []" in result.stdout


def test_help_survives_a_plugin_that_raises_on_import(make_distribution):
    root = make_distribution("explodes", {"explodes": "raise RuntimeError('kaboom')"}, {"explodes": "explodes"})
    env = {"PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    help_run = run_subprocess("import sys; from matrix_core.cli import main; sys.argv[1:] = ['--help']; main()", **env)
    assert "Commands:" in help_run.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "matrix_core", "plugins", "list", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    broken = next(p for p in json.loads(listing.stdout) if p["name"] == "explodes")
    assert (broken["status"], broken["error"]) == ("error", "RuntimeError: kaboom")
    assert "plugin 'explodes' skipped: RuntimeError: kaboom" in listing.stderr
    assert "Traceback" not in listing.stderr


def test_strict_mode_fails_the_command_with_one_line(make_distribution):
    make_distribution("strict-cli", {"strict_cli": "raise RuntimeError('kaboom')"}, {"strict-cli": "strict_cli"})
    result = matrix("plugins", "list", env={"MATRIX_STRICT_PLUGINS": "1"})
    assert result.exit_code == 1
    assert result.output.strip() == "Error: plugin 'strict-cli' failed: RuntimeError: kaboom"


def test_plugins_list_json_has_the_documented_fields(hello):
    result = matrix("plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert {"name", "version", "hooks", "components", "status", "error"} <= set(rows["hello"])
    assert rows["hello"]["components"] == {
        "orchestrators": ["hello"],
        "agents": ["hello.greeter"],
        "backends": ["echo"],
    }
    assert rows["sinks"]["version"] == __version__


def test_plugins_list_is_one_line_per_plugin(hello):
    result = matrix("plugins", "list", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["NAME", "VERSION", "SOURCE", "STATUS", "PROVIDES", "OR", "ERROR"]
    row = next(line for line in lines if line.startswith("hello "))
    assert row.split(maxsplit=4)[2:] == ["in-process", "ok", "1 workflow, 1 agent, 1 backend"]
    verbose = matrix("plugins", "list", "--verbose").stdout
    assert "orchestrators: hello" in verbose and "agents: hello.greeter" in verbose, "--verbose names them"


@pytest.mark.parametrize("listing", ["plugins", "workflows", "agents", "backends"])
def test_listings_fit_80_columns_with_whole_names(hello, make_distribution, listing):
    long_name = "a-plugin-with-a-rather-long-name"
    message = "a load error long enough to run past the right edge of any eighty-column terminal, then more"
    make_distribution(long_name, {"long_named": f"raise RuntimeError({message!r})"}, {long_name: "long_named"})
    load_plugins.cache_clear()  # the hello fixture loaded them before this distribution existed
    result = matrix(listing, "list", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()  # stdout: the broken plugin's warning goes to stderr
    assert all(len(line) <= 80 for line in [header, *lines]), result.stdout
    names = [row["name"] for row in json.loads(matrix(listing, "list", "--json").stdout)]
    assert [line.split()[0] for line in lines] == names, "one line per entry, its name whole"
    if listing == "plugins":
        row = next(line for line in lines if line.startswith(long_name))
        error = f"RuntimeError: {message}"
        shown = row[row.index("RuntimeError") :].removesuffix("…")
        assert row.endswith("…") and error.startswith(shown) and error[len(shown)] == " ", "cut between two words"


def test_verbose_listing_shows_every_field_within_the_width(hello):
    result = matrix("backends", "list", "--verbose", env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 60 for line in result.stdout.splitlines()), result.stdout
    assert "echo\n  plugin: hello\n" in result.stdout
    assert "    prefix: str = 'echo: '" in result.stdout.splitlines()


def test_component_listings(hello):
    workflows = {row["name"]: row for row in json.loads(matrix("workflows", "list", "--json").output)}
    assert workflows["hello"] == {
        "name": "hello",
        "plugin": "hello",
        "class": "matrix_hello.workflow:HelloOrchestrator",
        "description": "Greets one person per row.",
        "roles": {"greeter": "hello.greeter"},
        "config_key": "hello",
    }
    agents = {row["name"]: row for row in json.loads(matrix("agents", "list", "--json").output)}
    assert agents["hello.greeter"]["options"]["max_tokens"] == "int = 16"
    backends = {row["name"]: row for row in json.loads(matrix("backends", "list", "--json").output)}
    assert backends["echo"]["options"]["prefix"] == "str = 'echo: '"
    assert "type" not in backends["echo"]["options"], "the type is the backend's name"
    assert backends["openai"]["plugin"] == "backends"
    assert "echo" in matrix("backends", "list").output.split()
    assert {"list", "start", "stop", "check"} <= set(cli.get_command(None, "backends").commands)


def test_version_lists_plugins(hello):
    result = matrix("--version")
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == f"matrix-core {__version__}"
    assert "  hello " in result.output


def test_unknown_workflow_lists_known_ones_and_exits_2(hello):
    result = matrix("run", "nope")
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("Error: unknown workflow 'nope' (known: ") and message.count("\n") == 0
    assert "hello" in message and "inference" in message


def test_bad_override_exits_2_naming_the_key(hello):
    result = matrix("run", "hello", "run.partitions=lots")
    assert result.exit_code == 2
    assert result.output.startswith("Error: override #1: run.partitions: Value 'lots'")
    assert len(result.output.strip().splitlines()) == 1


def test_missing_config_file_exits_2(hello):
    result = matrix("run", "hello", "-c", "does-not-exist.yaml")
    assert result.exit_code == 2
    assert "'does-not-exist.yaml' does not exist" in result.output


def test_print_config_applies_flags_and_redacts(hello, tmp_path):
    result = matrix(
        "run",
        "hello",
        "--print-config",
        "-i",
        "in.jsonl",
        "-o",
        str(tmp_path / "o.jsonl"),
        "--limit",
        "3",
        "--resume",
        "backend.api_key=sk-secret",
        "hello.greeting=Hey",
    )
    assert result.exit_code == 0, result.output
    assert "sk-secret" not in result.output
    assert "api_key: '***'" in result.output
    for line in ("path: in.jsonl", f"path: {tmp_path / 'o.jsonl'}", "limit: 3", "resume: true", "greeting: Hey"):
        assert line in result.output


def test_a_secret_on_the_command_line_works_with_a_warning(hello):
    result = matrix("run", "hello", "--print-config", "backend.api_key=sk-one-key", "backend.api_key_env=MY_KEY")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "Warning: backend.api_key on the command line is visible to other users (ps); "
        "use backend.api_key_env=VAR or a -c file"
    ]
    assert "sk-one-key" not in result.output
    result = matrix("run", "inference", "--print-config", "backend.extra_body.Authorization=Bearer t0k", "run.seed=2")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "Warning: backend.extra_body.Authorization on the command line is visible to other users (ps); "
        "use ${oc.env:VAR} in a -c file"
    ]
    assert "t0k" not in result.output


def test_a_value_typed_without_its_key_is_not_repeated(hello):
    result = matrix("run", "hello", "run.seed=1", "sk-live-abcdefghijklmnopqrstuvwx")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "Error: override #2 is not KEY=VALUE",
        "Hint: its text is not repeated: it may hold a secret",
    ]


def test_printed_errors_and_logs_hide_secrets():
    from matrix_core.cli import UserError, _configure_logging
    from matrix_core.errors import MatrixError
    from matrix_core.redaction import RedactingFilter

    error = UserError(MatrixError("https://u:pw@h/v1: refused key sk-abcdefghijklmnopqrstuvwx", hint="--token=t0k"))
    assert error.format_message() == "https://***@h/v1: refused key ***\nHint: --token=***"
    root, ours = logging.getLogger(), logging.getLogger("matrix_core")
    handlers, levels = root.handlers[:], (root.level, ours.level)
    try:
        _configure_logging(verbose=False)
        assert all(any(isinstance(f, RedactingFilter) for f in handler.filters) for handler in root.handlers)
    finally:
        root.handlers[:] = handlers
        root.setLevel(levels[0])
        ours.setLevel(levels[1])
