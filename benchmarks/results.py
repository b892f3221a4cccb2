"""The result format every benchmark shares: medians with spread, ratios, one summary line each, a JSON file."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS_DIR = HERE / "results"
LOAD_AT_START = round(os.getloadavg()[0], 2)
"""The machine's load when the benchmark started: it is shared, and a loaded machine slows every side."""


@dataclass
class Spread:
    """The median of several repeats, with their range."""

    median: float
    low: float
    high: float
    samples: list[float]

    @classmethod
    def of(cls, samples: list[float]) -> Spread:
        """The spread of ``samples`` (at least one)."""
        return cls(statistics.median(samples), min(samples), max(samples), [round(s, 4) for s in samples])

    def text(self, digits: int | None = None) -> str:
        """``median [low-high]``, to ``digits`` decimals (default: 2 below 10, 1 below 1,000, else none)."""
        if digits is None:
            digits = 2 if abs(self.median) < 10 else 1 if abs(self.median) < 1000 else 0
        return f"{self.median:,.{digits}f} [{self.low:,.{digits}f}-{self.high:,.{digits}f}]"


@dataclass
class Result:
    """One measured result: ours against the baselines measured in the same run, and the goal's verdict."""

    name: str
    metric: str
    params: dict[str, Any]
    ours: Spread
    baselines: dict[str, Spread] = field(default_factory=dict)
    ratios: dict[str, Spread] = field(default_factory=dict)
    """Ours over each baseline, one ratio per repeat (the baseline ran beside it), so their median and range."""
    goal: str = ""
    goal_value: float | None = None
    goal_on: tuple[str, ...] = ()
    """What the goal applies to: ratio names, or ``ours``; every one must meet it. A lower-is-better goal says
    ``<=`` in ``goal``."""
    notes: str = ""

    def met(self) -> bool | None:
        """Whether the goal is met (None without a goal)."""
        if self.goal_value is None or not self.goal_on:
            return None
        values = [self.ours.median if on == "ours" else self.ratios[on].median for on in self.goal_on]
        if self.goal.startswith("<="):
            return all(value <= self.goal_value for value in values)
        return all(value >= self.goal_value for value in values)

    def line(self) -> str:
        """The one-line summary printed for this result."""
        parts = [self.name, *(f"{k}={v}" for k, v in self.params.items()), f"{self.metric}={self.ours.text()}"]
        parts += [f"{name}={spread.text()}" for name, spread in self.baselines.items()]
        parts += [f"ratio_vs_{name}={spread.median:.2f}x" for name, spread in self.ratios.items()]
        met = self.met()
        if met is not None:
            parts.append(f"goal={self.goal} {'MET' if met else 'NOT MET'}")
        return " ".join(parts)


def machine() -> str:
    """Cores, memory and OS of this machine, in words."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.system()} {platform.machine()}, " + (
        f"Python {platform.python_version()}"
    )


def commit() -> str:
    """``git rev-parse --short HEAD`` of the project, or ``unknown``."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write(benchmark: str, results: list[Result], out_dir: Path | None, smoke: bool, **extra: Any) -> Path:
    """Print each result's line and write ``<out_dir>/<benchmark>.json``; returns its path. Without ``out_dir``,
    results go to ``benchmarks/results``, a smoke run's to a temporary directory (never over real results)."""
    if out_dir is None:
        out_dir = Path(tempfile.gettempdir()) / "matrix-bench-smoke" if smoke else RESULTS_DIR
    for result in results:
        print(result.line(), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{benchmark}.json"
    document = {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "load_average_1m": {"start": LOAD_AT_START, "end": round(os.getloadavg()[0], 2)},
        "smoke": smoke,
        **extra,
        "results": [{**asdict(result), "met": result.met()} for result in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def add_common_flags(parser: Any) -> None:
    """``--smoke``, ``--repeats`` and ``--out``, which every benchmark takes."""
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the benchmark works")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; results are medians")
    parser.add_argument("--out", type=Path, help="where the JSON result goes (default: benchmarks/results)")
    parser.add_argument(
        "--suffix", default="", help="added to the result file's name (keeps runs at other sizes apart)"
    )
