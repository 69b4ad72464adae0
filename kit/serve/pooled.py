"""The pooled sentence embedding of a served classifier, read from its own graph: the float input of the classification
head (BERT's pooler Tanh) exposed as an extra output, so the server logs the embedding the model decided on."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from kit.core.errors import ModelDirError

__all__ = ["POOLER_OP", "pooled_output_name", "graph_with_pooled_output", "add_named_pooled_output"]

# BERT's pooler is dense + tanh on [CLS]; the head (dropout, dense) follows it, so walking back from the logits the
# first Tanh met is the pooler's, in the fp32 graph and in the quantized one (quantize/matmul/cast nodes between).
POOLER_OP = "Tanh"


def _load(model_path: str | Path) -> Any:
    try:
        import onnx
    except ImportError:  # the serving image installs it; a hand-made environment may not
        raise ModelDirError(
            f"{model_path}: logging pooled embeddings needs the `onnx` package (pip install onnx), "
            "or set serve.prediction_log.embeddings to false"
        ) from None
    try:
        return onnx.load(str(model_path))
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not a graph
        raise ModelDirError(f"{model_path}: cannot load ONNX model: {exc}") from None


def _pooled_name(model: Any, model_path: str | Path, logits: str) -> str:
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    if logits not in producer:
        raise ModelDirError(f"{model_path}: no node produces the {logits!r} output")
    # Breadth first: the nearest Tanh ancestor of the logits (an encoder using a tanh GELU has Tanh nodes further up).
    todo, seen = deque([producer[logits]]), set()
    while todo:
        node = todo.popleft()
        for name in node.input:
            parent = producer.get(name)
            if parent is None or id(parent) in seen:
                continue
            if parent.op_type == POOLER_OP:
                return str(parent.output[0])
            seen.add(id(parent))
            todo.append(parent)
    raise ModelDirError(f"{model_path}: no pooled embedding: no {POOLER_OP} node (a BERT pooler) feeds {logits!r}")


def pooled_output_name(model_path: str | Path, logits: str = "logits") -> str:
    """The name of the pooled sentence-embedding tensor of a classifier graph.

    Args:
        model_path: the .onnx file.
        logits: the graph output the classification head writes.

    Returns:
        The output of the nearest Tanh node upstream of `logits` (e.g. '/inner/bert/pooler/activation/Tanh_output_0').

    Raises:
        ModelDirError: the file cannot be loaded or holds no such tensor (names the file).
    """
    return _pooled_name(_load(model_path), model_path, logits)


def graph_with_pooled_output(model_path: str | Path, logits: str = "logits") -> tuple[bytes, str]:
    """The graph with its pooled embedding added as an output [batch, hidden], serialized for an ORT session.

    Args:
        model_path: the .onnx file.
        logits: the graph output the classification head writes.

    Returns:
        (the serialized model, the pooled output's name).

    Raises:
        ModelDirError: the file cannot be loaded or holds no pooled embedding (names the file).
    """
    model = _load(model_path)  # first: it names a missing `onnx` package
    import onnx

    name = _pooled_name(model, model_path, logits)
    if name not in {o.name for o in model.graph.output}:
        elem, hidden = _type_of(model, name)
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, ["batch", hidden]))
    return model.SerializeToString(), name


def _type_of(model: Any, name: str) -> tuple[int, int | None]:
    """Element type and last dimension of a tensor, by shape inference (FLOAT and unknown width if it cannot tell)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # custom ops (com.microsoft quantized kernels) can stop inference; the declaration is a hint
        inferred = model
    for vi in inferred.graph.value_info:
        if vi.name == name and vi.type.tensor_type.elem_type:
            dims = vi.type.tensor_type.shape.dim
            hidden = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
            return int(vi.type.tensor_type.elem_type), hidden
    return onnx.TensorProto.FLOAT, None


def add_named_pooled_output(model: Any, model_path: str | Path, logits: str = "logits") -> bool:
    """Declare the pooled embedding as the graph output `pooled` (an Identity of the pooler's tensor), in place.

    The optimize stage writes the serving graph this way, so a server logging embeddings needs no `onnx` package.

    Args:
        model: a loaded onnx ModelProto.
        model_path: where it came from (named in errors).
        logits: the graph output the classification head writes.

    Returns:
        True if added; False when the graph has no pooler to read (another architecture: it serves without).
    """
    import onnx

    from kit.serve.model import POOLED_NAME

    if POOLED_NAME in {o.name for o in model.graph.output}:
        return True
    try:
        name = _pooled_name(model, model_path, logits)
    except ModelDirError:
        return False
    elem, hidden = _type_of(model, name)
    model.graph.node.append(onnx.helper.make_node("Identity", [name], [POOLED_NAME], name="kit_pooled_output"))
    model.graph.output.append(onnx.helper.make_tensor_value_info(POOLED_NAME, elem, ["batch", hidden]))
    return True
