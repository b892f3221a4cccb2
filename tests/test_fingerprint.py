"""The run's fingerprint: which settings it tracks, and how the input's bytes are hashed."""

from __future__ import annotations

import json

import pyarrow as pa

from matrix_core import config
from matrix_core.config import InputConfig
from matrix_core.engine.fingerprint import Fingerprint, InputDigest, digest_input, fingerprint_path, settings
from matrix_core.plugins import load_plugins


def resolve(*overrides: str):
    registry = load_plugins().registry
    workflow = registry.get("orchestrators", "inference")
    return config.resolve(workflow, registry, config.parse_overrides(overrides)).config


def test_settings_are_dotted_json_values_without_the_free_ones_or_secrets(tmp_path):
    tracked = settings(
        resolve(
            "input.path=in.jsonl", "input.skip_bad_rows=true", "backend.base_url=http://x/v1", "backend.model=m",
            "backend.api_key=sk-test-SECRET", "agents.model.replicas=3", "agents.model.backend.api_key=sk-role-SECRET",
            "inference.system_prompt=Be brief.", "run.max_concurrency=7", f"output.path={tmp_path / 'o.jsonl'}",
        )
    )  # fmt: skip
    assert tracked["backend.model"] == "m"
    assert tracked["inference.system_prompt"] == "Be brief."
    assert tracked["input.id_key"] == "id" and tracked["workflow"] == "inference"
    assert not [key for key in tracked if key.startswith(("run.", "output."))]
    for free in ("input.path", "input.skip_bad_rows", "backend.base_url", "agents.model.replicas"):
        assert free not in tracked
    assert "SECRET" not in json.dumps(tracked) and "backend.api_key" not in tracked
    json.dumps(tracked)  # every value is JSON


def test_the_fingerprint_lives_beside_the_output(tmp_path):
    assert fingerprint_path(resolve(f"output.path={tmp_path / 'out.jsonl'}")) == tmp_path / "out.run.json"


def test_a_single_file_is_hashed_by_content_not_name(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"id": 1}\n')
    (tmp_path / "b.jsonl").write_bytes(b'{"id": 1}\n')
    first, _ = digest_input(InputConfig(path=str(tmp_path / "a.jsonl")))
    assert first == digest_input(InputConfig(path=str(tmp_path / "b.jsonl")))[0]
    assert first.size == 10
    (tmp_path / "b.jsonl").write_bytes(b'{"id": 2}\n')
    assert digest_input(InputConfig(path=str(tmp_path / "b.jsonl")))[0] != first


def test_the_head_of_a_grown_input_matches_the_old_digest(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": 1}\n' * 3)
    old, _ = digest_input(InputConfig(path=str(path)))
    with path.open("ab") as file:
        file.write(b'{"id": 4}\n')
    new, head = digest_input(InputConfig(path=str(path)), prefix=old.size)
    assert head == old.sha256 and new != old
    path.write_bytes(b'{"id": 1}\n')
    assert digest_input(InputConfig(path=str(path)), prefix=old.size)[1] is None, "shorter: not the same head"
    path.write_bytes(b"")
    empty, _ = digest_input(InputConfig(path=str(path)))
    assert digest_input(InputConfig(path=str(path)), prefix=0)[1] == empty.sha256


def test_the_shards_of_a_directory_or_a_glob_count_with_their_names(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.jsonl").write_bytes(b'{"id": 1}\n')
    (shards / "b.jsonl").write_bytes(b'{"id": 2}\n')
    by_dir, _ = digest_input(InputConfig(path=str(shards)))
    by_glob, _ = digest_input(InputConfig(path=str(shards / "*.jsonl")))
    assert by_dir == by_glob, "names relative to the input: a directory and a glob over it agree"
    (shards / "b.jsonl").rename(shards / "c.jsonl")
    assert digest_input(InputConfig(path=str(shards)))[0] != by_dir
    moved = tmp_path / "moved"
    shards.rename(moved)
    (moved / "c.jsonl").rename(moved / "b.jsonl")
    assert digest_input(InputConfig(path=str(moved)))[0] == by_dir, "moving the directory is no change"


def test_a_datasets_directory_is_hashed_by_the_arrow_files_it_reads(tmp_path):
    directory = tmp_path / "ds"
    directory.mkdir()

    def save(rows):
        table = pa.Table.from_pylist(rows)
        with pa.ipc.new_stream(directory / "data-00000-of-00001.arrow", table.schema) as writer:
            writer.write_table(table)

    save([{"id": "a", "text": "x"}])
    (directory / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    first, _ = digest_input(InputConfig(path=str(directory)))
    (directory / "cache-123.arrow").write_bytes(b"not read")
    assert digest_input(InputConfig(path=str(directory)))[0] == first
    save([{"id": "a", "text": "y"}])
    assert digest_input(InputConfig(path=str(directory)))[0] != first


def test_a_fingerprint_is_saved_atomically_and_read_back(tmp_path):
    path = tmp_path / "sub" / "out.run.json"
    saved = Fingerprint(InputDigest(3, "abc"), {"inference.system_prompt": "x", "agents.model.routing": "sticky"})
    saved.save(path)
    assert Fingerprint.load(path) == saved
    assert [child.name for child in path.parent.iterdir()] == ["out.run.json"]
    assert Fingerprint.load(tmp_path / "none.run.json") is None
