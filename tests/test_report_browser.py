"""`matrix report`'s page in a real browser with the network cut off (tests/browser.py): it asks for nothing outside
itself and shows something. Marked ``browser``: run them with ``tox -e report-browser``; they skip where Chromium
(Debian: ``apt-get install chromium``) or Pillow is missing. The first tests are the harness's own controls."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from browser import find_chromium, is_blank, open_offline

from matrix_core.testing import FakeOpenAIServer

needs_pillow = pytest.mark.skipif(
    importlib.util.find_spec("PIL") is None, reason="Pillow is not installed (tox -e report-browser installs it)"
)
needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)
pytestmark = [pytest.mark.browser, needs_pillow]

DRAWN = """<!doctype html><html><head><style>body { font: 16px sans-serif; margin: 2em }</style></head><body>
<h1>An inline page</h1><p>Only what is written here: no stylesheet, script, font or image from anywhere else.</p>
<svg width="600" height="300" viewBox="0 0 600 300">
  <rect x="20" y="100" width="120" height="180" fill="#4878d0"/><rect x="180" y="40" width="120" height="240"
  fill="#ee854a"/><rect x="340" y="160" width="120" height="120" fill="#6acc64"/>
</svg></body></html>"""


def matrix(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    """``matrix ARGS`` in its own process, as a user runs it."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    command = [sys.executable, "-m", "matrix_core", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)


def test_is_blank_tells_an_empty_image_from_a_drawn_one(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    empty = Image.new("RGB", (400, 300), "white")
    empty.putpixel((10, 10), (0, 0, 0))  # a speck is still blank
    empty.save(tmp_path / "empty.png")
    drawn = empty.copy()
    ImageDraw.Draw(drawn).rectangle((50, 50, 150, 120), fill="steelblue")
    drawn.save(tmp_path / "drawn.png")
    assert is_blank(tmp_path / "empty.png")
    assert not is_blank(tmp_path / "drawn.png")


@needs_chromium
def test_the_harness_sees_an_image_and_a_script_the_page_asks_the_network_for(tmp_path: Path) -> None:
    page = tmp_path / "remote.html"
    page.write_text(
        '<!doctype html><p>Remote content:</p><img src="http://example.invalid/x.png">'
        '<script src="https://cdn.example.invalid/x.js"></script>'
    )
    requests = open_offline(page, tmp_path / "remote.png")
    assert requests == ["http://example.invalid/x.png", "https://cdn.example.invalid/x.js"]


@needs_chromium
def test_an_inline_page_asks_for_nothing_and_shows_something(tmp_path: Path) -> None:
    page = tmp_path / "inline.html"
    page.write_text(DRAWN)
    assert open_offline(page, tmp_path / "inline.png") == []
    assert not is_blank(tmp_path / "inline.png")


@pytest.fixture
def run_output(tmp_path: Path) -> Path:
    """The output of a real `matrix run inference` against the test server, some requests failed and retried."""
    rows = [{"id": f"q{i}", "text": f"question number {i} " + "word " * (i % 7)} for i in range(30)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "out.jsonl"
    with FakeOpenAIServer(output_tokens=8, latency_s=0.01, failure_rate=0.1, seed=7).in_thread() as server:
        ran = matrix(
            "run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(output), "-q",
            "backend.type=openai", f"backend.base_url={server.base_url}", "backend.model=fake-model",
            "run.max_retries=8", "run.retry_backoff_s=0.01", "inference.sampling.max_tokens=6",
        )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    return output


@needs_chromium
def test_the_report_of_a_real_run_opens_offline_and_is_not_blank(run_output: Path, tmp_path: Path) -> None:
    reported = matrix("report", str(run_output))
    assert reported.returncode == 0, reported.stderr[-3000:]
    report = run_output.with_name("out.report.html")
    assert report.is_file(), reported.stdout + reported.stderr
    screenshot = tmp_path / "report.png"  # kept with pytest's tmp_path, to look at
    assert open_offline(report, screenshot) == [], f"the report asked for more than itself; see {screenshot}"
    assert not is_blank(screenshot), f"the report shows nothing: {screenshot}"
