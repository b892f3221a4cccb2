"""`matrix report`: the page of a real run, parsed back: every section there, every number equal to metrics.json
and the records, nothing the page would fetch; several runs compared on one page; cost where prices are set."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from matrix_core.cli import cli
from matrix_core.testing import FakeOpenAIServer

ENGINE_SECTIONS = ["The run", "Throughput", "In flight and concurrency limit", "Latency per role", "Status and reasons"]


class Page(HTMLParser):
    """The page's sections: title -> tables (rows of cell texts), texts, and how many charts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.references: list[str] = []
        self._section: dict | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._heading = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.references += [value or "" for name, value in attrs if name in ("src", "href", "xlink:href")]
        if tag == "section":
            self._section = {"tables": [], "texts": [], "charts": 0, "summaries": []}
        elif tag == "h2":
            self._heading = True
        elif tag == "table" and self._section is not None:
            self._section["tables"].append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "svg" and self._section is not None:
            self._section["charts"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section is not None:
            self._section["tables"][-1].append(self._row)
            self._row = None
        elif tag == "h2":
            self._heading = False

    def handle_data(self, data: str) -> None:
        if self._heading and self._section is not None:
            self.sections[data] = self._section
        elif self._cell is not None:
            self._cell.append(data)
        elif self._section is not None and data.strip():
            self._section["texts"].append(data.strip())


def value(text: str) -> float:
    """A number as the page writes it."""
    return float(text.replace(",", "").rstrip("%"))


def rows_of(table: list[list[str]]) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in table[1:]}


@pytest.fixture
def server():
    with FakeOpenAIServer(output_tokens=8, failure_rate=0.2, seed=3).in_thread() as running:
        yield running


