"""Collector without Ray: which rows it admits, how many at once, and how it re-admits the tasks a dead actor took
with it. Its agents are :class:`~engine_doubles.FinishingAgent` (every task ends ``success`` at once) and its writer
a :class:`~engine_doubles.FakeWriter`."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from engine_doubles import FakeWriter, FinishingAgent, LocalHandle, run_async, settle, wait_until
from toy_workflow import ToyOrchestrator

from matrix_core.config import InputConfig, RunConfig
from matrix_core.engine.collector import Collector
from matrix_core.engine.idsets import FinishedIds
from matrix_core.errors import BadRowError
from matrix_core.orchestrator import Orchestrator

TOY = "toy_workflow:ToyOrchestrator"
ROW_ID = f"{__name__}:RowIdOrchestrator"


@dataclass
class RowFaultOrchestrator(ToyOrchestrator):
    """A toy task whose ``from_row`` raises for a row with ``explode``."""

    @classmethod
    def from_row(cls, id: str, row: dict[str, Any], config: Any) -> ToyOrchestrator:
        if row.get("explode"):
            raise ValueError(f"cannot build {id}")
        return super().from_row(id, row, config)


@dataclass
class TwiceOrchestrator(ToyOrchestrator):
    """A toy task run twice per row, as ``<id>/0`` and ``<id>/1``."""

    @classmethod
    def expand_row(cls, id: str, row: dict[str, Any], config: Any) -> list[tuple[str, dict[str, Any]]]:
        return [(f"{id}/{run}", row) for run in range(2)]


@dataclass
class RowIdOrchestrator(ToyOrchestrator):
    """A toy task whose id is its row's (the default ``expand_row``): a resume passes its finished rows in blocks."""

    expand_row = classmethod(Orchestrator.expand_row.__func__)


@dataclass
class Setup:
    """Collectors of every partition over one input, sharing one agent; one fake writer each."""

    collectors: list[Collector]
    writers: list[FakeWriter]
    agent: FinishingAgent

    async def admit_all(self) -> list[Any]:
        """Every partition's ``admit_all``, run together; their counts."""
        return list(await asyncio.gather(*(c.admit_all() for c in self.collectors)))

    def written(self, partition: int = 0) -> dict[str, dict[str, Any] | None]:
        return self.writers[partition].records


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def ids(count: int) -> list[dict[str, Any]]:
    return [{"id": f"t{i}"} for i in range(count)]


def make(
    tmp_path: Path,
    rows: list[dict[str, Any]],
    agent: FinishingAgent | None = None,
    workflow: str = TOY,
    finished: Collection[str] = (),
    **run: Any,
) -> Setup:
    """Build (inside the running loop) a collector per ``run.partitions`` over ``rows``, started on ``agent``;
    ``finished``: the ids an earlier run finished."""
    source = write_rows(tmp_path / "in.jsonl", rows)
    run_config = RunConfig(**run)
    agent = agent or FinishingAgent()
    writers = [FakeWriter() for _ in range(run_config.partitions)]
    collectors = [
        Collector(
            partition,
            workflow,
            None,
            InputConfig(path=str(source)),
            run_config,
            LocalHandle(writer),
            FinishedIds.of([list(finished)]),
        )
        for partition, writer in enumerate(writers)
    ]
    handles = [LocalHandle(collector, name=f"collector {c}") for c, collector in enumerate(collectors)]
    agent.collectors = handles
    agents = {role: [LocalHandle(agent)] for role in ToyOrchestrator.roles}
    for collector in collectors:
        collector.start(agents, {}, handles)
    return Setup(collectors, writers, agent)


def test_each_partition_admits_only_its_own_rows(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(7), partitions=2)
        counts = await setup.admit_all()
        return setup, counts

    setup, counts = run_async(scenario())
    assert sorted(setup.written(0)) == ["t0", "t1", "t2", "t3"]  # the first half of the file's bytes
    assert sorted(setup.written(1)) == ["t4", "t5", "t6"]
    assert [c.admitted for c in counts] == [4, 3]
    assert all(record["status"] == "success" for w in setup.writers for record in w.records.values())


def test_never_more_than_max_concurrency_tasks_are_in_flight(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(20), FinishingAgent(turns=3), max_concurrency=3)
        (counts,) = await setup.admit_all()
        return setup, counts

    setup, counts = run_async(scenario())
    assert len(setup.written()) == 20
    assert setup.agent.most_held == 3, "the agent held as many as allowed, and never more"
    assert counts.peak_in_flight == 3
    assert counts.admitted == 20


