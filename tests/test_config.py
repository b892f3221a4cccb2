"""Config layering, validation errors that name their source, per-role backends and redaction."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from matrix_core import config
from matrix_core.errors import ConfigError, UsageError


def resolve(plugins, *sources):
    workflow = plugins.registry.get("orchestrators", "hello")
    return config.resolve(workflow, plugins.registry, list(sources))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return config.load_file(path)


def test_defaults_come_from_the_workflow_and_the_schemas(hello):
    resolved = resolve(hello)
    cfg = resolved.config
    assert cfg.workflow == "hello"
    assert cfg.backend.type == "echo", "from the plugin's hello.yaml"
    assert cfg.agents.greeter.max_in_flight == 8, "from the plugin's hello.yaml"
    assert cfg.agents.greeter.max_tokens == 16, "from the agent's schema"
    assert cfg.run.max_concurrency == 256, "from the core's schema"
    assert cfg.output.path == "hello.jsonl", "workflow name + the sink's suffix"
    assert cfg.input.path.endswith("matrix_hello/data/people.jsonl"), "the plugin's bundled rows"


def test_precedence_defaults_then_files_in_order_then_flags_then_overrides(hello, tmp_path):
    first = write(tmp_path, "a.yaml", "run: {max_concurrency: 10, seed: 1}\nhello: {greeting: Hi}\n")
    second = write(tmp_path, "b.yaml", "run: {max_concurrency: 20}\n")
    flags = config.source_from("flags", {"input": {"path": "in.jsonl"}, "run": {"seed": 5}})
    overrides = config.parse_overrides(["run.seed=7", "backend.prefix=hey"])
    cfg = resolve(hello, first, second, flags, *overrides).config
    assert cfg.run.max_concurrency == 20
    assert cfg.run.seed == 7
    assert cfg.hello.greeting == "Hi"
    assert cfg.input.path == "in.jsonl"
    assert cfg.backend.prefix == "hey"


def test_an_unknown_key_names_file_line_and_key(hello, tmp_path):
    source = write(tmp_path, "bad.yaml", "run:\n  seed: 1\n  max_concurency: 5\n")
    with pytest.raises(ConfigError) as raised:
        resolve(hello, source)
    where = f"{tmp_path / 'bad.yaml'}:3"
    assert str(raised.value).startswith(f"{where}: run.max_concurency: Key 'max_concurency' not in 'RunConfig'")


def test_a_wrong_type_names_the_override(hello):
    with pytest.raises(ConfigError, match=r"^override #1: run.seed: Value 'abc' of type 'str'"):
        resolve(hello, *config.parse_overrides(["run.seed=abc"]))


def test_a_failing_interpolation_is_a_one_line_error(hello):
    with pytest.raises(ConfigError, match=r"^override #1: hello.greeting: .*nowhere"):
        resolve(hello, *config.parse_overrides(["hello.greeting=${nowhere}"]))

    def reject(value: str) -> str:
        raise ConfigError(f"hello.greeting: {value!r} is not a greeting")

    OmegaConf.register_resolver("test_reject", reject, replace=True)
    with pytest.raises(ConfigError, match=r"^hello.greeting: 'boo' is not a greeting$"):
        resolve(hello, *config.parse_overrides(["hello.greeting=${test_reject:boo}"]))


def test_an_override_without_equals_is_a_usage_error():
    with pytest.raises(UsageError, match=r"^override #2 is not KEY=VALUE$"):
        config.parse_overrides(["run.seed=1", "run.seed"])


def test_an_override_that_is_not_valid_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^override #1: backend.prefix: "):
        config.parse_overrides(["backend.prefix=>>"])


def test_out_of_range_values_are_rejected_with_their_source(hello, tmp_path):
    source = write(tmp_path, "zero.yaml", "agents:\n  greeter:\n    replicas: 0\n")
    with pytest.raises(ConfigError, match=r"zero.yaml:3: agents.greeter.replicas: must be at least 1, got 0"):
        resolve(hello, source)


def test_an_unknown_role_is_rejected(hello):
    with pytest.raises(ConfigError, match=r"agents.teacher: Key 'teacher' not in 'Agents'"):
        resolve(hello, *config.parse_overrides(["agents.teacher.replicas=2"]))


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("run:\n  seed: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:3: invalid YAML"):
        config.load_file(path)


def test_a_config_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list.yaml:1: a config file must be a mapping"):
        config.load_file(path)


def test_an_unknown_backend_type_lists_the_known_ones(hello):
    known = ", ".join(hello.registry.names("backends"))
    assert {"echo", "local", "openai"} <= set(hello.registry.names("backends"))
    with pytest.raises(ConfigError, match=rf"backend.type: unknown backend 'nope' \(known: {known}\)$"):
        resolve(hello, *config.parse_overrides(["backend.type=nope"]))


def test_an_unknown_sink_is_rejected_before_running(hello):
    known = ", ".join(hello.registry.names("sinks"))
    assert {"jsonl", "parquet"} <= set(hello.registry.names("sinks"))
    with pytest.raises(UsageError, match=rf"unknown sink 'csv' \(known: {known}\)"):
        resolve(hello, *config.parse_overrides(["output.sink=csv"]))


def test_a_role_backend_of_the_same_type_inherits_the_global_one(hello):
    overrides = config.parse_overrides(
        ["backend.model=m", "backend.prefix=global", "agents.greeter.backend.prefix=own"]
    )
    backend = resolve(hello, *overrides).role_backends["greeter"]
    assert (backend.type, backend.model, backend.prefix) == ("echo", "m", "own")


def test_a_role_without_overrides_uses_the_global_backend(hello):
    resolved = resolve(hello, *config.parse_overrides(["backend.model=m"]))
    assert resolved.role_backends["greeter"] == resolved.config.backend


def test_a_role_backend_is_validated_against_its_type(hello):
    with pytest.raises(ConfigError, match=r"agents.greeter.backend.temperature: Key 'temperature' not in 'EchoConfig'"):
        resolve(hello, *config.parse_overrides(["agents.greeter.backend.temperature=1"]))


def test_redaction_hides_every_secret_and_nothing_else(hello, tmp_path, monkeypatch):
    monkeypatch.setenv("HELLO_TEST_KEY", "sk-from-env")
    source = write(tmp_path, "secret.yaml", "backend:\n  api_key: ${oc.env:HELLO_TEST_KEY}\n  api_key_env: MY_KEY\n")
    overrides = config.parse_overrides(
        ["agents.greeter.backend.api_key=sk-role", "agents.greeter.backend.auth_token=t0k"]
    )
    with pytest.raises(ConfigError):  # auth_token is not an echo option: validation still runs before printing
        resolve(hello, source, *overrides)
    resolved = resolve(hello, source, *overrides[:1])
    text = resolved.to_yaml()
    assert "sk-from-env" not in text and "sk-role" not in text
    assert text.count("'***'") == 2
    assert "api_key_env: MY_KEY" in text, "the name of a variable is no secret"
    assert resolved.config.backend.api_key == "sk-from-env", "redaction is for display only"


SECRET_SHAPES = """\
backend:
  type: openai
  model: m
  base_url: https://user:pw-1@example.com/v1
  extra_body:
    api-key: secret-2
    Authorization: Bearer secret-3
    aws_secret_access_key: secret-4
    private_key: secret-5
    apikey: secret-6
    credentials: {user: u, pass: secret-7}
    passwd: secret-8
    hf_token: secret-9
    note: sk-live-secret10abcdefghij
    eos_token: </s>
    pad_token: <pad>
    max_tokens: 5
    command: [serve, --api-key, secret-11, --hf-token=secret-12, --port, "80"]
