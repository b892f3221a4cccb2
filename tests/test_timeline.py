"""The run's timeline: a point a second, bounded however long the run, appended to on --resume."""

from __future__ import annotations

import json
import random

import pytest

from matrix_core.engine.step_times import StepTimes, bucket_of, merged, percentile, seconds_of
from matrix_core.engine.timeline import MAX_POINTS, Sample, TimelineRecorder, merge, read_lines


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_percentiles_read_from_buckets_are_within_a_bucket_of_the_exact_ones():
    rng = random.Random(3)
    durations = [rng.lognormvariate(0, 1.5) for _ in range(20_000)]
    times = StepTimes()
    for seconds in durations:
        times.add(seconds)
    histogram = times.take()
    assert times.take() == {}, "take starts again"
    durations.sort()
    for share in (0.5, 0.95):
        exact = durations[int(share * len(durations)) - 1]
        assert exact / 1.2 <= percentile(histogram, share) <= exact * 1.2
    assert percentile({}, 0.5) is None
    assert bucket_of(0.0) == 0 and bucket_of(1e9) == bucket_of(1e12), "out of range counts in the end buckets"
    assert seconds_of(bucket_of(2.0)) == pytest.approx(2.0, rel=0.1)
    assert merged([{1: 2}, {1: 1, 3: 4}]) == {1: 3, 3: 4}


def test_a_day_of_points_stays_small_and_every_count_adds_up(tmp_path):
    path, clock = tmp_path / "out.timeline.jsonl", Clock()
    recorder = TimelineRecorder(path, {"workflow": "toy"}, resume=False, clock=clock)
    finished = admitted = 0
    for tick in range(2 * 86_400):  # the driver polls every 0.5 s for a day
        clock.now += 0.5
        admitted += 3
        finished += tick % 2
        recorder.sample(
            Sample(
                admitted=admitted,
                finished={"success": finished, "error": tick // 1000},
                tokens_out=10 * finished,
                in_flight=tick % 7,
                step_times={"model": {bucket_of(0.1 + tick % 3): 2}},
            )
        )
    recorder.close(Sample(admitted=admitted, finished={"success": finished, "error": tick // 1000}))
    assert path.stat().st_size < 3_000_000
    lines = list(read_lines(path))
    points = [line for line in lines if line["kind"] == "point"]
    assert len(points) <= MAX_POINTS
    assert lines[0] == {"kind": "start", "session": 0, "time": 1_000_000.0, "workflow": "toy"}
    assert sum(point["admitted"] for point in points) == admitted
    assert sum(point["finished"].get("success", 0) for point in points) == finished
    assert sum(point["finished"].get("error", 0) for point in points) == tick // 1000
    assert sum(point["tokens_out"] for point in points) == 10 * finished
    assert sum(point["span_s"] for point in points) == pytest.approx(86_400, abs=1)
    assert points[0]["span_s"] > points[-1]["span_s"], "older points are the merged ones"
    assert sum(point["latency"]["model"]["steps"] for point in points if point["latency"]) == 2 * 2 * 86_400


def test_resume_appends_a_session_after_the_points_already_there_and_a_torn_line_is_skipped(tmp_path):
    path, clock = tmp_path / "out.timeline.jsonl", Clock()
    first = TimelineRecorder(path, {"workflow": "toy"}, resume=False, clock=clock)
    for done in range(1, 4):
        clock.now += 1
        first.sample(Sample(finished={"success": done}))
    with path.open("a") as file:
        file.write('{"kind": "point", "sess')  # the driver died mid-line
    clock.now += 100
    second = TimelineRecorder(path, {"workflow": "toy"}, resume=True, clock=clock)
    clock.now += 1
    second.close(Sample(finished={"success": 2}))
    lines = list(read_lines(path))
    assert [(line["kind"], line["session"]) for line in lines] == [
        ("start", 0), ("point", 0), ("point", 0), ("point", 0), ("start", 1), ("point", 1),
    ]  # fmt: skip
    assert [line["finished"] for line in lines if line["kind"] == "point"] == [{"success": 1}] * 3 + [{"success": 2}]
    assert all(json.loads(text) for text in path.read_text().splitlines()), "the torn line is gone"
    third = TimelineRecorder(path, {"workflow": "toy"}, resume=False, clock=clock)
    assert [line["kind"] for line in read_lines(third.path)] == ["start"], "a new run starts a new timeline"


def test_merging_two_points_adds_counts_and_weights_latencies_by_steps():
    older = {
        "kind": "point", "session": 0, "time": 1.0, "span_s": 1.0, "admitted": 2, "tokens_in": 5, "tokens_out": 7,
        "retries": 1, "finished": {"success": 1}, "in_flight": 4, "limits": {"s": 8}, "cost": 0.5,
        "latency": {"a": {"steps": 1, "p50": 1.0, "p95": 2.0}},
    }  # fmt: skip
    newer = {
        **older, "time": 2.0, "in_flight": 3, "limits": {"s": 9}, "finished": {"error": 2}, "cost": 0.25,
        "latency": {"a": {"steps": 3, "p50": 2.0, "p95": 4.0}, "b": {"steps": 1, "p50": 5.0, "p95": 5.0}},
    }  # fmt: skip
    point = merge(older, newer)
    assert point["time"] == 2.0 and point["span_s"] == 2.0
    assert (point["admitted"], point["tokens_in"], point["tokens_out"], point["retries"]) == (4, 10, 14, 2)
    assert point["finished"] == {"success": 1, "error": 2}
    assert (point["in_flight"], point["limits"], point["cost"]) == (3, {"s": 9}, 0.75)
    assert point["latency"]["a"] == {"steps": 4, "p50": 1.75, "p95": 3.5}
    assert point["latency"]["b"] == {"steps": 1, "p50": 5.0, "p95": 5.0}
