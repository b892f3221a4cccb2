"""The installed plugin: its components, its defaults and its bundled questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from matrix_coral.config import AgreementRule, DatasetFormat, Export, KeepRule
from matrix_coral.questions import parse_question

from matrix_core import config
from matrix_core.cli import cli
from matrix_core.errors import ConfigError
from matrix_core.plugins import load_plugins

OPENAI = ["backend.type=openai", "backend.base_url=http://127.0.0.1:9/v1"]


def resolve(*overrides: str) -> config.ResolvedConfig:
    registry = load_plugins().registry
    return config.resolve(registry.get("orchestrators", "coral"), registry, config.parse_overrides(overrides))


def test_the_plugin_registers_the_workflow_and_its_agents():
    info = next(info for info in load_plugins().infos if info.name == "coral")
    assert (info.status, info.source) == ("ok", "entry point")
    assert info.components == {"orchestrators": ["coral"], "agents": ["coral.collaborator", "coral.extractor"]}


def test_defaults_are_the_laptop_demo_on_the_local_backend():
    result = CliRunner().invoke(cli, ["run", "coral", "--print-config"])
    if result.exit_code == 0:  # the local backend has landed
        assert "type: local" in result.output
    else:
        assert "backend.type: unknown backend 'local'" in result.output
    resolved = resolve(*OPENAI).config
    assert resolved.coral.max_turns == 6
    assert (resolved.coral.sampling.temperature, resolved.coral.sampling.top_p) == (0.2, 0.9)
    assert resolved.coral.sampling.max_tokens == 256
    assert (resolved.coral.extractor_sampling.temperature, resolved.coral.extractor_sampling.max_tokens) == (0.0, 32)
    assert (resolved.coral.agreement_rule, resolved.coral.keep, resolved.coral.export) == (
        AgreementRule.strict,
        KeepRule.all,
        Export.conversation,
    )
    assert resolved.input.id_key == "question_id"


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


def test_system_prompt_option():
    result = CliRunner().invoke(cli, ["run", "coral", *OPENAI, "--system-prompt", "Be brief.", "--print-config"])
    assert result.exit_code == 0, result.output
    assert "system_prompt: Be brief." in result.output