def run_inference(server, tmp_path: Path, name: str, *extra: str) -> Path:
    rows = [{"id": f"q{i}", "text": f"question number {i}"} for i in range(30)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / name
    args = ["run", "inference", "-i", str(source), "-o", str(output), "-q", f"backend.base_url={server.base_url}"]
    result = CliRunner().invoke(cli, [*args, "backend.model=fake-model", "run.retry_backoff_s=0.01", *extra])
    assert result.exit_code == 0, result.output
    return output


def test_the_page_of_a_run_holds_its_numbers_and_fetches_nothing(ray_session, server, tmp_path):
    output = run_inference(
        server, tmp_path, "out.jsonl", "--report", "run.max_retries=0", "backend.price_in=2", "backend.price_out=10"
    )
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    records = [json.loads(line) for line in output.read_text().splitlines()]
    page = Page((tmp_path / "out.report.html").read_text())
    assert [title for title in page.sections if title in ENGINE_SECTIONS] == ENGINE_SECTIONS
    assert [reference for reference in page.references if not reference.startswith("#")] == []
    overview = rows_of(page.sections["The run"]["tables"][0])
    assert overview["workflow"] == ["inference"]
    for label, key in [
        ("tasks finished", "tasks"), ("records kept", "kept"), ("tokens in", "tokens_in"), ("tokens out", "tokens_out"),
        ("retries", "retries"), ("steps (hops)", "hops"), ("wall time (s)", "wall_time_s"),
    ]:  # fmt: skip
        assert value(overview[label][0]) == pytest.approx(metrics[key], rel=1e-3), label
    assert metrics["cost"] == pytest.approx((2 * metrics["tokens_in"] + 10 * metrics["tokens_out"]) / 1e6)
    assert metrics["cost_per_kept_record"] == pytest.approx(metrics["cost"] / metrics["kept"])
    assert value(overview["cost"][0]) == pytest.approx(metrics["cost"], rel=1e-3)
    statuses = rows_of(page.sections["Status and reasons"]["tables"][0])
    assert {key: int(value(row[0])) for key, row in statuses.items()} == metrics["status_reason"]
    errors = [record for record in records if record["status"] == "error"]
    assert errors, "the server's failures ended some tasks error (no retries)"
    error_rows = rows_of(page.sections["Errors"]["tables"][0])
    assert sum(int(value(row[0])) for row in error_rows.values()) == len(errors) == metrics["status"]["error"]
    shown_ids = {task_id for row in error_rows.values() for task_id in row[1].split(", ")}
    assert shown_ids <= {record["id"] for record in errors}
    latency = rows_of(page.sections["Latency per role"]["tables"][0])
    assert int(value(latency["model"][0])) == metrics["hops"]
    for title in ("Throughput", "In flight and concurrency limit", "Latency per role", "Status and reasons"):
        assert page.sections[title]["charts"] >= 1, title


def test_a_workflow_adds_its_sections_and_their_text_is_escaped(toy, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"t{i}", "hops": 3 + i % 2}) + "\n" for i in range(20)))
    output = tmp_path / "toy.jsonl"
    result = CliRunner().invoke(
        cli,
        ["run", "toy", "-i", str(source), "-o", str(output), "-q", "backend.type=toy.null", "--report",
         "agents.a.always_fail_ids=[t0,t5]"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = (tmp_path / "toy.report.html").read_text()
    page = Page(text)
    trails = page.sections["Trails"]
    records = [json.loads(line) for line in output.read_text().splitlines()]
    lengths: dict[str, int] = {}
    for record in records:
        lengths[str(len(record["trail"]))] = lengths.get(str(len(record["trail"])), 0) + 1
    assert {row[0]: int(row[1]) for row in trails["tables"][0][1:]} == lengths
    assert trails["charts"] == 3, "bars, histogram and lines"
    assert "20 trails <of any length>" in trails["texts"]
    assert "&lt;of any length&gt;" in text and "x &lt; y &amp; z" in text and "<example>" not in text
    assert rows_of(page.sections["Errors"]["tables"][0])["RuntimeError: t0 always fails"] == ["1", "t0"]

    plain, longer = tmp_path / "plain.jsonl", tmp_path / "longer.jsonl"
    plain.write_text("".join(json.dumps({"id": f"t{i}"}) + "\n" for i in range(20)))
    args = ["run", "toy", "-i", str(plain), "-o", str(longer), "-q", "backend.type=toy.null", "toy.hops=9"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    compared = CliRunner().invoke(cli, ["report", str(output), str(longer), "-o", str(tmp_path / "both.html")])
    assert compared.exit_code == 0, compared.output
    both = (tmp_path / "both.html").read_text()
    trails = Page(both).sections["Trails"]
    assert re.findall(r"<h3>(.*?)</h3>", both) == ["toy.jsonl", "longer.jsonl"]
    assert [{row[0]: int(row[1]) for row in table[1:]} for table in trails["tables"]] == [lengths, {"9": 20}]


def test_runs_compared_side_by_side(ray_session, server, tmp_path):
    first = run_inference(server, tmp_path, "cold.jsonl", "inference.sampling.temperature=0.1")
    second = run_inference(server, tmp_path, "warm.jsonl", "inference.sampling.temperature=0.9")
    result = CliRunner().invoke(cli, ["report", str(first), str(second)])
    assert result.exit_code == 0, result.output
    page = Page((tmp_path / "cold.compare.html").read_text())
    runs = page.sections["Runs"]["tables"][0]
    assert runs[0] == ["", "cold.jsonl", "warm.jsonl"]
    table = rows_of(runs)
    assert table["setting inference.sampling.temperature"] == ["0.1", "0.9"]
    assert "setting output.path" not in table
    metrics = [json.loads((tmp_path / f"{name}.metrics.json").read_text()) for name in ("cold", "warm")]
    assert [int(value(cell)) for cell in table["tasks finished"]] == [m["tasks"] for m in metrics]
    statuses = rows_of(page.sections["Statuses"]["tables"][0])
    for index, each in enumerate(metrics):
        assert {key: int(value(row[index])) for key, row in statuses.items() if row[index] != "-"} == each[
            "status_reason"
        ]
    assert page.sections["Throughput"]["charts"] == 3
    assert [reference for reference in page.references if not reference.startswith("#")] == []


def test_a_missing_output_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nothing.jsonl")])
    assert result.exit_code != 0
    assert re.fullmatch(r"Error: .*nothing\.jsonl: no run output there.*\n", result.output)


def test_what_is_not_a_section_of_blocks_is_refused_before_it_reaches_the_page():
    from matrix_core import ReportSection, Text
    from matrix_core.report.build import _checked

    good = [ReportSection("fine", [Text("a paragraph")])]
    assert _checked(good) == good
    with pytest.raises(TypeError, match="returned dict, not a ReportSection"):
        _checked([{"title": "x"}])
    with pytest.raises(TypeError, match="section 'x' holds a str"):
        _checked([ReportSection("x", ["a paragraph"])])
