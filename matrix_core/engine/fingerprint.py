"""The fingerprint of a run, kept beside its output in ``<stem>.run.json``, so that ``--resume`` continues the run
that wrote the output and not a different one.

It holds a sha256 of the input's bytes and the settings that shape the records: the resolved configuration as
dotted keys, except those in :data:`UNTRACKED` and secrets (which are never written). The input's hash streams
every file it reads (with the files' names when the input is several), so it costs one read of the input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from matrix_core.config import InputConfig, is_secret, redact
from matrix_core.engine.inputs import HUB, input_files
from matrix_core.errors import MatrixError
from matrix_core.sinks.base import companion, replace_atomically

UNTRACKED = (
    "run.*",
    "output.*",
    "input.path",
    "input.skip_bad_rows",
    "backend.base_url",
    "agents.*.backend.base_url",
    "backend.max_concurrency",
    "agents.*.backend.max_concurrency",
    "backend.price_*",
    "agents.*.backend.price_*",
    "agents.*.replicas",
    "agents.*.max_in_flight",
    "agents.*.routing",
)
"""Settings that may change on ``--resume``: how the run is driven, where it writes, which file holds the input
(its content is tracked), where the backend answers, what it costs and how many actors serve a role. They change how
fast, where and at what price records are made, not what a record holds."""
SHOWN = 3
"""Changes named in a refusal; the rest are counted."""
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class InputDigest:
    """The input as a stream of bytes (each file's name before its bytes when there are several): its length and
    sha256."""

    size: int
    sha256: str


@dataclass(frozen=True)
class Fingerprint:
    """What a run reads and the settings that shape its records."""

    input: InputDigest
    settings: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> Fingerprint | None:
        """The fingerprint stored at ``path``, or None if there is none."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(InputDigest(**data["input"]), dict(data["settings"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as error:
            raise MatrixError(
                f"{path}: not a run fingerprint ({error.__class__.__name__})",
                hint="pass --force to resume anyway (the file is then rewritten)",
            ) from None

    def save(self, path: Path) -> None:
        """Write to ``path`` atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with replace_atomically(path) as file:
            file.write((json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n").encode())


def fingerprint_path(config: DictConfig) -> Path:
    """``<stem>.run.json`` beside the run's output."""
    return companion(Path(config.output.path).expanduser(), "run.json")


def settings(config: DictConfig) -> dict[str, Any]:
    """The tracked settings of ``config``: dotted keys to JSON values, without :data:`UNTRACKED` keys or secrets
    (a rotated key is not a change)."""
    flat: dict[str, Any] = {}

    def walk(node: dict[Any, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, dotted + ".")
            elif not is_secret(key) and not any(fnmatchcase(dotted, pattern) for pattern in UNTRACKED):
                flat[dotted] = value

    tree = OmegaConf.to_container(redact(config), resolve=True, enum_to_str=True)
    assert isinstance(tree, dict)
    walk(tree, "")
    return json.loads(json.dumps(flat, default=str))  # as stored: a value compares equal once read back


def digest_input(config: InputConfig, prefix: int | None = None) -> tuple[InputDigest, str | None]:
    """The digest of the input ``config`` names and, when ``prefix`` is given, the sha256 of its first ``prefix``
    bytes (None if it has fewer), which tells an input that grew at its end from one that changed."""
    whole = hashlib.sha256()
    start = whole.hexdigest() if prefix == 0 else None
    size = 0
    for chunk in _stream(config):
        if prefix is not None and start is None and size + len(chunk) >= prefix:
            head = whole.copy()
            head.update(chunk[: prefix - size])
            start = head.hexdigest()
        whole.update(chunk)
        size += len(chunk)
    return InputDigest(size, whole.hexdigest()), start


def _stream(config: InputConfig) -> Iterator[bytes]:
    """The bytes of every file the input reads; with several, each file's name (relative to the input) first."""
    assert config.path is not None
    if config.path.startswith(HUB):  # its name, with input.hf.* among the tracked settings: pin input.hf.revision
        yield config.path.encode()
        return
    given = Path(config.path).expanduser()
    files = input_files(dataclasses.replace(config, path=str(given)))
    # names, so that renaming a shard is a change; relative, so that moving the input is not
    root = given if given.is_dir() else Path(os.path.commonpath(files)) if len(files) > 1 else None
    for file in files:
        if root is not None:
            yield str(file.relative_to(root)).encode() + b"\0"
        with file.open("rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                yield chunk


def check_and_record(config: DictConfig, has_records: bool) -> None:
    """Record the run's fingerprint when it begins. On ``--resume`` over finished records with a fingerprint
    stored, first refuse, unless ``run.force``, when the input or a tracked setting changed since the run began."""
    path = fingerprint_path(config)
    input_config: InputConfig = OmegaConf.to_object(config.input)
    current = settings(config)
    stored = Fingerprint.load(path) if config.run.resume and has_records and not config.run.force else None
    if stored is None:
        Fingerprint(digest_input(input_config)[0], current).save(path)
        return
    digest, start = digest_input(input_config, prefix=stored.input.size)
    changes = [
        (key, f"{_shown(stored.settings, key)} -> {_shown(current, key)}")
        for key in sorted(stored.settings.keys() | current.keys())
        if stored.settings.get(key, _UNSET) != current.get(key, _UNSET)
    ]
    if start != stored.input.sha256:  # rows added at the end are not a change: the run goes on to them
        changes.insert(0, ("the input", str(config.input.path)))
    if changes:
        raise MatrixError(f"--resume: {_changed(changes)}; pass --force to resume anyway")
    if digest != stored.input:
        Fingerprint(digest, current).save(path)


_UNSET = object()


def _shown(values: dict[str, Any], key: str, width: int = 40) -> str:
    if key not in values:
        return "unset"
    text = json.dumps(values[key], ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def _changed(changes: list[tuple[str, str]]) -> str:
    """``a changed since the run began (1 -> 2)``, as one sentence for one change or several."""
    if len(changes) == 1:
        subject, detail = changes[0]
        return f"{subject} changed since the run began ({detail})"
    shown, more = [f"{subject} ({detail})" for subject, detail in changes[:SHOWN]], len(changes) - SHOWN
    listed = ", ".join(shown) + f" and {more} more" if more > 0 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return f"{listed} changed since the run began"
