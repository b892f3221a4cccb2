"""``run.max_concurrency=auto`` against fixed settings, on simulated GPUs whose capacity the run is not told.

    python benchmarks/adaptive.py            # about 25 minutes, then benchmarks/adaptive.png (needs matplotlib)
    python benchmarks/adaptive.py --smoke    # tiny sizes, for the tests
    python benchmarks/adaptive.py --plot     # only the plot, from benchmarks/results/adaptive.json

Three questions, each on its own simulated GPU, the ``inference`` workflow sending the same requests to each:

1. **Capacity** (64, 512 and 4,096 slots): a sweep of fixed ``run.max_concurrency`` settings (multiples of the
   slots) finds the best fixed throughput, output tokens/s on the server's clock; the best setting is the one with
   the most, or, where several are within :data:`TIE` of it (run-to-run noise), the one with the fewest in flight
   (the lowest latency), as a user would pick. Goals: ``auto`` reaches >= 0.95 of that throughput, with a median
   request latency (the server's: its queue and its decoding) <= 1.3x the best setting's.
2. **Rate limit**: a server answering 429 (with ``Retry-After``) above a request rate. Fixed settings are multiples
   of the concurrency that just meets the rate. Goals: ``auto`` sends below the rate once settled, no task ends
   ``error`` (the engine retries, ``run.max_retries``), no more 429s than the best fixed setting.
3. **Slots halve** half-way through: the time from the halving until ``auto``'s limit is within 1.5x of the new
   slots (from the run's ``metrics.engine.concurrency[0].history``). Goal: <= 30 s.

Rates and latencies are taken over the settled part of each run, from its median completion to its 90th
percentile one (the same window for every setting): ``auto`` spends its start finding the limit, and the last
requests of any run drain an emptying server. Each run's whole-run rate is kept in the JSON too. Only
``run.max_concurrency`` differs between the runs (``auto`` or a number); the request size is the experiment's
(``inference.sampling.max_tokens``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from results import RESULTS_DIR, Result, Spread, add_common_flags, write
from simulated_gpu import GpuConfig, Meter, serve_in_process

HERE = Path(__file__).parent
TIE = 0.02
"""Fixed settings within this fraction of the best throughput count as tied: the fewest in flight wins."""
FOLLOW_WITHIN = 1.5
"""After the halving, the limit has followed once it is within this factor of the new slots."""


@dataclass(frozen=True)
class Server:
    """One simulated GPU of the benchmark and the runs against it."""

    name: str
    slots: int
    mean_request_s: float
    """Mean time of a request in a slot (lognormal output lengths, sigma :data:`SIGMA`)."""
    requests: int
    fixed: tuple[int, ...] = ()
    """The fixed ``run.max_concurrency`` settings of the sweep."""
    rate_limit_rps: float = 0.0
    halve_after_s: float = 0.0
    decode_tps: float = 50.0

    def gpu(self) -> GpuConfig:
        """The simulated GPU's config."""
        return GpuConfig(
            slots=self.slots,
            decode_tps=self.decode_tps,
            mean_output_tokens=self.mean_request_s * self.decode_tps,
            sigma=SIGMA,
            rate_limit_rps=self.rate_limit_rps,
            halve_after_s=self.halve_after_s,
        )

    @property
    def max_tokens(self) -> int:
        """The requests' ``max_tokens``: 1.5x the mean, so that no request outlasts the client's timeout (the
        ``openai`` backend's ``timeout_s``, 60 s) without a queue, and a run's last request is not minutes long."""
        return round(1.5 * self.mean_request_s * self.decode_tps)


SIGMA = 0.5


def sweep(slots: int, multiples: tuple[float, ...], cap: int) -> tuple[int, ...]:
    """Fixed settings: ``multiples`` of ``slots``, at most ``cap`` (what this machine's client can push)."""
    return tuple(sorted({min(max(1, round(slots * m)), cap) for m in multiples}))


