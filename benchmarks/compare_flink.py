#!/usr/bin/env python3
"""Side-by-side table of a Flink run (flink/run_matrix.sh output) and a
`sluice bench nexmark --json` run: events/s, events per CPU-second, the
ratios and peak RSS per query, then the geometric mean of the wall ratios.

Usage: compare_flink.py FLINK.jsonl SLUICE.jsonl
(for a query Flink ran more than once, its last successful run counts)."""
import json
import math
import sys


def load(path, keep):
    rows = {}
    with open(path) as lines:
        for line in lines:
            row = json.loads(line)
            if keep(row):
                rows[row["query"]] = row
    return rows


def rate(value):
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"


def main(flink_path, sluice_path):
    flink = load(flink_path, lambda row: row.get("status") == "ok")
    sluice = load(sluice_path, lambda row: True)
    print("| query | Sluice events/s | Sluice events/CPU-s | Flink events/s (net runtime) "
          "| Flink events/CPU-s | ratio (wall) | ratio (per core) | Sluice peak RSS "
          "| Flink peak RSS | RSS % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for query in sorted(set(flink) | set(sluice), key=lambda q: int(q[1:])):
        s, f = sluice.get(query), flink.get(query)
        if s and f:
            flink_rate = f["events_per_s_net"]
            flink_per_cpu = f["events"] / f["java_cpu_s"]
            ratio = s["events_per_second"] / flink_rate
            ratio_per_core = s["events_per_cpu_second"] / flink_per_cpu
            ratios.append(ratio)
            print(f"| {query} | {rate(s['events_per_second'])} | {rate(s['events_per_cpu_second'])} "
                  f"| {rate(flink_rate)} | {rate(flink_per_cpu)} | {ratio:.1f}x | {ratio_per_core:.1f}x "
                  f"| {s['peak_rss_mb']:.0f} MB | {f['peak_rss_mb']:.0f} MB "
                  f"| {100 * s['peak_rss_mb'] / f['peak_rss_mb']:.1f}% |")
        elif s:
            print(f"| {query} | {rate(s['events_per_second'])} | {rate(s['events_per_cpu_second'])} "
                  f"| Flink cannot run it | | | | {s['peak_rss_mb']:.0f} MB | | |")
    if ratios:
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"\ngeomean {geomean:.2f}x over {len(ratios)} queries; "
              f"at 5x or more: {sum(r >= 5 for r in ratios)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
