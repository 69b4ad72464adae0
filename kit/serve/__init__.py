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
    "RunCost": "kit.serve.batcher",
}

__getattr__, __dir__ = lazy_api(__name__, _SOURCES)
