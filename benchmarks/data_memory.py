"""Benchmark: peak memory of the data stage on a large CSV (default 1 GB), against the file's size.
Usage: python benchmarks/data_memory.py [--gb 1.0] [--workdir bench-data] [--out reports/bench_data_memory.json]"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("the car phone flight service new my this app again really so love hate great awful update today store "
         "driverless autonomous battery screen delay crew seat bag refund ticket weather traffic").split()
LABELS = ("negative", "neutral", "positive")


def make_csv(path: Path, size_bytes: int, seed: int = 0) -> int:
    """Write a labelled CSV of about size_bytes; every 50th row repeats an earlier text (exercises dedup)."""
    rng = random.Random(seed)
    rows = 0
    recent: list[str] = []
    with path.open("w", encoding="utf-8") as f:
        f.write("text,label\n")
        while f.tell() < size_bytes:
            lines = []
            for _ in range(10_000):
                if recent and rows % 50 == 49:
                    text = rng.choice(recent)
                else:
                    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))) + f" #{rows}"
                    if len(recent) < 1000:
                        recent.append(text)
                lines.append(f'"{text}",{LABELS[rows % 3]}\n')
                rows += 1
            f.write("".join(lines))
    return rows


CHILD = """
import json, resource, sys, time
from kit.core.params import DataParams
from kit.data import build_dataset
p = DataParams(source="csv", path=sys.argv[1], out_dir=sys.argv[2], split_method="hash", chunk_rows=int(sys.argv[3]))
t = time.perf_counter()
report = build_dataset(p, ".")
print(json.dumps({"seconds": time.perf_counter() - t, "rows": report.rows, "rows_read": report.rows_read,
                  "duplicates_dropped": report.duplicates_dropped,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--workdir", default="bench-data")
    ap.add_argument("--chunk-rows", type=int, default=100_000)
    ap.add_argument("--out", default="reports/bench_data_memory.json")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"corpus_{args.gb:g}gb.csv"
    size = int(args.gb * 1024**3)
    if not csv.exists() or csv.stat().st_size < size:
        t = time.perf_counter()
        n = make_csv(csv, size)
        print(f"generated {csv} ({csv.stat().st_size / 1024**3:.2f} GiB, {n:,} rows) in {time.perf_counter() - t:.0f}s")
    # A fresh process, so the peak RSS is the stage's alone (not this script's generator).
    res = subprocess.run([sys.executable, "-c", CHILD, str(csv), str(work / "out"), str(args.chunk_rows)],
                         check=True, capture_output=True, text=True)
    child = json.loads(res.stdout.strip().splitlines()[-1])
    result = {
        "file_bytes": csv.stat().st_size,
        "chunk_rows": args.chunk_rows,
        **child,
        "peak_rss_over_file_size": round(child["peak_rss_bytes"] / csv.stat().st_size, 3),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