def test_admission_stops_at_the_limit_until_a_task_finishes(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(5), FinishingAgent(hold=True), max_concurrency=2)
        admission = asyncio.ensure_future(setup.admit_all())
        await wait_until(lambda: len(setup.agent.held) == 2, what="two tasks admitted")
        await settle()
        held_at_limit = sorted(setup.agent.holding())
        while not admission.done():
            await setup.agent.release()
            await settle()
        return held_at_limit, sorted(setup.written())

    held_at_limit, written = run_async(scenario())
    assert held_at_limit == ["t0", "t1"]
    assert written == [f"t{i}" for i in range(5)]


def test_finished_ids_are_skipped_and_counted(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(6), finished={"t1", "t4"})
        (counts,) = await setup.admit_all()
        return setup, counts

    setup, counts = run_async(scenario())
    assert sorted(setup.written()) == ["t0", "t2", "t3", "t5"]
    assert setup.agent.received == ["t0", "t2", "t3", "t5"]
    assert (counts.admitted, counts.skipped_finished) == (4, 2)


@pytest.mark.parametrize(
    ("rows", "partitions", "second", "first"),
    [
        ([{"id": "a"}, {"id": "b"}, {"id": "a"}], 1, 3, 1),
        # 3,000 rows apart: the second is read by another partition than the first, and checked by the id's owner
        ([{"id": f"a{index}"} for index in range(3000)] + [{"id": "a7"}], 3, 3001, 8),
    ],
    ids=["one-partition", "across-partitions"],
)
def test_a_duplicate_id_stops_the_run_naming_both_rows(tmp_path, rows, partitions, second, first):
    async def scenario():
        setup = make(tmp_path, rows, partitions=partitions)
        await setup.admit_all()

    source = tmp_path / "in.jsonl"
    with pytest.raises(BadRowError) as raised:
        run_async(scenario())
    task_id = rows[second - 1]["id"]
    assert str(raised.value) == f"{source}:{second}: duplicate id {task_id!r} (first at {source}:{first})"


def test_each_partition_checks_the_ids_it_owns_whoever_read_them(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(3000), partitions=3)
        await setup.admit_all()
        return setup

    setup = run_async(scenario())
    owned = [collector.duplicates.first_seen for collector in setup.collectors]
    every = [f"t{index}" for index in range(3000)]
    assert all(sum(task_id in ids for ids in owned) == 1 for task_id in every), "each id has one owner"
    assert all(900 <= len(ids) <= 1100 for ids in owned), [len(ids) for ids in owned]
    read_by = {task_id: partition for partition, writer in enumerate(setup.writers) for task_id in writer.records}
    assert any(
        read_by[task_id] != partition for partition, ids in enumerate(owned) for task_id in every if task_id in ids
    )


def test_with_a_limit_partitions_take_turns_among_the_first_rows(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(10), partitions=2, limit=5)
        await setup.admit_all()
        return setup

    setup = run_async(scenario())
    assert sorted(setup.written(0)) == ["t0", "t2", "t4"]
    assert sorted(setup.written(1)) == ["t1", "t3"]


def test_a_from_row_that_raises_ends_only_its_task_as_error(tmp_path):
    async def scenario():
        rows = [{"id": "t0"}, {"id": "t1", "explode": True}, {"id": "t2"}]
        setup = make(tmp_path, rows, workflow=f"{__name__}:RowFaultOrchestrator")
        await setup.admit_all()
        return setup

    setup = run_async(scenario())
    written = setup.written()
    assert sorted(written) == ["t0", "t1", "t2"]
    assert written["t0"]["status"] == written["t2"]["status"] == "success"
    failed = written["t1"]
    assert (failed["id"], failed["status"]) == ("t1", "error")
    assert "RowFaultOrchestrator.from_row raised ValueError: cannot build t1" in failed["reason"]
    assert "t1" not in setup.agent.received
    assert setup.collectors[0].in_flight == {}, "its admission slot is free again"


def test_restart_admits_an_in_flight_task_again_from_its_row(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(3), FinishingAgent(hold=True))
        collector = setup.collectors[0]
        admission = asyncio.ensure_future(setup.admit_all())
        await wait_until(lambda: len(setup.agent.held) == 3, what="three tasks admitted")
        collector.restart("t1")
        collector.restart("not-in-flight")
        await wait_until(lambda: len(setup.agent.held) == 4, what="t1 sent again")
        await setup.agent.release()
        (counts,) = await admission
        return setup, counts

    setup, counts = run_async(scenario())
    assert sorted(setup.agent.received) == ["t0", "t1", "t1", "t2"]
    assert counts.readmitted == 1
    assert counts.admitted == 3, "a re-admission is not a new admission"
    assert len(setup.writers[0].written) == 3, "the second copy of t1 is ignored"


