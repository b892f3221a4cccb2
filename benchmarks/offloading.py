"""Benchmark 6, offloading: bytes serialized per hop on long conversations, with history texts offloaded to Ray's
object store (``run.offload_threshold_bytes``) and without.

    python benchmarks/offloading.py              # 400 conversations of 20 turns, ~4 KB a turn, 3 repeats
    python benchmarks/offloading.py --smoke

The :mod:`duet` conversations run on the engine against the simulated GPU; :class:`MeasuredDuetOrchestrator`
measures, as each hop delivers it, the pickled size of the message it arrived as (an offloaded text counts as its object
reference), so the numbers are the engine's real hops. Reported: the mean bytes per hop, the bytes of the last hop
(the longest history) and output tokens/s, each with offloading and without.
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duet
import engine_runs
from results import Result, Spread, add_common_flags, write
from simulated_gpu import GpuConfig, serve_in_process

from matrix_core import hookimpl
from matrix_core.orchestrator import Turn

HERE = Path(__file__).parent
NO_OFFLOAD = 2**62
"""A threshold no text reaches: offloading off."""


@dataclass
class MeasuredDuetOrchestrator(duet.DuetOrchestrator):
    """A duet conversation that records the serialized size of the message each hop delivered."""

    hop_bytes: list[int] = field(default_factory=list)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.hop_bytes.append(len(pickle.dumps(_without_refs(state), protocol=5)))

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "hop_bytes": self.hop_bytes}


def _without_refs(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with each object reference as the bytes of its id: what a reference costs in a message, without
    pickling a live reference outside Ray's own serializer."""
    history = [
        Turn(turn.role, turn.text, turn.prompt_tokens, turn.completion_tokens, turn.extra, _ref_id(turn.ref))
        for turn in state["history"]
    ]
    return {**state, "history": history}


def _ref_id(ref: Any) -> bytes | None:
    return None if ref is None else ref.binary()


@hookimpl
def matrix_register_orchestrators(register):
    register("duet_measured", MeasuredDuetOrchestrator)


def run(base_url: str, rows: Path, output: Path, threshold: int, concurrency: int) -> tuple[list[list[int]], float]:
    """One run; every conversation's bytes per hop, and output tokens/s."""
    metrics = engine_runs.run(
        "duet_measured",
        [
            f"input.path={rows}",
            f"output.path={output}",
            "backend.type=openai",
            f"backend.base_url={base_url}",
            "duet.max_tokens=4096",
            f"run.offload_threshold_bytes={threshold}",
            f"run.max_concurrency={concurrency}",
            "run.quiet=true",
        ],
    )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    return [record["hop_bytes"] for record in records], metrics.tokens_out / metrics.engine.flow_time_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)
    parser.add_argument("--conversations", type=int, default=400)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--turn-tokens", type=float, default=1_000, help="mean tokens (about 4 bytes each) a turn")
    parser.add_argument("--threshold", type=int, default=1_024, help="offload texts above this many bytes")
    args = parser.parse_args()
    if args.smoke:
        args.conversations, args.turns, args.turn_tokens, args.repeats = 10, 6, 400, 1

    import offloading  # the workers import the task class by this name, not as __main__

    from matrix_core.testing import local_ray, register_plugin

    gpu = GpuConfig(slots=args.conversations, decode_tps=20_000, mean_output_tokens=args.turn_tokens, sigma=0.3)
    measured: dict[str, dict[str, list[float]]] = {
        mode: {"mean": [], "last": [], "tokens_per_s": []} for mode in ("offloaded", "inline")
    }
    with (
        local_ray([str(HERE)]),
        register_plugin(duet, name="duet"),
        register_plugin(offloading, name="offloading"),
        serve_in_process(gpu) as base_url,
        tempfile.TemporaryDirectory() as workdir,
    ):
        rows = Path(workdir) / "rows.jsonl"
        rows.write_text(
            "".join(
                json.dumps({"id": str(i), "question": f"Question {i}", "turns": args.turns}) + "\n"
                for i in range(args.conversations)
            )
        )
        for repeat in range(args.repeats):
            for mode, threshold in (("offloaded", args.threshold), ("inline", NO_OFFLOAD)):
                output = Path(workdir) / f"{mode}-{repeat}.jsonl"
                hops, rate = run(base_url, rows, output, threshold, args.conversations)
                every = [size for sizes in hops for size in sizes]
                measured[mode]["mean"].append(sum(every) / len(every))
                measured[mode]["last"].append(sum(sizes[-1] for sizes in hops) / len(hops))
                measured[mode]["tokens_per_s"].append(rate)
    offloaded, inline = measured["offloaded"], measured["inline"]
    params = {"conversations": args.conversations, "turns": args.turns, "turn_tokens": args.turn_tokens}
    results = [
        Result(
            name=f"offloading_{what}",
            metric="bytes_per_hop",
            params={**params, "threshold": args.threshold},
            ours=Spread.of(offloaded[what]),
            baselines={"inline": Spread.of(inline[what])},
            ratios={"inline": Spread.of([o / i for o, i in zip(offloaded[what], inline[what], strict=True)])},
            notes="ours: texts above the threshold offloaded; inline: never offloaded"
            + ("; mean over every hop" if what == "mean" else "; the last hop of each conversation, its longest"),
        )
        for what in ("mean", "last")
    ]
    results.append(
        Result(
            name="offloading_throughput",
            metric="output_tokens_per_s",
            params={**params, "threshold": args.threshold},
            ours=Spread.of(offloaded["tokens_per_s"]),
            baselines={"inline": Spread.of(inline["tokens_per_s"])},
            ratios={
                "inline": Spread.of(
                    [o / i for o, i in zip(offloaded["tokens_per_s"], inline["tokens_per_s"], strict=True)]
                )
            },
        )
    )
    write(f"offloading{args.suffix}", results, args.out, args.smoke, gpu=gpu.__dict__)


if __name__ == "__main__":
    main()
