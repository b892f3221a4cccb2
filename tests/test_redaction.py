"""Which keys and values are secrets, and how they are hidden (matrix_core.redaction)."""

from __future__ import annotations

import logging

import pytest

from matrix_core.redaction import RedactingFilter, is_secret_key, redact, redact_argv, redact_value

SECRET_KEYS = [
    "api_key", "apikey", "api-key", "x-api-key", "X-API-Key", "apiKey", "OPENAI_API_KEY", "Authorization",
    "proxy-authorization", "token", "hf_token", "HF_TOKEN", "access_token", "auth_token", "bearer_token",
    "aws_session_token", "X-Auth-Token", "secret", "client_secret", "aws_secret_access_key", "password", "passwd",
    "private_key", "credentials", "cookie", "Set-Cookie", "Ocp-Apim-Subscription-Key", "--api-key", "--hf-token",
]  # fmt: skip
PLAIN_KEYS = [
    "eos_token", "bos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token", "max_tokens",
    "stop_tokens", "tokenizer", "api_key_env", "password_file", "id_key", "key", "base_url", "model", "--port",
    "--eos-token", "secret_name",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_KEYS)
def test_a_secret_is_named_by_the_end_of_its_key(name):
    assert is_secret_key(name)


@pytest.mark.parametrize("name", PLAIN_KEYS)
def test_tokenizer_tokens_and_pointers_to_secrets_are_no_secrets(name):
    assert not is_secret_key(name)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://user:pw@example.com/v1", "https://***@example.com/v1"),
        ("git+https://ghtoken@github.com/o/r", "git+https://***@github.com/o/r"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
        ("key sk-live-abcdefghijklmnop1234 here", "key *** here"),
        ("sk-ant-api03-abcdefghijklmnopqrstu", "***"),
        ("sk-proj-abcdefghijklmnopqrstu", "***"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "***"),
        ("hf_abcdefghijklmnopqrstuvwxyz", "***"),
        ("id AKIAIOSFODNN7EXAMPLE.", "id ***."),
        ("xoxb-123456789012-abcdefghij", "***"),
        ("vllm serve m --api-key K1 --port 8000", "vllm serve m --api-key *** --port 8000"),
        ("--token=K2 --hf-token 'a b'", "--token=*** --hf-token ***"),
        ("backend.api_key=K3 backend.model=m", "backend.api_key=*** backend.model=m"),
        ("{'api_key': 'K4', 'api_key_env': 'VAR'}", "{'api_key': '***', 'api_key_env': 'VAR'}"),
        ('{"X-API-Key": "K5", "eos_token": "</s>"}', '{"X-API-Key": "***", "eos_token": "</s>"}'),
    ],
)
def test_a_secret_is_found_by_its_shape(text, shown):
    assert redact_value(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:8000/v1 answered 200",
        "mail me@example.com",
        "sk-short",
        "task-abcdefghijklmnopqrstuvwxyz",
        "max_tokens=16 eos_token=</s>",
        "--port 8000 --tokenizer t",
        "hf_model",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact_value(text) == text


def test_redact_walks_mappings_and_lists_and_hides_the_value_after_a_secret_flag():
    config = {
        "base_url": "https://u:p@h/v1",
        "api_key": "K1",
        "api_key_env": "VAR",
        "hf_token": None,
        "extra_body": {"Authorization": "x", "credentials": {"user": "u"}, "eos_token": "</s>", "max_tokens": 5},
        "server_command": ("vllm", "serve", "--api-key", "K2", "--eos-token", "</s>", "--token=K3"),
    }
    assert redact(config) == {
        "base_url": "https://***@h/v1",
        "api_key": "***",
        "api_key_env": "VAR",
        "hf_token": None,
        "extra_body": {"Authorization": "***", "credentials": "***", "eos_token": "</s>", "max_tokens": 5},
        "server_command": ["vllm", "serve", "--api-key", "***", "--eos-token", "</s>", "--token=***"],
    }
    assert config["api_key"] == "K1", "a copy"


def test_a_recorded_command_line_shows_no_override_value():
    argv = ["python", "-m", "matrix_core", "run", "inference", "-o", "o.jsonl", "backend.model=m", "a.b=Bearer x"]
    assert redact_argv([*argv, "--api-key", "K"]) == [*argv[:7], "backend.model=***", "a.b=***", "--api-key", "***"]


def test_the_log_filter_hides_secrets_in_messages_arguments_and_tracebacks():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_redaction.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling %s with %s", "https://u:pw@h/v1", {"api_key": "K1"})
        try:
            raise RuntimeError("rejected key sk-abcdefghijklmnopqrstuvwx")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records[0] == "calling https://***@h/v1 with {'api_key': '***'}"
    assert "RuntimeError: rejected key ***" in records[1]
    assert "K1" not in "".join(records) and "sk-abc" not in "".join(records)