def full_servers() -> tuple[list[Server], Server, Server]:
    """The benchmark's servers: capacity 64, 512, 4,096 slots; rate-limited; halving. Each server's capacity stays
    below what the engine can send on 2 cores (about 250 requests/s: benchmarks/README.md's efficiency row)."""
    multiples = (0.5, 1, 2, 4)
    capacity = [
        Server("slots_64", 64, 0.5, 4_000, sweep(64, multiples, 8_192), decode_tps=200.0),  # 128 requests/s
        Server("slots_512", 512, 4.0, 5_000, sweep(512, multiples, 8_192)),  # 128 requests/s
        # 137 requests/s; the sweep stops at the slots (auto's default ceiling too): with twice as many in flight a
        # request waits about 30 s for a slot, then decodes for up to 45 s, past the client's 60 s timeout
        Server("slots_4096", 4_096, 30.0, 12_000, sweep(4_096, multiples, 4_096), decode_tps=20.0),
    ]
    # 40 requests/s admitted, 2 s each: 80 in flight meet the rate; 512 slots would take 256 requests/s
    rate = 40.0
    rate_limited = Server("rate_limit_40rps", 512, 2.0, 1_600, sweep(80, (0.5, 1, 2), 8_192), rate, decode_tps=100.0)
    halving = Server("halving_512_to_256", 512, 4.0, 8_000, halve_after_s=45.0)
    return capacity, rate_limited, halving


def smoke_servers() -> tuple[list[Server], Server, Server]:
    """Tiny versions of :func:`full_servers`: seconds each, they check that the benchmark works."""
    capacity = [Server("slots_8", 8, 0.2, 60, (4, 8, 16), decode_tps=200.0)]
    rate_limited = Server("rate_limit_20rps", 64, 0.2, 40, (2, 4, 8), 20.0, decode_tps=200.0)
    halving = Server("halving_8_to_4", 8, 0.2, 150, halve_after_s=2.0, decode_tps=200.0)
    return capacity, rate_limited, halving


@dataclass
class Measured:
    """One engine run against one server, read on the server's clock."""

    setting: str
    """``auto`` or the fixed number."""
    tokens_per_s: float
    """Output tokens/s over the settled part (median to 90th percentile completion)."""
    whole_run_tokens_per_s: float
    median_latency_s: float
    """Median time a request spent at the server (queue and decoding), over the settled part."""
    sent_per_s: float
    """Requests arriving at the server (429s and retries included) per second, over the settled part."""
    answered_429: int
    errors: int
    """Tasks that ended ``error``."""
    seconds: float
    """From the first request's arrival to the last completion."""
    first_arrival_s: float
    """The first request's arrival on the server's clock."""
    halved_at_s: float | None
    """When the server's slots halved, on its clock."""
    history: list[list[float | None]] = field(default_factory=list)
    """The limit over the run, ``[seconds since the run started, limit, seconds per output token]``."""


def settled(meter: Meter) -> tuple[float, float, float]:
    """Output tokens/s, median latency and requests sent/s from the median completion to the 90th percentile one."""
    times = meter.completion_times  # in completion order
    low, high = len(times) // 2, (len(times) * 9) // 10
    if high <= low:
        low, high = 0, len(times) - 1
    start, end = times[low], times[high]
    span = end - start or 1e-9
    tokens = sum(meter.completion_token_counts[low + 1 : high + 1])
    latency = statistics.median(meter.latencies[low + 1 : high + 1] or meter.latencies)
    sent = sum(1 for arrival in meter.arrival_times if start < arrival <= end)
    return tokens / span, latency, sent / span