"""


def test_print_config_hides_each_kind_of_secret_and_shows_tokenizer_tokens(hello, tmp_path):
    source = write(tmp_path, "shapes.yaml", SECRET_SHAPES)
    workflow = hello.registry.get("orchestrators", "inference")
    overrides = config.parse_overrides(["backend.api_key=secret-14"])
    resolved = config.resolve(workflow, hello.registry, [source, *overrides])
    text = resolved.to_yaml()
    assert "secret-" not in text and "pw-1" not in text
    for line in [
        "base_url: https://***@example.com/v1",
        "api_key: '***'  # override",
        *(f"{key}: '***'" for key in ("api-key", "Authorization", "aws_secret_access_key", "private_key", "apikey")),
        *(f"{key}: '***'" for key in ("credentials", "passwd", "hf_token", "note")),
        "eos_token: </s>",
        "pad_token: <pad>",
        "max_tokens: 5",
        "command: [serve, --api-key, '***', --hf-token=***, --port, '80']",
    ]:
        assert line in text, line
    assert resolved.config.backend.extra_body.passwd == "secret-8", "redaction is for display only"
    assert config.is_secret("Authorization") and not config.is_secret("eos_token"), "the old names still work"


def test_no_override_error_repeats_the_override(hello):
    typed_alone = "sk-live-abcdefghijklmnopqrstuvwx"
    with pytest.raises(UsageError) as raised:
        config.parse_overrides(["run.seed=1", typed_alone])
    assert str(raised.value) == "override #2 is not KEY=VALUE"
    with pytest.raises(ConfigError) as raised:
        config.parse_overrides(["backend.api_key=[secret-1"])
    assert str(raised.value) == "override #1: backend.api_key: invalid value (not shown: a secret)"
    with pytest.raises(ConfigError) as raised:
        resolve(hello, *config.parse_overrides(["backend.api_key={secret: secret-2}"]))
    assert str(raised.value) == "override #1: backend.api_key: invalid value (not shown: a secret)"
    with pytest.raises(ConfigError) as raised:
        config.parse_overrides(["hello.greeting=${secret-3"])
    assert str(raised.value).startswith("override #1: hello.greeting: ") and "secret-3" not in str(raised.value)


# --- each section's check(), run once when resolved ------------------------------------------------------------


def checked_hello(hello):
    """The hello workflow with a schema of its own that refuses an empty greeting, as a plugin's would."""
    from matrix_hello.workflow import HelloConfig, HelloOrchestrator

    from matrix_core.registry import Component

    @dataclass
    class CheckedConfig(HelloConfig):
        def check(self) -> None:
            if not self.greeting.strip():
                raise config.ConfigProblem("greeting", "must not be empty", hint="say hello")

    @dataclass
    class CheckedHello(HelloOrchestrator):
        config_schema = CheckedConfig

    return Component("orchestrators", "hello", CheckedHello, "test")


