"""Refresh the benchmark-target table of docs/benchmarks.md from bench/results/*.json (`make bench`).

Every figure a benchmark checks against a target is recorded next to the target in its JSON: a
key `target` (or `<name>_target`) with its verdict in `target_met` / `<name>_target_met` (gas
rows: `withinTarget`). This collects each of them into one table between the page's markers, so
the docs quote what the last run measured, not what someone typed. The page's sections on each
benchmark keep their own detailed tables.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench-targets:start -->", "<!-- bench-targets:end -->"
SKIP = {"target", "target_met", "withinTarget", "note", "codec"}


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _figures(entry: dict[str, Any], prefix: str) -> str:
    """The measured numbers beside a target: those named like it (`first_token_*`), else all."""
    numbers = {k: v for k, v in entry.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    numbers = {k: v for k, v in numbers.items() if k not in SKIP and not k.endswith("_met")}
    named = {k: v for k, v in numbers.items() if prefix and k.startswith(prefix)}
    chosen = named or numbers
    return ", ".join(f"{k} {_figure(v)}" for k, v in list(chosen.items())[:4])


def rows_of(name: str, node: Any, path: str = "") -> list[tuple[str, str, str, str, str]]:
    """(benchmark, what, target, met, figures) for every target recorded anywhere in `node`."""
    rows = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "target" or key.endswith("_target"):
                prefix = key.removesuffix("target").rstrip("_")
                met = node.get(f"{key}_met", node.get("withinTarget"))
                what = node.get("operation") or ".".join(filter(None, [path, prefix])) or name
                verdict = "yes" if met else "**no**" if met is not None else "-"
                rows.append((name, str(what), str(value), verdict, _figures(node, prefix)))
            elif isinstance(value, dict | list):
                rows += rows_of(name, value, f"{path}.{key}".lstrip("."))
    elif isinstance(node, list):
        for item in node:
            rows += rows_of(name, item, path)
    return [row for row in rows if row[2] not in ("None", "")]


def table() -> str:
    lines = ["| benchmark | what | target | met | measured |", "|---|---|---|---|---|"]
    for result in sorted(RESULTS.glob("*.json")):
        for row in rows_of(result.stem, json.loads(result.read_text())):
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    return "\n".join(lines)


def main() -> None:
    text = PAGE.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{PAGE.relative_to(ROOT)} has no {START} ... {END} block to refresh")
    generated = table()
    PAGE.write_text(pattern.sub(lambda _: f"{START}\n{generated}\n{END}", text))
    print(generated)
    print(f"\nrefreshed the benchmark-target table in {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
