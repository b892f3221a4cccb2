"""The README's plot: throughput against concurrency, ours and the baselines, from the latest JSON results.

    python benchmarks/plot.py        # reads benchmarks/results/*.json, writes benchmarks/throughput.png

Needs matplotlib (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results import RESULTS_DIR

HERE = Path(__file__).parent
PANELS = (
    ("p2p_vs_baselines", "Coral-like duet: output tokens/s", {"ours": "peer to peer (ours)"}),
    ("fair_matrix_vs_ours", "Collaborative Reasoner: tasks/s", {"ours": "ours", "fair_matrix": "fair-matrix 0.2.6"}),
    (
        "tau2_vs_runner",
        "tau2 retail, solved tasks: tasks/s",
        {
            "ours": "matrix run tau2",
            "tau2_runner": "tau2 run_tasks",
            "tau2_runner_gc_tuned": "tau2 run_tasks, tuned GC",
        },
    ),
)


def series(document: dict) -> dict[str, list[tuple[int, float, float, float]]]:
    """For each implementation, ``(in_flight, median, low, high)`` points, by concurrency."""
    points: dict[str, list[tuple[int, float, float, float]]] = {}
    for result in document["results"]:
        x = result["params"]["in_flight"]
        for name, spread in {"ours": result["ours"], **result["baselines"]}.items():
            points.setdefault(name, []).append((x, spread["median"], spread["low"], spread["high"]))
    return {name: sorted(values) for name, values in points.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--output", type=Path, default=HERE / "throughput.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for name, title, labels in PANELS:  # a benchmark's runs at several sizes may lie in several files
        paths = sorted(args.results.glob(f"{name}*.json"))
        documents = [document for document in map(json.loads, map(Path.read_text, paths)) if not document["smoke"]]
        if documents:
            # only the results named after the benchmark (not, say, tau2's tokens/s and scaling results)
            results = [result for document in documents for result in document["results"] if result["name"] == name]
            merged = {**documents[0], "results": results}
            panels.append((merged, title, labels))
    if not panels:
        raise SystemExit(f"no results in {args.results}: run the benchmarks first")
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for axis, (document, title, labels) in zip(axes[0], panels, strict=True):
        for name, points in series(document).items():
            xs = [p[0] for p in points]
            errors = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            axis.errorbar(xs, [p[1] for p in points], yerr=errors, marker="o", capsize=3, label=labels.get(name, name))
        axis.set_xscale("log")
        axis.set_xlabel("in flight (concurrent conversations or tasks)")
        axis.set_title(f"{title}\n{document['date'][:10]}, {document['commit']}, {document['machine'].split(',')[0]}")
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
