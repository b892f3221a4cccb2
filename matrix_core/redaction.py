"""Which values are secrets, and how Matrix hides them wherever it shows or writes its own values: ``--print-config``,
the CLI's errors and logs, ``<stem>.metrics.json``, the run fingerprint, cluster state and Ray's record of the
driver's command line. Records, the user's own data, are never rewritten.

A value is a secret for one of two reasons.

**Its key's name** (:func:`is_secret_key`). The name is cut into lowercase words (``-``, ``_``, ``.`` and camelCase
all separate words; leading dashes of a flag are dropped), and it is a secret when its last words are one of
:data:`SECRET_NAMES` (``x-api-key``, ``proxy-authorization``, ``aws_secret_access_key``, ``client_secret``, ...), or
when its last word is ``token`` and the word before it is not one of :data:`VOCABULARY_TOKENS` (``hf_token``,
``access_token`` and ``token`` are secrets; ``eos_token``, ``pad_token`` are not; ``max_tokens`` does not end with
the word ``token``). Only the end of a name counts, so that ``api_key_env`` (a variable's name) or
``password_file`` (a path) stay visible.

**Its shape** (:func:`redact_value`): credentials in a URL (``https://user:pw@host``), ``Bearer <token>``, the key
formats in :data:`KEY_SHAPES` (OpenAI/Anthropic ``sk-``, GitHub ``ghp_``, Hugging Face ``hf_``, AWS ``AKIA``, Slack
``xoxb-``, Google ``AIza``), the value after a secret flag (``--api-key K``, ``--token=K``) and a secret
assignment (``backend.api_key=K``, ``"Authorization": "..."``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"

SECRET_NAMES = (
    "password",
    "passwords",
    "passwd",
    "passphrase",
    "secret",
    "secrets",
    "credential",
    "credentials",
    "cookie",
    "cookies",
    "authorization",
    "apikey",
    "api key",
    "private key",
    "secret key",
    "access key",
    "signing key",
    "subscription key",
)
"""Word sequences that make a key a secret when its name ends with them (``x-api-key`` ends with ``api key``)."""

VOCABULARY_TOKENS = frozenset(
    {"eos", "bos", "pad", "unk", "sep", "cls", "mask", "stop", "start", "end", "eot", "eom"}
    | {"image", "audio", "video", "vision", "special", "tool", "think", "placeholder"}
)
"""Words that, before ``token``, name a tokenizer's token rather than a credential (``eos_token``)."""

KEY_SHAPES = (
    r"sk-[A-Za-z0-9_-]{16,}",  # OpenAI (sk-proj-...), Anthropic (sk-ant-...) and many OpenAI-compatible services
    r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"hf_[A-Za-z0-9]{20,}",  # Hugging Face
    r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])",  # AWS access key ids
    r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"AIza[0-9A-Za-z_-]{35}",  # Google API keys
)
"""Regular expressions of well-known key formats, hidden wherever they appear in a text Matrix shows or writes."""

_ACRONYM = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])|(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")
_SECRET_NAMES = tuple(tuple(name.split()) for name in SECRET_NAMES)
_URL_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/?#\s@'\"]+@", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer)\s+[^\s'\",;]+", re.IGNORECASE)
_SHAPES = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(KEY_SHAPES) + ")")
_VALUE = r"(?:\"[^\"]*\"|'[^']*'|[^\s'\",;}\]]+)"
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)(=|\s+)(?!-)(" + _VALUE + ")")
_ASSIGNMENT = re.compile(r"(?<![\w.-])([A-Za-z_][\w.-]*)(=)(" + _VALUE + ")")
_QUOTED_KEY = re.compile(r"([\"'])([\w.-]+)\1(\s*:\s*)(\"[^\"]*\"|'[^']*'|[^\s,}\]]+)")


def _words(name: str) -> list[str]:
    return [word for word in _SEPARATORS.split(_ACRONYM.sub("_", name).lower()) if word]


def is_secret_key(name: object) -> bool:
    """Whether a config key, header or flag name (``api_key``, ``X-API-Key``, ``--hf-token``) names a secret."""
    if not isinstance(name, str):
        return False
    words = _words(name)
    if not words:
        return False
    if words[-1] == "token":
        return len(words) == 1 or words[-2] not in VOCABULARY_TOKENS
    return any(tuple(words[-len(secret) :]) == secret for secret in _SECRET_NAMES)


def _is_secret_flag(item: object) -> bool:
    return isinstance(item, str) and item.startswith("-") and "=" not in item and is_secret_key(item)


def redact_value(text: str) -> str:
    """``text`` with every secret found by its shape replaced by ``***`` (see the module's docstring)."""
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _SHAPES.sub(REDACTED, text)
    text = _FLAG.sub(_hide_if_secret, text)
    text = _ASSIGNMENT.sub(_hide_if_secret, text)
    return _QUOTED_KEY.sub(_hide_quoted_if_secret, text)


def _hide_if_secret(match: re.Match[str]) -> str:
    name, separator, value = match.groups()
    if not is_secret_key(name.rpartition(".")[2]) or value.strip("'\"") == REDACTED:
        return match.group(0)
    return f"{name}{separator}{REDACTED}"


def _hide_quoted_if_secret(match: re.Match[str]) -> str:
    quote, name, separator, value = match.groups()
    if not is_secret_key(name.rpartition(".")[2]) or value in ("null", "None"):
        return match.group(0)
    return f"{quote}{name}{quote}{separator}{quote}{REDACTED}{quote}"


def redact(value: Any) -> Any:
    """A copy of ``value`` (mappings, lists and tuples walked, as plain dicts and lists) where each value of a
    secret key, each value after a secret flag in a list (``["--api-key", "K"]``) and each secret inside a string
    (keys included: metrics count error messages by name) is ``***``. ``None`` stays ``None``: an unset secret is
    shown as unset."""
    if isinstance(value, Mapping):
        return {
            redact(key): REDACTED if is_secret_key(key) and item is not None else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        shown = []
        for index, item in enumerate(value):
            after_flag = index > 0 and _is_secret_flag(value[index - 1]) and isinstance(item, str)
            shown.append(REDACTED if after_flag else redact(item))
        return shown
    if isinstance(value, str):
        return redact_value(value)
    return value


def redact_argv(argv: list[str]) -> list[str]:
    """A command line to show or record: ``redact`` with every ``KEY=VALUE`` item's value hidden as well, secret or
    not, since an override's value is the user's business (``backend.model=m`` gives ``backend.model=***``)."""
    shown = redact(argv)
    return [
        f"{item.partition('=')[0]}={REDACTED}" if "=" in item and not item.startswith("-") else item for item in shown
    ]


class RedactingFilter(logging.Filter):
    """A handler's filter that hides secrets (by shape, see :func:`redact_value`) in each record's message,
    traceback and stack; the CLI puts it on every handler it configures."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: the handler reports it, as without this filter
            return True
        shown = redact_value(message)
        if shown != message:
            record.msg, record.args = shown, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_value(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_value(record.stack_info)
        return True