def test_a_plugin_schemas_check_names_file_line_and_key(hello, tmp_path):
    source = write(tmp_path, "greet.yaml", "run:\n  seed: 3\nhello:\n  greeting: '  '\n")
    with pytest.raises(ConfigError) as raised:
        config.resolve(checked_hello(hello), hello.registry, [source])
    assert str(raised.value) == f"{tmp_path / 'greet.yaml'}:4: hello.greeting: must not be empty"
    assert raised.value.hint == "say hello"
    overrides = config.parse_overrides(["hello.greeting=Hi"])
    assert config.resolve(checked_hello(hello), hello.registry, [source, *overrides]).config.hello.greeting == "Hi"


def test_run_and_role_backend_checks_name_their_source(hello):
    with pytest.raises(ConfigError) as raised:
        resolve(hello, *config.parse_overrides(["run.seed=1", "run.max_concurrency=0"]))
    assert str(raised.value) == "override #2: run.max_concurrency: must be at least 1, got 0"
    overrides = config.parse_overrides(["agents.greeter.backend.type=local", "agents.greeter.backend.replicas=0"])
    with pytest.raises(ConfigError) as raised:
        resolve(hello, *overrides)
    assert str(raised.value) == "override #2: agents.greeter.backend.replicas: must be at least 1, got 0"


def test_check_section_words_a_problem_without_a_source():
    from matrix_core.backends.local import LocalConfig
    from matrix_core.backends.sglang import SGLangConfig

    config.check_section(LocalConfig(), "backend")
    with pytest.raises(ConfigError, match=r"^backend\.threads: must be at least 1, got 0$"):
        config.check_section(LocalConfig(threads=0), "backend")
    with pytest.raises(ConfigError, match=r"^x\.port_min\.\.port_max: 2\.\.1 is not a port range$"):
        config.check_section(SGLangConfig(port_min=2, port_max=1), "x")
    config.check_section({"no": "check"}, "plain")  # a section without check() passes


def test_sources_for_orders_files_flags_then_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("run: {seed: 1}\n")
    sources = config.sources_for([tmp_path / "a.yaml"], ["run.seed=3"], {"run": {"seed": 2}})
    assert [(source.label, source.kind) for source in sources] == [
        (str(tmp_path / "a.yaml"), "file"),
        ("command-line options", "flag"),
        ("override #1", "override"),
    ]
    assert [source.kind for source in config.sources_for([], ["run.seed=3"])] == ["override"], "no flags: no layer"


def test_the_backend_alone_is_merged_and_checked_as_in_a_run(tmp_path):
    from matrix_core.plugins import load_plugins

    registry = load_plugins().registry
    yaml_text = "run: {not_a_key: 1}\nbackend:\n  type: sglang\n  model: org/tiny\n  replicas: 0\n"
    source = write(tmp_path, "engine.yaml", yaml_text)
    with pytest.raises(ConfigError) as raised:
        config.resolve_backend(registry, [source])
    assert str(raised.value) == f"{tmp_path / 'engine.yaml'}:5: backend.replicas: must be at least 1, got 0"
    overrides = config.parse_overrides(["backend.replicas=2", "backend.port_max=10"])
    with pytest.raises(ConfigError, match=r"^override #2: backend.port_min..port_max: 30000..10 is not a port range$"):
        config.resolve_backend(registry, [source, *overrides])
    backend = config.resolve_backend(registry, [source, overrides[0]])
    assert (backend.type, backend.model, backend.replicas) == ("sglang", "org/tiny", 2), "run.* is not looked at"
    with pytest.raises(ConfigError, match=r"^override #1: backend.type: unknown backend 'nope'"):
        config.resolve_backend(registry, config.parse_overrides(["backend.type=nope"]))


def test_serve_names_the_file_and_line_of_a_bad_backend_value(tmp_path):
    from click.testing import CliRunner

    from matrix_core.cli import cli

    path = tmp_path / "serve.yaml"
    path.write_text("backend:\n  type: sglang\n  model: org/tiny\n  tensor_parallel_size: 0\n")
    result = CliRunner().invoke(cli, ["serve", "-c", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path}:4: backend.tensor_parallel_size: must be at least 1, got 0\n")
