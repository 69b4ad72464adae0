"""The finetune stage's inputs: the data stage's Parquet splits, checked, sampled and tokenised for the Trainer.
Label names come from labels.json (kit.core.io.read_labels); tokenising needs only the tokenizer passed in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit.core.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["SPLITS", "load_splits", "sample_rows", "EncodedRows", "encode"]

SPLITS = ("train", "validation", "test")


def load_splits(data_dir: str | Path, labels: list[str]) -> dict[str, pd.DataFrame]:
    """Read train/validation/test Parquet splits and check columns and label ids.

    Args:
        data_dir: directory holding `{train,validation,test}.parquet`.
        labels: label names in id order (from labels.json).

    Returns:
        split name -> DataFrame with columns `text` (str) and `label_id` (int).

    Raises:
        DataError: a file is missing, a column is missing, a split is empty, or a label id is out of range.
    """
    out = {}
    for split in SPLITS:
        path = Path(data_dir) / f"{split}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: not found (run the data stage first: `kit run data`)")
        df = pd.read_parquet(path)
        missing = [c for c in ("text", "label_id") if c not in df.columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; has {', '.join(map(str, df.columns))}")
        if df.empty:
            raise DataError(f"{path}: no rows")
        ids = df["label_id"]
        bad = df[(ids < 0) | (ids >= len(labels))]
        if len(bad):
            raise DataError(
                f"{path}: column label_id has {len(bad)} value(s) outside 0..{len(labels) - 1} "
                f"(labels.json lists {len(labels)} labels), e.g. {int(bad['label_id'].iloc[0])}"
            )
        out[split] = pd.DataFrame({"text": df["text"].astype(str), "label_id": ids.astype("int64")}).reset_index(
            drop=True
        )
    return out


def sample_rows(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """At most `n` rows, drawn deterministically (same rows for the same seed and input); all rows when n is None."""
    if n is None or n >= len(df):
        return df
    return df.sample(n=n, random_state=seed).reset_index(drop=True)


class EncodedRows:
    """Tokenised rows as a map-style dataset; the Trainer's collator pads each batch."""

    def __init__(self, enc: dict[str, list], labels: np.ndarray):
        self.enc, self.labels = enc, labels
        self.lengths = [len(x) for x in enc["input_ids"]]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = int(self.labels[i])
        return item


def encode(
    df: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_length: int, sort_by_length: bool = False
) -> EncodedRows:
    """Tokenise `df.text` (truncated to max_length, unpadded) with `df.label_id` as labels.

    Args:
        sort_by_length: order rows by token count (for evaluation: batches then need little padding; metrics use
            the labels carried along, so the order does not matter).
    """
    enc = dict(tokenizer(df["text"].tolist(), truncation=True, max_length=max_length))
    labels = df["label_id"].to_numpy()
    if sort_by_length:
        order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
        enc = {k: [v[i] for i in order] for k, v in enc.items()}
        labels = labels[order]
    return EncodedRows(enc, labels)