def run_one(server: Server, base_url: str, rows: Path, workdir: Path, setting: str) -> Measured:
    """One ``inference`` run with ``run.max_concurrency=setting``, everything else as a user leaves it."""
    import matrix_core

    overrides = [
        f"input.path={rows}",
        f"output.path={workdir / f'{server.name}-{setting}-{os.urandom(4).hex()}.jsonl'}",
        "backend.type=openai",
        f"backend.base_url={base_url}",
        f"inference.sampling.max_tokens={server.max_tokens}",
        f"run.max_concurrency={setting}",
        "run.quiet=true",
    ]
    with Meter(base_url) as meter:
        metrics = matrix_core.run("inference", overrides=overrides)
    errors = metrics.status.get("error", 0)
    if metrics.tasks != server.requests or set(metrics.status) - {"success", "error"}:
        raise RuntimeError(f"{server.name} at {setting}: {metrics.tasks} tasks ended, {metrics.status}")
    tokens_per_s, latency, sent_per_s = settled(meter)
    history = metrics.engine.concurrency[0].history if setting == "auto" else []  # a fixed run has none
    measured = Measured(
        setting=setting,
        tokens_per_s=tokens_per_s,
        whole_run_tokens_per_s=meter.rate("completion_tokens"),
        median_latency_s=latency,
        sent_per_s=sent_per_s,
        answered_429=meter.rate_limited,
        errors=errors,
        seconds=meter.seconds,
        first_arrival_s=meter.arrival_times[0],
        halved_at_s=meter.halved_at_s,
        history=history,
    )
    print(
        f"  {server.name} max_concurrency={setting}: {tokens_per_s:,.0f} output tokens/s settled "
        f"({measured.whole_run_tokens_per_s:,.0f} whole run), median latency {latency:.2f} s, "
        f"sent {sent_per_s:.1f}/s, 429s {measured.answered_429}, errors {errors}, {meter.seconds:.0f} s",
        flush=True,
    )
    return measured


def run_server(server: Server, workdir: Path, settings: list[str]) -> list[Measured]:
    """The runs ``settings`` against a fresh simulated GPU for ``server`` each (a halving happens once per server)."""
    rows = workdir / f"rows-{server.requests}.jsonl"
    if not rows.exists():
        rows.write_text(
            "".join(json.dumps({"id": i, "text": f"prompt {i}: say something"}) + "\n" for i in range(server.requests))
        )
    runs = []
    for setting in settings:
        with serve_in_process(server.gpu()) as base_url:
            runs.append(run_one(server, base_url, rows, workdir, setting))
    return runs


def best_fixed(runs: list[Measured]) -> Measured:
    """The fixed setting with the most throughput; among those within :data:`TIE` of it, the fewest in flight."""
    fixed = [run for run in runs if run.setting != "auto"]
    most = max(run.tokens_per_s for run in fixed)
    return min((run for run in fixed if run.tokens_per_s >= (1 - TIE) * most), key=lambda run: int(run.setting))


def limits(history: list[list[float | None]]) -> list[tuple[float, int]]:
    """``(seconds, limit)`` points of a run's limit history."""
    return [(float(seconds or 0.0), int(limit or 0)) for seconds, limit, _ in history]


def settled_limit(history: list[list[float | None]]) -> float:
    """The median limit over the second half of the run."""
    points = limits(history)
    end = points[-1][0]
    return float(statistics.median(limit for seconds, limit in points if seconds >= end / 2))


def follow_time(run: Measured, new_slots: int, halve_after_s: float) -> tuple[float | None, int]:
    """Seconds from the halving until the limit was within :data:`FOLLOW_WITHIN` of ``new_slots`` (None: never),
    and the limit at the halving. The history counts from the controller's start, which comes before the first
    request: taking the halving ``halve_after_s`` after the history's zero puts it early, so the time is at most
    that much too long, never too short."""
    points = limits(run.history)
    at_halving = [limit for seconds, limit in points if seconds <= halve_after_s][-1:] or [points[0][1]]
    for seconds, limit in points:
        if seconds > halve_after_s and new_slots / FOLLOW_WITHIN <= limit <= FOLLOW_WITHIN * new_slots:
            return seconds - halve_after_s, at_halving[0]
    return None, at_halving[0]


def one(value: float) -> Spread:
    return Spread.of([value])


