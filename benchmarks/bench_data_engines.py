"""Benchmark: rows/s of the data stage's pandas and Spark engines (hash split) on the embedded corpus, copied k times.
Usage: python benchmarks/bench_data_engines.py [--copies 1,4] [--repeat 2] [--master local[*]] [--out ...json]"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from kit.core.io import write_json
from kit.core.params import DataParams
from kit.data.read import read_chunks
from kit.optimize.machine import machine_peak

BASE = dict(source="csv", text_column="text", label_column="sentiment", split_method="hash")

# Each run is a fresh process: Spark's JVM start is part of what a stage run pays, and is reported apart.
CHILD = """
import json, sys, time
t = time.perf_counter()
from kit.core.io import write_json
from kit.core.params import DataParams
from kit.data import build_dataset
p = DataParams.model_validate_json(sys.argv[1])
if p.engine == "spark":
    from kit.data.spark import spark_session
    spark_session(p.spark_master)
start = time.perf_counter() - t
seconds = []
for _ in range(2):  # the first run pays Spark's JIT and Python-worker warm-up; the second shows a warm session
    t = time.perf_counter()
    r = build_dataset(p, sys.argv[2])
    seconds.append(time.perf_counter() - t)
print(json.dumps({"start_s": start, "build_s": seconds[0], "warm_build_s": seconds[1], "rows_read": r.rows_read,
                  "rows_out": r.rows["total"]}))
"""


def make_input(work: Path, copies: int) -> Path:
    """The embedded corpus's raw rows `copies` times as a CSV; copy k>0 suffixes ` #k` so its texts stay distinct."""
    path = work / f"corpus_x{copies}.csv"
    if path.exists():
        return path
    raw = pd.concat(read_chunks(DataParams(label_column="sentiment"), Path(".")), ignore_index=True)
    parts = [raw] + [raw.assign(text=raw["text"] + f" #{k}") for k in range(1, copies)]
    # Every field quoted: some texts hold a bare \r, which pandas' writer would otherwise leave unquoted.
    frame = pd.concat(parts, ignore_index=True).set_axis(["text", "sentiment"], axis=1)
    frame.to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    return path


def run_once(engine: str, csv: Path, out: Path, master: str) -> dict:
    p = DataParams(**BASE, path=str(csv.resolve()), engine=engine, spark_master=master, out_dir=str(out.resolve()))
    res = subprocess.run(
        [sys.executable, "-c", CHILD, p.model_dump_json(), "."], check=True, capture_output=True, text=True
    )
    got = json.loads(res.stdout.strip().splitlines()[-1])
    got["rows_per_s"] = round(got["rows_read"] / got["build_s"], 1)
    got["warm_rows_per_s"] = round(got["rows_read"] / got["warm_build_s"], 1)
    got["rows_per_s_with_start"] = round(got["rows_read"] / (got["build_s"] + got["start_s"]), 1)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--copies", default="1,4", help="comma-separated corpus copies (about 38k rows each)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--workdir", default="bench-data/engines")  # under the git-ignored bench-data/
    ap.add_argument("--out", default="reports/bench_data_engines.json")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for copies in (int(c) for c in args.copies.split(",")):
        csv = make_input(work, copies)
        for rep in range(args.repeat):
            for engine in ("pandas", "spark"):  # interleaved, so machine drift hits both alike
                got = run_once(engine, csv, work / "out", args.master)
                runs.append({"engine": engine, "copies": copies, "repeat": rep, **got})
                print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for copies in sorted({r["copies"] for r in runs}):
        for engine in ("pandas", "spark"):
            mine = [r for r in runs if r["copies"] == copies and r["engine"] == engine]
            summary[f"{engine}_x{copies}"] = {
                "rows_read": mine[0]["rows_read"],
                "median_rows_per_s": statistics.median(r["rows_per_s"] for r in mine),
                "median_warm_rows_per_s": statistics.median(r["warm_rows_per_s"] for r in mine),
                "median_rows_per_s_with_start": statistics.median(r["rows_per_s_with_start"] for r in mine),
                "median_start_s": round(statistics.median(r["start_s"] for r in mine), 2),
            }
    machine = machine_peak(os.cpu_count() or 1, measure=False)
    result = {
        "what": "data stage rows/s (rows read / seconds of build_dataset), hash split, per engine, each run in a fresh "
        "process: rows_per_s is its first build (cold: Spark's JIT and Python workers warming up), warm_rows_per_s a "
        "second build in the same process; start_s (imports and Spark session start) is excluded from both and "
        "included in rows_per_s_with_start",
        "command": "python " + " ".join(sys.argv),
        "machine": {
            "cpu": machine["cpu"],
            "isa": machine["isa"],
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "spark_master": args.master,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "summary": summary,
        "runs": runs,
    }
    write_json(args.out, result)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
