"""Datasets by name (``input.path=hf://OWNER/NAME``), streamed with the ``datasets`` library. Offline: the tests write
a dataset folder (data files and a dataset card naming its configs and splits) and read it as ``hf:///that/folder``,
through the same ``load_dataset(..., streaming=True)`` call a name on the Hub takes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported: nothing may leave this machine
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from matrix_core.cli import cli
from matrix_core.config import HubConfig, InputConfig
from matrix_core.engine.inputs import Shard, read_rows
from matrix_core.errors import MatrixError
from matrix_core.testing import FakeOpenAIServer

CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: "data/train-*.jsonl"
  - split: test
    path: "data/test-*.jsonl"
- config_name: small
  data_files:
  - split: train
    path: "small/*.jsonl"
---
# A dataset written by a test
"""


def write_dataset(folder: Path) -> Path:
    """Three train files of 4, 5 and 6 rows, a test file, and a second config: as a dataset repository holds them."""
    (folder / "data").mkdir(parents=True)
    (folder / "small").mkdir()
    first = 0
    for number, count in enumerate([4, 5, 6]):
        rows = [{"id": f"r{first + index}", "text": f"row {first + index}"} for index in range(count)]
        write_lines(folder / "data" / f"train-{number:05d}.jsonl", rows)
        first += count
    write_lines(folder / "data" / "test-00000.jsonl", [{"id": "q0", "text": "a test row"}])
    write_lines(folder / "small" / "only.jsonl", [{"id": "s0", "text": "small"}])
    (folder / "README.md").write_text(CARD)
    return folder


def write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def hub_rows(folder: Path, shard: Shard | None = None, **hub: str) -> list:
    return list(read_rows(InputConfig(path=f"hf://{folder}", hf=HubConfig(**hub)), shard=shard or Shard()))


def test_a_dataset_by_name_streams_its_split_each_row_named_by_file_and_number(tmp_path):
    folder = write_dataset(tmp_path / "org-data")
    rows = hub_rows(folder)
    assert sorted(row.id for row in rows) == sorted(f"r{index}" for index in range(15))
    first = next(row for row in rows if row.id == "r4")
    assert first.data == {"id": "r4", "text": "row 4"}
    assert first.where.startswith(f"hf://{folder}:train/") and first.where.endswith(":row 0")


def test_config_and_split_choose_what_is_read(tmp_path):
    folder = write_dataset(tmp_path / "org-data")
    assert [row.id for row in hub_rows(folder, split="test")] == ["q0"]
    assert [row.id for row in hub_rows(folder, config="small")] == ["s0"]


def test_partitions_share_a_datasets_files_each_read_once(tmp_path):
    folder = write_dataset(tmp_path / "org-data")
    whole = hub_rows(folder)
    parts = [hub_rows(folder, Shard(index, 2)) for index in range(2)]
    assert sorted(row.where for part in parts for row in part) == sorted(row.where for row in whole)
    assert all(part for part in parts), "each partition got a file"
    files = [{row.where.rsplit(":", 1)[0] for row in part} for part in parts]
    assert not files[0] & files[1], "no file is read by both"


def test_an_unknown_split_or_dataset_is_one_line_naming_it(tmp_path):
    folder = write_dataset(tmp_path / "org-data")
    with pytest.raises(MatrixError) as raised:
        hub_rows(folder, split="validation")
    assert str(raised.value).startswith(f"input.path: cannot open hf://{folder} (")
    assert "\n" not in str(raised.value)
    with pytest.raises(MatrixError) as raised:
        hub_rows(tmp_path / "nothing-here")
    assert str(raised.value).startswith(f"input.path: cannot open hf://{tmp_path / 'nothing-here'} (")


def test_without_the_datasets_library_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MatrixError) as raised:
        hub_rows(write_dataset(tmp_path / "org-data"))
    assert "is read with the datasets library, which is not installed" in str(raised.value)
    assert raised.value.hint == "pip install 'matrix-core[hf]'"


def test_matrix_run_reads_a_dataset_by_name_and_resumes_it(ray_session, tmp_path):
    folder = write_dataset(tmp_path / "org-data")
    output = tmp_path / "out.jsonl"
    with FakeOpenAIServer().in_thread() as server:
        args = [
            "run",
            "inference",
            "-i",
            f"hf://{folder}",
            "-o",
            str(output),
            "-q",
            f"backend.base_url={server.base_url}",
        ]
        first = CliRunner().invoke(cli, [*args, "run.partitions=2"])
        assert first.exit_code == 0, first.output
        again = CliRunner().invoke(cli, [*args, "--resume", "run.partitions=2"])
        assert again.exit_code == 0, again.output
        chats = len([request for request in server.requests if request.path.endswith("/chat/completions")])
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(record["id"] for record in records) == sorted(f"r{index}" for index in range(15))
    assert chats == 15, "the resumed run found every row finished"
