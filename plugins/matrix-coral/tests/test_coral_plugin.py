"""The installed plugin: its components, its defaults and its bundled questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from matrix_coral.config import AgreementRule, DatasetFormat, Export, KeepRule
from matrix_coral.questions import parse_question

from matrix_core import ConfigError, ResolvedConfig, UsageError, resolve_config
from matrix_core.cli import cli
from matrix_core.testing import installed_plugins

OPENAI = ["backend.type=openai", "backend.base_url=http://127.0.0.1:9/v1"]


def resolve(*overrides: str) -> ResolvedConfig:
    return resolve_config("coral", overrides=overrides)


def test_the_plugin_registers_the_workflow_and_its_agents():
    info = next(info for info in installed_plugins().infos if info.name == "coral")
    assert (info.status, info.source) == ("ok", "entry point")
    assert info.components == {"orchestrators": ["coral"], "agents": ["coral.collaborator", "coral.extractor"]}


def resolve_with(profile: str | None, *overrides: str) -> ResolvedConfig:
    return resolve_config("coral", overrides=overrides, profile=profile)


def test_a_real_server_gets_collaborative_reasoners_own_settings():
    resolved = resolve(*OPENAI)
    assert resolved.profile is None and resolved.profile_note() is None
    coral = resolved.config.coral
    assert coral.max_turns == 20
    assert (coral.sampling.temperature, coral.sampling.top_p, coral.sampling.max_tokens) == (0.2, 0.9, 1024)
    assert (coral.extractor_sampling.temperature, coral.extractor_sampling.max_tokens) == (0.0, 32)
    assert (coral.agreement_rule, coral.keep, coral.export) == (AgreementRule.strict, KeepRule.all, Export.conversation)
    assert resolved.config.input.id_key == "question_id"


def test_the_demo_profile_applies_by_itself_on_the_local_backend_and_says_so():
    resolved = resolve()
    assert resolved.config.backend.type == "local"
    assert (resolved.config.coral.max_turns, resolved.config.coral.sampling.max_tokens) == (6, 256)
    assert resolved.profile_note() == (
        "demo profile: coral.max_turns=6 (reference 20), coral.sampling.max_tokens=256 (reference 1024), "
        "run.stall_timeout_s=3600.0 (reference 600.0)"
    )
    own = resolve("coral.max_turns=10")  # the user's value wins, and the note no longer names it
    assert own.config.coral.max_turns == 10
    assert own.profile_note() == (
        "demo profile: coral.sampling.max_tokens=256 (reference 1024), run.stall_timeout_s=3600.0 (reference 600.0)"
    )
    assert resolve_with("reference").config.coral.max_turns == 20
    assert resolve_with("demo", *OPENAI).config.coral.max_turns == 6
    with pytest.raises(UsageError, match=r"--profile fast: workflow 'coral' has no such profile .*demo, reference"):
        resolve_with("fast")


def test_print_config_shows_where_each_value_came_from():
    result = CliRunner().invoke(cli, ["run", "coral", "--print-config", "coral.keep=agreement_correct"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("demo profile: coral.max_turns=6 (reference 20)")
    assert "  max_turns: 6  # profile demo matrix_coral:demo.yaml:5" in lines
    assert "  keep: agreement_correct  # override" in lines
    assert "  agreement_rule: strict  # default" in lines
    assert "  type: local  # default matrix_coral:coral.yaml:5" in lines
    result = CliRunner().invoke(cli, ["run", "coral", "--print-config", "--profile", "reference"])
    assert "  max_turns: 20  # default" in result.output.splitlines()


def test_the_bundled_questions_are_the_default_input():
    path = Path(resolve(*OPENAI).config.input.path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 12
    assert {parse_question(row).format for row in rows} == {DatasetFormat.mmlu_pro}
    assert (path.parent / "README.md").read_text().count("MIT licence") == 1


def test_options_are_typed():
    resolved = resolve(*OPENAI, "coral.agreement_rule=latest_valid", "coral.keep=agreement_correct", "coral.export=sft")
    assert resolved.config.coral.agreement_rule is AgreementRule.latest_valid
    with pytest.raises(ConfigError, match=r"coral\.agreement_rule"):
        resolve(*OPENAI, "coral.agreement_rule=loose")
    with pytest.raises(ConfigError, match=r"coral\.dataset\.format"):
        resolve(*OPENAI, "coral.dataset.format=csv")
    with pytest.raises(ConfigError, match=r"coral\.max_turn"):
        resolve(*OPENAI, "coral.max_turn=3")


def test_max_turns_is_checked_once_when_resolved_naming_file_line_and_key(tmp_path):
    settings = tmp_path / "coral.yaml"
    settings.write_text("coral:\n  agreement_rule: strict\n  max_turns: 0\n")
    with pytest.raises(ConfigError) as raised:
        resolve_config("coral", config_files=[str(settings)], overrides=OPENAI)
    assert str(raised.value) == f"{settings}:3: coral.max_turns: must be at least 1, got 0"
    with pytest.raises(ConfigError, match=r"^override #3: coral\.max_turns: must be at least 1, got 0$"):
        resolve(*OPENAI, "coral.max_turns=0")


def test_system_prompt_option():
    result = CliRunner().invoke(cli, ["run", "coral", *OPENAI, "--system-prompt", "Be brief.", "--print-config"])
    assert result.exit_code == 0, result.output
    assert "system_prompt: Be brief." in result.output
