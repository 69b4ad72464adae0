"""The finetune stage's transformers Trainer pieces: the Trainer subclass, its epoch-seeded sampler and callbacks.
Also class weights, the training order, validation metrics and torchrun rank info; torch/transformers load lazily."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.errors import DataError
from kit.core.io import write_json
from kit.core.metrics import accuracy_macro_f1
from kit.finetune.checkpoint import CHECKPOINT_PREFIX, MARKER

__all__ = ["rank_and_world", "local_world", "class_weights", "training_order", "trainer_classes", "compute_metrics"]


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_world() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 for a plain process): they share its cores."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def class_weights(label_ids: Any, n_classes: int) -> list[float]:
    """Loss weight per class id, n_rows / (n_classes * class_rows): sklearn's class_weight="balanced".

    Raises:
        DataError: a class has no training rows (its weight would be infinite).
    """
    from sklearn.utils.class_weight import compute_class_weight

    ids = np.asarray(label_ids, dtype=np.int64)
    counts = np.bincount(ids, minlength=n_classes)
    if (counts == 0).any():
        raise DataError(
            f"train split: no rows of class id(s) {np.flatnonzero(counts == 0).tolist()}; "
            "class_weight 'balanced' needs every class"
        )
    return compute_class_weight("balanced", classes=np.arange(n_classes), y=ids).tolist()


def training_order(lengths: list[int], batch_size: int, seed: int, group_by_length: bool) -> list[int]:
    """The order in which one epoch visits the training rows; consecutive slices of `batch_size` are the batches.

    Args:
        lengths: token count of each row.
        batch_size: rows per optimizer step (all processes, times gradient accumulation).
        seed: the whole order is a function of it (the sampler passes seed + epoch).
        group_by_length: batch rows of similar length (the transformers mega-batch grouping) and shuffle the batches.

    Returns:
        A permutation of range(len(lengths)).
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    gen = torch.Generator().manual_seed(seed)
    if not group_by_length:
        return torch.randperm(len(lengths), generator=gen).tolist()
    idx, bs = get_length_grouped_indices(lengths, batch_size, generator=gen), batch_size
    full = len(idx) // bs * bs  # a short last batch stays last: moved, it would shift every later batch
    order = torch.randperm(full // bs, generator=gen).tolist()
    return [i for b in order for i in idx[b * bs : (b + 1) * bs]] + idx[full:]


def trainer_classes():
    """(KitTrainer, MarkComplete, StopOnSignal, Progress, Live): the Trainer subclass with an epoch-seeded (optionally
    length-grouped) sampler and the stage's callbacks; defined lazily so `import kit.finetune.trainer` does not import
    transformers."""
    import torch
    from transformers import Trainer, TrainerCallback
    from transformers.integrations import DVCLiveCallback

    class EpochSeededSampler(torch.utils.data.Sampler):
        """Training order as a pure function of (seed, epoch), optionally grouping similar lengths into batches.

        The Trainer's own length sampler draws from the global RNG, so a run resumed in a later epoch would see
        another order than the uninterrupted run; this one does not. It also leaves the batches of each 50-batch
        mega-batch in descending length order, a sawtooth in what each stretch of steps sees; with the embedded data
        and one epoch it gave test macro-F1 0.715 where shuffling the grouped batches gave 0.733 (one run each).
        """

        def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool):
            self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group_by_length
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)

        def __len__(self) -> int:
            return len(self.lengths)

        def __iter__(self):
            return iter(training_order(self.lengths, self.batch_size, self.seed + self.epoch, self.group))

    class KitTrainer(Trainer):
        """The transformers Trainer with EpochSeededSampler as its training sampler (datasets from `encode`)."""

        def __init__(self, *a, group_by_length: bool = True, class_weights: list[float] | None = None, **kw):
            super().__init__(*a, **kw)
            self._kit_group = group_by_length
            self._kit_sampler = None
            self._kit_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
            self.kit_save_s: list[float] = []  # seconds each checkpoint save took (the cost stage prices spot with it)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self._kit_weights is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits
            weights = self._kit_weights.to(logits.device)
            if not (model.training and _dist_ready()):
                loss = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
                return (loss, outputs) if return_outputs else loss
            # DDP averages the ranks' gradients; a weighted mean per rank would divide each shard by its own weight
            # sum. Dividing by the global sum (times the world size) makes the step the single-process one.
            w = weights[labels]
            total = w.sum().detach().clone()
            torch.distributed.all_reduce(total)
            per_row = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
            loss = (per_row * w).sum() * torch.distributed.get_world_size() / total
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            # The global batch: accelerate deals consecutive per-process batches of this order out to the ranks,
            # so each optimizer step sees the rows a single process would (the grouping must not depend on world).
            self._kit_sampler = EpochSeededSampler(
                ds.lengths,
                self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size,
                self.args.data_seed if self.args.data_seed is not None else self.args.seed,
                self._kit_group,
            )
            return self._kit_sampler

        def _save_checkpoint(self, *a, **kw):
            # Timing only: nothing here touches the model, optimizer or RNG state, so training stays bitwise the same.
            t0 = time.perf_counter()
            super()._save_checkpoint(*a, **kw)
            self.kit_save_s.append(time.perf_counter() - t0)

        def _run_epoch(self, *a, **kw):
            # accelerate forwards set_epoch through most loader wrappers, but not a skipped DDP shard on resume.
            if self._kit_sampler is not None and "epoch" in kw:
                self._kit_sampler.set_epoch(kw["epoch"])
            return super()._run_epoch(*a, **kw)

    class MarkComplete(TrainerCallback):
        """Write MARKER into each checkpoint after the Trainer finished writing it (all ranks included)."""

        def __init__(self, fingerprint: str):
            self.fingerprint = fingerprint
            self.last: Path | None = None

        def on_save(self, args, state, control, **kw):
            if _dist_ready():
                torch.distributed.barrier()  # every rank has written its RNG state
            ckpt = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            if state.is_world_process_zero:
                write_json(ckpt / MARKER, {"fingerprint": self.fingerprint, "step": state.global_step})
            self.last = ckpt
            return control

    class StopOnSignal(TrainerCallback):
        """On SIGTERM: finish the current step, save a checkpoint, stop. All ranks agree on the step."""

        def __init__(self):
            self.requested = False
            self.stopped_at: int | None = None

        def on_step_end(self, args, state, control, **kw):
            flag = self.requested
            if _dist_ready():
                t = torch.tensor([int(flag)], device=args.device)  # nccl reduces only GPU tensors
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
                flag = bool(t.item())
            if flag:
                control.should_save = True
                control.should_training_stop = True
                self.stopped_at = state.global_step
            return control

    class Progress(TrainerCallback):
        """A plain tqdm bar over optimizer steps and one line per evaluation (main process only)."""

        def __init__(self):
            self.bar = None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                import tqdm

                self.bar = tqdm.tqdm(total=state.max_steps, initial=state.global_step, desc="finetune", unit="step")

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if self.bar is not None and metrics:
                self.bar.write(
                    f"step {state.global_step}/{state.max_steps} (epoch {state.epoch:.2f}): "
                    f"val macro-F1 {metrics.get('eval_macro_f1', float('nan')):.4f}  "
                    f"acc {metrics.get('eval_accuracy', float('nan')):.4f}  "
                    f"loss {metrics.get('eval_loss', float('nan')):.4f}"
                )

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    class Live(DVCLiveCallback):
        """transformers' DVCLive callback, inside a DVC pipeline: no git/experiment side effects, the Trainer's step
        as DVCLive's step, and on resume the checkpoint's history replayed, so plots equal an uninterrupted run's."""

        def __init__(self, live_dir: Path, params: dict[str, Any]):
            super().__init__()
            self._dir, self._params = live_dir, params

        def setup(self, args, state, model):
            self._initialized = True
            if not state.is_world_process_zero:
                return
            from dvclive import Live as DVCLive

            class PipelineLive(DVCLive):
                # DVCLive's repository hook would `dvc init` a plain git repo, fail in a git repo without commits
                # (SCMError: Empty git repo) and record experiments; in a pipeline `dvc repro` / `dvc exp run` own
                # all of that, and dvc.yaml lists our files, so the hook is skipped altogether.
                def _init_dvc(self) -> None:
                    self._save_dvc_exp = False

            # save_dvc_exp=False / dvcyaml=None: `dvc exp run` and `dvc repro` own the experiment and dvc.yaml.
            self.live = PipelineLive(dir=str(self._dir), save_dvc_exp=False, dvcyaml=None, report=None)
            self.live.log_params(self._params)
            for logs in state.log_history:
                logs = dict(logs)
                self.live.step = int(logs.pop("step", 0))
                self._log(logs)

        def _log(self, logs: dict[str, Any]) -> None:
            from dvclive.plots import Metric

            logged = False
            for key, value in logs.items():
                name = _live_name(key)
                if name and Metric.could_log(value):
                    self.live.log_metric(name, value)
                    logged = True
            if logged:
                self.live.next_step()

        def on_log(self, args, state, control, model=None, logs=None, **kw):
            if not self._initialized:
                self.setup(args, state, model)
            if state.is_world_process_zero:
                self.live.step = state.global_step
                self._log(logs or {})

    return KitTrainer, MarkComplete, StopOnSignal, Progress, Live


def _live_name(key: str) -> str | None:
    """DVCLive metric name for a Trainer log key: per-step curves only (train/*, eval/*); end-of-run summaries
    (train_runtime, total_flos, ...) are in reports/train.json instead."""
    if key in ("loss", "grad_norm", "learning_rate"):
        return f"train/{key}"
    if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")):
        return f"eval/{key[5:]}"
    return None


def compute_metrics(eval_pred) -> dict[str, float]:
    """The Trainer's validation metrics (macro-F1 picks the best checkpoint) from its logits and label ids."""
    return accuracy_macro_f1(eval_pred.label_ids, np.asarray(eval_pred.predictions).argmax(-1))
