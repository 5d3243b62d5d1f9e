#!/usr/bin/env python3
"""Markdown table of the `kernels` benchmark from criterion's JSON (target/criterion).

    python3 crates/quant/benches/criterion_table.py [target/criterion] --bw2 28.3 --bw1 18.0

Per benchmark: median time per call, weight bytes per second (GB/s = 1e9 B/s), GOPS
(2·rows·cols·tokens multiply-adds counted as 2 ops), the fraction of the measured DRAM read
bandwidth (examples/bandwidth.rs; the 1-thread figure for `/1thr` rows), and the cost of the call
relative to the 1-token call of the same matrix.
"""
import argparse
import json
import pathlib
import re


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default="target/criterion")
    ap.add_argument("--bw2", type=float, help="measured GB/s with all threads")
    ap.add_argument("--bw1", type=float, help="measured GB/s with one thread")
    args = ap.parse_args()
    rows = []
    for bench in sorted(pathlib.Path(args.root).glob("**/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        m = re.match(r"(\d+)x(\d+)", meta["function_id"])
        t = re.match(r"t(\d+)", meta["value_str"])
        if not (m and t):
            continue
        r, c, n = int(m.group(1)), int(m.group(2)), int(t.group(1))
        sec = est["median"]["point_estimate"] * 1e-9
        nbytes = meta["throughput"]["Bytes"]
        rows.append((meta["group_id"], meta["function_id"], n, meta["value_str"], sec, nbytes, r * c))
    rows.sort(key=lambda x: (x[0].startswith("hot"), x[0], x[1], x[3].endswith("1thr"), x[2]))
    base = {(g, s, v.replace(f"t{n}", "t1")): sec for g, s, n, v, sec, _, _ in rows if n == 1}
    print("| group | rows×cols | tokens | time | weights GB/s | GOPS | of DRAM BW | × 1-token time |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for g, shape, n, v, sec, nbytes, rc in rows:
        gbs = nbytes / sec / 1e9
        gops = 2 * rc * n / sec / 1e9
        bw = args.bw1 if v.endswith("1thr") else args.bw2
        frac = f"{gbs / bw:.0%}" if bw else ""
        rel = base.get((g, shape, v.replace(f"t{n}", "t1")))
        rel = f"{sec / rel:.1f}" if rel else ""
        unit = f"{sec * 1e6:.0f} µs" if sec < 1e-2 else f"{sec * 1e3:.1f} ms"
        print(f"| {g} | {shape} | {v} | {unit} | {gbs:.1f} | {gops:.0f} | {frac} | {rel} |")


if __name__ == "__main__":
    main()
