"""Benchmark: training samples/s with dynamic padding + length-grouped batches vs padding every batch to max length
(and vs dynamic padding alone).
Usage: python benchmarks/train_padding.py [--steps 8] [--repeats 3] [--rows 8000] [--out reports/bench_train_padding.json]

All variants train the same model (reset to the same weights) with the same batch size and learning rate on batches
built by the stage's Trainer dataloader from the same rows; they alternate within each repeat (order flipped every
repeat) so machine drift hits all alike. The first step of each measurement is warm-up and not timed. Writes
medians, per-repeat ratios and padding shares."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    # name: (group_by_length, pad_to_max_length)
    "dynamic+grouped": (True, False),  # the stage's default
    "pad_to_max_length": (False, True),  # the comparison asked for
    "dynamic": (False, False),  # dynamic padding alone, random batches: shows what grouping adds
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="data", help="the data stage's splits (train.parquet, labels.json)")
    ap.add_argument("--params", default="params.yaml", help="model/train params (source, max_length, batch, lr)")
    ap.add_argument("--source", default=None, help="override model.source (e.g. tiny for a smoke run)")
    ap.add_argument("--rows", type=int, default=8000,
                    help="rows to draw batches from (as many as the stage: length groups of 50 batches)")
    ap.add_argument("--steps", type=int, default=8,
                    help="optimizer steps per measurement, on batches spread over the epoch (first one untimed)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="reports/bench_train_padding.json")
    ns = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import numpy as np
    from transformers import DataCollatorWithPadding, TrainingArguments
    from transformers.utils import logging as hf_logging

    from kit.core.errors import DataError
    from kit.core.io import read_labels, write_json
    from kit.core.params import load_params
    from kit.finetune import encode, load_model, load_splits, sample_rows
    from kit.finetune.trainer import trainer_classes

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    params = load_params(ns.params, overrides={"model": {"source": ns.source}} if ns.source else None)
    t, L = params.finetune, params.model.max_length
    torch.set_num_threads(t.threads)
    labels = read_labels(Path(ns.data_dir) / "labels.json", DataError)
    rows = sample_rows(load_splits(ns.data_dir, labels)["train"], ns.rows, t.seed)
    model, tok = load_model(params.model, labels, t.seed)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ds = encode(rows, tok, L)
    KitTrainer = trainer_classes()[0]

    def batches_for(name: str, out_dir: str) -> list:
        """The batches the stage's Trainer would feed (its sampler and collator), taken at evenly spaced positions
        of the epoch so they cover the whole length distribution. A pure function of the seed: built once."""
        group, pad = VARIANTS[name]
        collator = DataCollatorWithPadding(tok, padding="max_length" if pad else "longest", max_length=L)
        args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=t.batch_size, seed=t.seed,
                                 report_to="none", disable_tqdm=True, use_cpu=not torch.cuda.is_available())
        trainer = KitTrainer(model=model, args=args, train_dataset=ds, data_collator=collator, processing_class=tok,
                             group_by_length=group)
        batches = list(trainer.get_train_dataloader())
        return [batches[i] for i in np.linspace(0, len(batches) - 1, ns.steps).round().astype(int)]

    def measure(name: str, picks: list) -> dict:
        model.load_state_dict(initial)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)

        def step(batch) -> None:  # what Trainer.training_step + optimizer step do, without the bookkeeping
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad()

        step(picks[0])  # warm-up (allocations), not timed
        start = time.perf_counter()
        for batch in picks[1:]:
            step(batch)
        seconds = time.perf_counter() - start
        samples = sum(int(b["input_ids"].shape[0]) for b in picks[1:])
        padded = sum(b["input_ids"].numel() for b in picks[1:])
        real = sum(int(b["attention_mask"].sum()) for b in picks[1:])
        return {"variant": name, "samples_per_s": samples / seconds, "seconds": seconds, "samples": samples,
                "padded_tokens": padded, "real_tokens": real, "padding_share": 1 - real / padded}

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        picks = {name: batches_for(name, tmp) for name in VARIANTS}
        for rep in range(ns.repeats):
            order = list(VARIANTS) if rep % 2 == 0 else list(VARIANTS)[::-1]  # drift within a repeat hits all
            for name in order:
                r = measure(name, picks[name])
                r["repeat"] = rep
                runs.append(r)
                print(f"repeat {rep} {name:18s} {r['samples_per_s']:7.1f} samples/s  "
                      f"padding {r['padding_share']:.0%}", file=sys.stderr, flush=True)

    def med(name: str, key: str = "samples_per_s") -> float:
        return statistics.median(r[key] for r in runs if r["variant"] == name)

    def ratios(a: str, b: str) -> list[float]:
        speed = {(r["repeat"], r["variant"]): r["samples_per_s"] for r in runs}
        return [speed[k, a] / speed[k, b] for k in range(ns.repeats)]

    per_rep = ratios("dynamic+grouped", "pad_to_max_length")
    per_rep_dyn = ratios("dynamic+grouped", "dynamic")
    result = {
        "what": "training samples/s, dynamic padding + length-grouped batches vs padding to model.max_length",
        "config": {"model_source": params.model.source, "max_length": L, "batch_size": t.batch_size,
                   "threads": t.threads, "rows": len(rows), "steps": ns.steps, "timed_steps": ns.steps - 1,
                   "repeats": ns.repeats, "torch": torch.__version__},
        "median_samples_per_s": {name: round(med(name), 2) for name in VARIANTS},
        "median_padding_share": {name: round(med(name, "padding_share"), 3) for name in VARIANTS},
        "speedup_dynamic_over_padded": round(statistics.median(per_rep), 3),
        "speedup_per_repeat": [round(x, 3) for x in per_rep],
        "speedup_grouped_over_dynamic_only": round(statistics.median(per_rep_dyn), 3),
        "speedup_grouped_over_dynamic_only_per_repeat": [round(x, 3) for x in per_rep_dyn],
        "runs": runs,
    }
    write_json(Path(ns.out), result)
    print(f"dynamic+grouped is {result['speedup_dynamic_over_padded']:.2f}x the samples/s of pad-to-{L} "
          f"(per repeat: {', '.join(f'{x:.2f}' for x in per_rep)}) -> {ns.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
