"""The id sets that keep the engine's memory flat: an exact set on disk, and finished ids as sorted hashes."""

from __future__ import annotations

import resource
import tempfile
from random import Random

import numpy as np
import pytest

from matrix_core.engine.idsets import FinishedIds, IdStore, id_hash, id_hashes
from matrix_core.errors import MatrixError


def test_an_id_store_is_exact_and_remembers_where_each_id_was_first_seen():
    store = IdStore()
    assert store.add("a", "in.jsonl:1") is None
    assert store.add("b", "in.jsonl:2") is None
    assert store.add("a", "in.jsonl:9") == "in.jsonl:1"
    store.update(["c", "a"])
    assert ("a" in store, "c" in store, "z" in store) == (True, True, False)
    assert len(store) == 3
    store.close()


def test_an_id_store_holds_a_million_ids_without_holding_them_in_memory():
    store = IdStore()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.update(f"row-{index:09d}" for index in range(1_000_000))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert len(store) == 1_000_000 and "row-000765432" in store
    assert grown_kib < 40_000, f"{grown_kib} KiB: a million ids in a Python set take about 100 MB"
    store.close()


def test_finished_ids_find_each_id_by_its_position_the_same_everywhere():
    finished = FinishedIds.of([["b", "a"], ["c", "a"]])
    assert len(finished) == 3
    assert ("a" in finished, "c" in finished, "d" in finished, 5 in finished) == (True, True, False, False)
    positions = finished.positions(["c", "x", "a", "b"])
    assert positions[1] == -1
    assert sorted(positions[[0, 2, 3]].tolist()) == [0, 1, 2], "each finished id has its own position"
    assert finished.position("c") == positions[0]
    again = FinishedIds(np.array(finished.hashes))  # what another process gets from the object store
    assert again.position("a") == finished.position("a")


def test_nothing_is_finished_in_a_run_that_does_not_resume():
    empty = FinishedIds.empty()
    assert (len(empty), "a" in empty, empty.position("a"), empty.positions(["a", "b"]).tolist()) == (
        0,
        False,
        -1,
        [-1, -1],
    )


def test_an_ids_hash_does_not_depend_on_the_process():
    assert id_hash("row-1") == 0xCADEB475A56991EC, (
        "a fixed function, not Python's hash(), which each process seeds anew"
    )
    assert id_hash("row-1") != id_hash("row-2")
    assert id_hash("\ud800") != id_hash("")  # a lone surrogate, which UTF-8 cannot encode, still hashes


def test_ids_hashed_together_hash_as_each_alone():
    random = Random(7)
    alphabet = "abcXYZ09-_/:é漢🙂\x00"
    ids = ["", "a", "a\x00", "abcdefgh", "abcdefghi", "x" * 1000]
    ids += ["".join(random.choice(alphabet) for _ in range(random.randint(0, 40))) for _ in range(5000)]
    assert id_hashes(ids).tolist() == [id_hash(task_id) for task_id in ids]
    assert id_hashes(["a", "\ud800"]).tolist() == [id_hash("a"), id_hash("\ud800")], "one by one then"
    assert len(set(id_hashes(ids).tolist())) == len(set(ids))


def test_an_id_store_keeps_ids_and_notes_that_utf8_cannot_encode():
    store = IdStore()
    assert store.add("\ud800", "dir-\udcff/in.jsonl:1") is None  # a lone surrogate; a file name that is not UTF-8
    assert store.add("\ud800", "x") == "dir-\udcff/in.jsonl:1"
    assert "\ud800" in store and "\ud801" not in store


def test_an_id_store_that_cannot_grow_is_one_line_naming_where(monkeypatch, small_disk):
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk))
    store = IdStore()
    with pytest.raises(MatrixError, match=rf"^cannot keep task ids in a temporary file in {small_disk}: \w") as raised:
        store.update(f"row-{index:09d}-{'x' * 40}" for index in range(400_000))  # past the page cache: the file
    store.close()  # the file is open until then: the disk would stay busy
    assert raised.value.hint.startswith("free space there")
