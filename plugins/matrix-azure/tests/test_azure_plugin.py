"""matrix-azure as an installed plugin: found through its entry point, its options listed, typed and redacted."""

from __future__ import annotations

import json

from click.testing import CliRunner
from matrix_azure.backend import AzureAuth, AzureBackend

from matrix_core import resolve_config
from matrix_core.cli import cli
from matrix_core.testing import installed_plugins

SECRET = "azure-secret-in-config-9f3"
AZURE = ["backend.type=azure", "backend.endpoint=https://my-resource.openai.azure.com", "backend.deployment=gpt-4o"]


def test_the_entry_point_registers_the_azure_backend_through_the_public_hook():
    loaded = installed_plugins()
    [info] = [info for info in loaded.infos if info.name == "azure"]
    assert (info.status, info.source) == ("ok", "entry point"), info.error
    assert info.hooks == ["matrix_register_backends"]
    assert info.components == {"backends": ["azure"]}
    assert loaded.registry.get("backends", "azure").cls is AzureBackend


def test_backends_list_shows_the_azure_options():
    result = CliRunner().invoke(cli, ["backends", "list", "--json"])
    assert result.exit_code == 0, result.output
    [azure] = [row for row in json.loads(result.output) if row["name"] == "azure"]
    assert azure["plugin"] == "azure"
    options = azure["options"]
    assert options["endpoint"] == "str | None = None"
    assert options["deployment"] == "str | None = None"
    assert options["api_version"] == "str = '2024-10-21'"
    assert options["api_key_env"] == "str | None = 'AZURE_OPENAI_API_KEY'"
    assert options["auth"] == "AzureAuth = 'key'"


def test_overrides_are_typed_by_the_schema():
    resolved = resolve_config("inference", overrides=[*AZURE, "backend.auth=entra"])
    assert resolved.config.backend.auth is AzureAuth.entra
    assert resolved.role_backends["model"].deployment == "gpt-4o"
    result = CliRunner().invoke(cli, ["run", "inference", "--print-config", *AZURE, "backend.auth=password"])
    assert result.exit_code == 2
    assert result.output.startswith("Error: override #4: backend.auth: Invalid value 'password'")


def test_print_config_redacts_the_key():
    result = CliRunner().invoke(cli, ["run", "inference", "--print-config", *AZURE, f"backend.api_key={SECRET}"])
    assert result.exit_code == 0, result.output
    assert "api_key: '***'" in result.output
    assert "endpoint: https://my-resource.openai.azure.com" in result.output
    assert SECRET not in result.output


def test_a_missing_key_stops_the_run_before_it_starts(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hi"}\n')
    args = ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), *AZURE]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == (
        "Error: backend.api_key_env: environment variable AZURE_OPENAI_API_KEY is not set"
    )
    assert not (tmp_path / "out.jsonl").exists()
