#!/usr/bin/env python3
"""Turns criterion's results into the README's performance chart and table.

Reads every `target/criterion/**/new/benchmark.json` (+ `estimates.json` next to it) left by
`cargo bench -p tasker-benches --bench throughput` and `... --bench latency` (and any other
suite of `benches/` run before it), then writes:

- `docs/perf.svg`: one panel of horizontal bars per benchmark group (throughput groups in
  million tasks per second, latency groups in microseconds per round trip), tasker first;
- a Markdown table on stdout, with each contender's ratio to tasker, for the README.

Usage: python3 scripts/bench_chart.py [TARGET_DIR] [OUT_SVG]
Only the standard library is used.
"""

import json
import re
import sys
from pathlib import Path


def median(values):
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def load(target):
    """{group: [(name, value, unit)]} from criterion's JSON files.

    Suites that alternate contenders in rounds name each benchmark `<contender>/round<k>`:
    those become one row per contender, the median over its rounds. The `latency_runs/*`
    groups are left out (their figures are the per-run percentiles the suite prints).
    """
    cells = {}
    for bench in Path(target, "criterion").glob("**/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        mean_ns = est["mean"]["point_estimate"]
        group, name = meta["group_id"], meta["function_id"] or meta["value_str"] or ""
        if group.startswith("latency_runs/"):
            continue
        thr = meta.get("throughput") or {}
        if "Elements" in thr:
            value, unit = thr["Elements"] / mean_ns * 1e3, "M tasks/s"  # per ns -> M per s
        else:
            value, unit = mean_ns / 1e3, "µs"
        if group.startswith("latency/"):
            group, name = "latency (mean round trip)", group.split("/", 1)[1]
        name = re.sub(r"/round\d+$", "", name)
        cells.setdefault((group, name, unit), []).append(value)
    groups = {}
    for (group, name, unit), values in cells.items():
        groups.setdefault(group, []).append((name, median(values), unit))
    return groups


def order(rows):
    """tasker's rows first, then the peers by name."""
    return sorted(rows, key=lambda r: (not r[0].startswith("tasker"), r[0]))


def svg(groups, path):
    width, bar_h, gap, left = 760, 18, 6, 230
    parts, y = [], 10
    for group in sorted(groups):
        rows = order(groups[group])
        unit = rows[0][2]
        top = max(v for _, v, _ in rows) or 1.0
        parts.append(f'<text x="10" y="{y + 14}" font-weight="bold">{group} ({unit})</text>')
        y += 24
        for name, value, _ in rows:
            w = (width - left - 90) * value / top
            color = "#1f77b4" if name.startswith("tasker") else "#aaaaaa"
            parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{name}</text>')
            parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
            parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 13}">{value:.2f}</text>')
            y += bar_h + gap
        y += 14
    body = "\n".join(parts)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
        f'font-family="sans-serif" font-size="12">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n'
    )


# The tasker row each peer is compared with: the queued paths, like for like.
PRIMARY = ("tasker_callback", "tasker_queue_task")


def table(groups):
    print("| group | contender | value | tasker's advantage |")
    print("|---|---|---|---|")
    for group in sorted(groups):
        rows = order(groups[group])
        ours = [v for n, v, _ in rows if n in PRIMARY]
        for name, value, unit in rows:
            if not ours or name.startswith("tasker"):
                ratio = ""
            elif unit == "µs":  # lower is better: how many times faster tasker is
                ratio = f"{value / ours[0]:.2f}×"
            else:
                ratio = f"{ours[0] / value:.2f}×"
            print(f"| {group} | {name} | {value:.2f} {unit} | {ratio} |")


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "target"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/perf.svg"
    groups = load(target)
    if not groups:
        sys.exit(f"no criterion results under {target}/criterion: run the benches first")
    svg(groups, out)
    table(groups)
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