def capacity_results(server: Server, runs: list[Measured]) -> list[Result]:
    """Throughput and latency of ``auto`` against the best fixed setting."""
    auto = next(run for run in runs if run.setting == "auto")
    best = best_fixed(runs)
    fixed = [run for run in runs if run.setting != "auto"]
    params = {
        "slots": server.slots,
        "mean_request_s": server.mean_request_s,
        "requests": server.requests,
        "best_fixed": int(best.setting),
        "auto_limit": round(settled_limit(auto.history)),
    }
    notes = (
        f"whole run: auto {auto.whole_run_tokens_per_s:,.0f} output tokens/s, best fixed "
        f"{best.whole_run_tokens_per_s:,.0f} ({auto.whole_run_tokens_per_s / best.whole_run_tokens_per_s:.2f}x); "
        f"auto_limit: the median limit over the run's second half"
    )
    if failed := {run.setting: run.errors for run in runs if run.errors}:
        notes += f"; tasks that ended error (a server that never refuses: timeouts): {failed}"
    throughput = Result(
        name="auto_throughput",
        metric="output_tokens_per_s",
        params=params,
        ours=one(auto.tokens_per_s),
        baselines={f"fixed_{run.setting}": one(run.tokens_per_s) for run in fixed},
        ratios={"best_fixed": one(auto.tokens_per_s / best.tokens_per_s)},
        goal=">= 0.95",
        goal_value=0.95,
        goal_on=("best_fixed",),
        notes=notes,
    )
    latency = Result(
        name="auto_latency",
        metric="median_latency_s",
        params=params,
        ours=one(auto.median_latency_s),
        baselines={f"fixed_{run.setting}": one(run.median_latency_s) for run in fixed},
        ratios={"best_fixed": one(auto.median_latency_s / best.median_latency_s)},
        goal="<= 1.3",
        goal_value=1.3,
        goal_on=("best_fixed",),
    )
    return [throughput, latency]


def rate_limit_results(server: Server, runs: list[Measured]) -> list[Result]:
    """``auto`` against a rate limit: what it sends once settled, its errors and its 429s."""
    auto = next(run for run in runs if run.setting == "auto")
    best = best_fixed(runs)
    fixed = [run for run in runs if run.setting != "auto"]
    params = {
        "rate_limit_rps": server.rate_limit_rps,
        "mean_request_s": server.mean_request_s,
        "requests": server.requests,
        "best_fixed": int(best.setting),
        "auto_limit": round(settled_limit(auto.history)),
    }
    return [
        Result(
            name="auto_rate_limit_sent",
            metric="requests_sent_per_s",
            params=params,
            ours=one(auto.sent_per_s),
            baselines={f"fixed_{run.setting}": one(run.sent_per_s) for run in fixed},
            goal=f"<= {server.rate_limit_rps:g} (the rate limit)",
            goal_value=server.rate_limit_rps,
            goal_on=("ours",),
            notes="requests arriving at the server, 429s and retries included, median to 90th percentile completion",
        ),
        Result(
            name="auto_rate_limit_errors",
            metric="tasks_ended_error",
            params=params,
            ours=one(auto.errors),
            baselines={f"fixed_{run.setting}": one(run.errors) for run in fixed},
            goal="<= 0",
            goal_value=0,
            goal_on=("ours",),
        ),
        Result(
            name="auto_rate_limit_429s",
            metric="answered_429",
            params=params,
            ours=one(auto.answered_429),
            baselines={f"fixed_{run.setting}": one(run.answered_429) for run in fixed},
            ratios={"best_fixed": one(auto.answered_429 / max(best.answered_429, 1))},
            goal="<= 1x",
            goal_value=1.0,
            goal_on=("best_fixed",),
            notes="ratio: auto's 429s over the best fixed setting's (at least 1)",
        ),
        Result(
            name="auto_rate_limit_throughput",
            metric="output_tokens_per_s",
            params=params,
            ours=one(auto.tokens_per_s),
            baselines={f"fixed_{run.setting}": one(run.tokens_per_s) for run in fixed},
            ratios={"best_fixed": one(auto.tokens_per_s / best.tokens_per_s)},
        ),
    ]


def halving_result(server: Server, run: Measured) -> Result:
    """How long ``auto`` took to follow the halving."""
    new_slots = server.slots // 2
    seconds, at_halving = follow_time(run, new_slots, server.halve_after_s)
    points = limits(run.history)
    after = [limit for seconds, limit in points if seconds > server.halve_after_s]
    end = points[-1][0]
    return Result(
        name="auto_follows_halving",
        metric="seconds_to_follow",
        params={
            "slots": f"{server.slots}->{new_slots}",
            "halve_after_s": server.halve_after_s,
            "requests": server.requests,
            "limit_at_halving": round(at_halving),
            "lowest_limit_after": min(after) if after else None,
        },
        ours=one(seconds if seconds is not None else end - server.halve_after_s),
        goal="<= 30",
        goal_value=30.0 if seconds is not None else None,
        goal_on=("ours",) if seconds is not None else (),
        notes=(
            f"until the limit was within {FOLLOW_WITHIN}x of {new_slots} slots; at most the time from the "
            "controller's start to the first request too long"
            if seconds is not None
            else f"the limit never came within {FOLLOW_WITHIN}x of {new_slots} slots before the run ended"
        ),
    )


