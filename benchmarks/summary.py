"""The README's table of latest results, as Markdown, from ``benchmarks/results/*.json``.

python benchmarks/summary.py
"""

from __future__ import annotations

import json

from results import RESULTS_DIR

ORDER = (
    "efficiency",
    "hop_rate",
    "p2p_vs_baselines",
    "fair_matrix_vs_ours",
    "memory",
    "offloading",
    "tau2_vs_runner",
    "naturalreasoning_partitions",
    "scale",
)


def spread(entry: dict) -> str:
    digits = 2 if abs(entry["median"]) < 10 else 1 if abs(entry["median"]) < 1000 else 0
    return f"{entry['median']:,.{digits}f} [{entry['low']:,.{digits}f}-{entry['high']:,.{digits}f}]"


def main() -> None:
    print("| benchmark | setting | ours (median [range]) | baselines | ratios (median) | goal | date, commit, load |")
    print("|---|---|---|---|---|---|---|")
    for name in ORDER:
        for path in sorted(RESULTS_DIR.glob(f"{name}*.json")):  # a run at other sizes may have its own file
            rows(json.loads(path.read_text()))


def rows(document: dict) -> None:
    """Print one table row per result of ``document``."""
    load = document.get("load_average_1m", {})
    when = f"{document['date'][:16]}, {document['commit']}, load {load.get('start', '?')}-{load.get('end', '?')}"
    for result in document["results"]:
        setting = ", ".join(f"{key}={value}" for key, value in result["params"].items())
        baselines = "<br>".join(f"{key}: {spread(value)}" for key, value in result["baselines"].items())
        ratios = "<br>".join(f"vs {key}: {value['median']:.2f}x" for key, value in result["ratios"].items())
        verdict = {True: "met", False: "**missed**", None: ""}[result["met"]]
        goal = f"{result['goal']} {verdict}".strip()
        ours = f"{spread(result['ours'])} {result['metric']}"
        print("| " + " | ".join([result["name"], setting, ours, baselines, ratios, goal, when]) + " |")


if __name__ == "__main__":
    main()