def test_readmit_admits_again_the_tasks_no_live_actor_holds(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(4), FinishingAgent(hold=True))
        collector = setup.collectors[0]
        admission = asyncio.ensure_future(setup.admit_all())
        await wait_until(lambda: len(setup.agent.held) == 4, what="four tasks admitted")
        readmitted = collector.readmit({"t0", "t3"})
        await wait_until(lambda: len(setup.agent.held) == 6, what="t1 and t2 sent again")
        await setup.agent.release()
        (counts,) = await admission
        return setup, counts, readmitted

    setup, counts, readmitted = run_async(scenario())
    assert readmitted == 2
    assert sorted(setup.agent.received) == ["t0", "t1", "t1", "t2", "t2", "t3"]
    assert counts.readmitted == 2
    assert sorted(setup.written()) == ["t0", "t1", "t2", "t3"]
    assert len(setup.writers[0].written) == 4


def test_pause_stops_admission_until_resume(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(3))
        collector = setup.collectors[0]
        collector.pause()
        admission = asyncio.ensure_future(setup.admit_all())
        await settle()
        admitted_while_paused = list(setup.agent.received)
        paused_done = admission.done()
        collector.resume()
        (counts,) = await admission
        return admitted_while_paused, paused_done, setup, counts

    admitted_while_paused, paused_done, setup, counts = run_async(scenario())
    assert admitted_while_paused == []
    assert not paused_done
    assert counts.admitted == 3
    assert sorted(setup.written()) == ["t0", "t1", "t2"]


def test_a_resume_passes_finished_rows_in_blocks_and_still_finds_a_duplicate_among_them(tmp_path):
    rows = [{"id": f"a{index}"} for index in range(9000)] + [{"id": "a7"}, {"id": "new"}]

    async def scenario():
        setup = make(tmp_path, rows, workflow=ROW_ID, finished=[f"a{index}" for index in range(9000)], partitions=2)
        await setup.admit_all()

    with pytest.raises(BadRowError) as raised:
        run_async(scenario())
    source = tmp_path / "in.jsonl"
    # the partitions read at once: either copy may reach the id's owner second
    assert re.fullmatch(rf"{source}:(8|9001): duplicate id 'a7' \(it is also on a row read before\)", str(raised.value))


@pytest.mark.parametrize("workflow", [ROW_ID, TOY], ids=["in-blocks", "row-by-row"])
def test_a_resume_skips_the_finished_rows_of_every_partition(tmp_path, monkeypatch, workflow):
    rows = [{"id": f"a{index}"} for index in range(9000)] + [{"id": "new"}]
    parsed = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda line, **kw: parsed.append(line) or real_loads(line, **kw))

    async def scenario():
        setup = make(
            tmp_path, rows, workflow=workflow, finished=[f"a{index}" for index in range(0, 9000, 2)], partitions=2
        )
        return setup, await setup.admit_all()

    setup, counts = run_async(scenario())
    assert len(parsed) == (4501 if workflow == ROW_ID else 9001), "blocks parse only the unfinished rows one by one"
    assert sorted(setup.agent.received) == sorted([f"a{index}" for index in range(1, 9000, 2)] + ["new"])
    assert sum(c.skipped_finished for c in counts) == 4500
    assert sum(c.admitted for c in counts) == 4501


def test_a_finished_id_read_line_by_line_and_again_in_a_block_is_a_duplicate(tmp_path):
    # the first block holds an integer id, which the block reader leaves to the line reader: both paths meet
    rows = [{"id": 5}] + [{"id": f"a{index}"} for index in range(8191)] + [{"id": "a7"}]

    async def scenario():
        setup = make(tmp_path, rows, workflow=ROW_ID, finished=["5", *(f"a{index}" for index in range(8191))])
        await setup.admit_all()

    with pytest.raises(BadRowError) as raised:
        run_async(scenario())
    source = tmp_path / "in.jsonl"
    assert str(raised.value) == f"{source}:8193: duplicate id 'a7' (it is also on a row read before)"


def test_a_workflow_that_expands_rows_resumes_task_by_task(tmp_path):
    async def scenario():
        setup = make(tmp_path, ids(3), workflow=f"{__name__}:TwiceOrchestrator", finished=["t0/0", "t1/1"])
        return setup, await setup.admit_all()

    setup, (counts,) = run_async(scenario())
    assert sorted(setup.agent.received) == ["t0/1", "t1/0", "t2/0", "t2/1"]
    assert counts.skipped_finished == 2
