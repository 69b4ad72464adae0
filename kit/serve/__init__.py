"""The torch-free model server (`kit serve`, `python -m kit.serve`): FastAPI app over an ONNX Runtime micro-batcher,
with Prometheus metrics. Names load lazily, so importing kit.serve.commands never pulls in FastAPI or ONNX Runtime."""

from __future__ import annotations

from kit.core.lazy import lazy_api

__all__ = [
    "create_app",
    "run",
    "parse_texts",
    "PredictRequest",
    "PredictResponse",
    "RequestError",
    "ServeMetrics",
    "ModelMeta",
    "OnnxTextClassifier",
    "make_session",
    "read_model_dir",
    "MicroBatcher",
    "RunCost",
    "plan_batches",
    "Tokens",
    "Batched",
    "PredictionRecord",
    "LogSettings",
    "PredictionLogWriter",
    "encode_embedding",
    "decode_embeddings",
    "pooled_output_name",
    "PredictionRecorder",
    "create_admin_app",
    "read_keys",
    "KeyStore",
]

# Public name -> the module defining it; imported on first access only. Nothing here may reach torch,
# transformers or sklearn (tests/test_layout.py checks the whole package).
_SOURCES = {
    "create_app": "kit.serve.app",
    "run": "kit.serve.app",
    "parse_texts": "kit.serve.app",
    "PredictRequest": "kit.serve.app",
    "PredictResponse": "kit.serve.app",
    "RequestError": "kit.serve.app",
    "ServeMetrics": "kit.serve.telemetry",
    "ModelMeta": "kit.serve.model",
    "OnnxTextClassifier": "kit.serve.model",
    "make_session": "kit.serve.model",
    "read_model_dir": "kit.serve.model",
    "MicroBatcher": "kit.serve.batcher",
    "RunCost": "kit.serve.buckets",
    "plan_batches": "kit.serve.buckets",
    "Tokens": "kit.serve.model",
    "Batched": "kit.serve.batcher",
    "PredictionRecord": "kit.serve.predrecord",
    "LogSettings": "kit.serve.predlog",
    "PredictionLogWriter": "kit.serve.predlog",
    "encode_embedding": "kit.serve.predrecord",
    "decode_embeddings": "kit.serve.predrecord",
    "pooled_output_name": "kit.serve.pooled",
    "PredictionRecorder": "kit.serve.recorder",
    "create_admin_app": "kit.serve.admin",
    "read_keys": "kit.serve.auth",
    "KeyStore": "kit.serve.auth",
}

__getattr__, __dir__ = lazy_api(__name__, _SOURCES)
