"""What every ONNX file the kit writes carries in its metadata_props: the encoder's shape (for FLOP counts) and the
kit's stamp (`kit.kind`), and a reader that gets them from the file's framing without loading its weights."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["META_PREFIX", "ModelSpec", "read_onnx_metadata", "is_kit_onnx"]

# Every ONNX file the kit writes carries metadata_props under this prefix (model shape, kind): its marker.
META_PREFIX = "kit."


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a BERT-like encoder: enough to count its FLOPs and to configure the ORT fusion passes."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_labels: int

    def flops(self, batch: int, seq: int) -> float:
        """Multiply-add FLOPs (2 per MAC) of one forward pass over a [batch, seq] input (embeddings excluded).

        Per layer and token: Q, K, V and output projections (4 h^2 MACs), the feed-forward (2 h i MACs); per layer
        and sequence: attention scores and the weighted sum (2 s^2 h MACs). Plus pooler (h^2) and classifier (h c).
        """
        h, i, s = self.hidden_size, self.intermediate_size, seq
        per_layer = batch * s * (4 * h * h + 2 * h * i) + 2 * batch * s * s * h
        head = batch * (h * h + h * self.num_labels)
        return 2.0 * (self.num_layers * per_layer + head)

    def metadata(self) -> dict[str, str]:
        """ONNX metadata_props that let a bare .onnx file be benchmarked with FLOP counts."""
        return {f"{META_PREFIX}{k}": str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelSpec | None:
        try:
            return cls(**{k: int(props[f"{META_PREFIX}{k}"]) for k in cls.__dataclass_fields__})
        except (KeyError, ValueError):
            return None


def _varint(f: BinaryIO) -> int | None:
    shift = value = 0
    while byte := f.read(1):
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    return None


def _length_delimited(f: BinaryIO, field: int) -> Iterator[bytes]:
    """Payloads of one length-delimited protobuf field, seeking past every other field (a model's weights are never
    read)."""
    while (tag := _varint(f)) is not None:
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _varint(f)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, 1)
        elif wire == 2:
            size = _varint(f)
            if size is None:
                return
            if number == field:
                yield f.read(size)
            else:
                f.seek(size, 1)
        else:  # groups (3, 4) are not in ONNX's schema: not an ONNX file
            return


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props, read from the protobuf framing alone (ms for a GB file; onnx.load parses it
    all). A file that is not ONNX gives {}."""
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            for entry in _length_delimited(f, 14):  # ModelProto.metadata_props
                kv = {1: "", 2: ""}
                for num in (1, 2):  # StringStringEntryProto: key = 1, value = 2
                    kv[num] = b"".join(_length_delimited(io.BytesIO(entry), num)).decode("utf-8", "replace")
                props[kv[1]] = kv[2]
    except (OSError, ValueError):
        return {}
    return props


def is_kit_onnx(path: str | Path) -> bool:
    """Whether the kit wrote this .onnx file (its metadata carries the kit's stamp); a user's own model is not."""
    return f"{META_PREFIX}kind" in read_onnx_metadata(path)