def plot(document: dict[str, Any], output: Path) -> None:
    """The limit over time of each ``auto`` run, against the server's slots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = document["auto_runs"]
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    for axis, panel in zip(axes.flat, panels, strict=False):
        history = panel["history"]
        axis.step([p[0] for p in history], [p[1] for p in history], where="post", label="auto's limit")
        end = history[-1][0]
        slots, halve = panel["slots"], panel.get("halve_after_s") or 0.0
        if panel.get("rate_limit_rps"):
            meets = panel["rate_limit_rps"] * panel["mean_request_s"]
            axis.axhline(meets, color="tab:red", linestyle="--", label=f"meets the rate limit ({meets:g})")
        elif halve:
            axis.step([0, halve, end], [slots, slots // 2, slots // 2], where="post", color="black", label="slots")
            axis.fill_between(
                [halve, end],
                [slots // 2 / FOLLOW_WITHIN] * 2,
                [slots // 2 * FOLLOW_WITHIN] * 2,
                color="tab:green",
                alpha=0.15,
                label=f"within {FOLLOW_WITHIN}x of the new slots",
            )
            axis.axvline(halve, color="gray", linestyle=":")
        else:
            axis.axhline(slots, color="black", label="slots")
            if panel.get("best_fixed"):
                axis.axhline(panel["best_fixed"], color="tab:orange", linestyle="--", label="best fixed setting")
        axis.set_title(panel["title"], fontsize="medium")
        axis.set_xlabel("seconds since the run started")
        axis.set_ylabel("requests in flight (limit)")
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="small")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(
        f"run.max_concurrency=auto: {document['date'][:10]}, {document['commit']}, {document['machine'].split(',')[0]}"
    )
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    print(f"wrote {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)
    parser.set_defaults(repeats=1)
    parser.add_argument("--plot", action="store_true", help="only write the plot, from the results' JSON")
    parser.add_argument("--plot-output", type=Path, default=HERE / "adaptive.png")
    args = parser.parse_args()
    if args.plot:
        plot(
            json.loads((args.out or RESULTS_DIR).joinpath(f"adaptive{args.suffix}.json").read_text()), args.plot_output
        )
        return
    if args.repeats != 1:
        raise SystemExit("adaptive.py runs each setting once (--repeats 1): a repeat would double its 25 minutes")
    capacity, rate_limited, halving = smoke_servers() if args.smoke else full_servers()

    from matrix_core.testing import local_ray

    results: list[Result] = []
    auto_runs: list[dict[str, Any]] = []
    every_run: dict[str, list[dict[str, Any]]] = {}
    with local_ray(), tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for server in [*capacity, rate_limited]:
            runs = run_server(server, workdir, [*map(str, server.fixed), "auto"])
            every_run[server.name] = [asdict(run) for run in runs]
            limited = bool(server.rate_limit_rps)
            results += rate_limit_results(server, runs) if limited else capacity_results(server, runs)
            auto = runs[-1]
            what = f"{server.rate_limit_rps:g} requests/s admitted" if limited else f"{server.slots} slots"
            auto_runs.append(
                {
                    **asdict(server),
                    "title": f"{what}, {server.mean_request_s:g} s requests",
                    "best_fixed": int(best_fixed(runs).setting),
                    "history": auto.history,
                }
            )
        [run] = run_server(halving, workdir, ["auto"])
        every_run[halving.name] = [asdict(run)]
        results.append(halving_result(halving, run))
        auto_runs.insert(
            0,
            {
                **asdict(halving),
                "title": f"{halving.slots} slots, halved after {halving.halve_after_s:g} s",
                "history": run.history,
            },
        )
    path = write(f"adaptive{args.suffix}", results, args.out, args.smoke, auto_runs=auto_runs, runs=every_run)
    try:
        plot(json.loads(path.read_text()), args.plot_output if not args.smoke else path.with_suffix(".png"))
    except ImportError:
        print("no matplotlib: no plot (pip install -e .[bench], then python benchmarks/adaptive.py --plot)")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
