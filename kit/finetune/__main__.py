"""`python -m kit.finetune [--params FILE]`: the finetune stage outside papermill, on every torchrun process.
Same options and exit codes as `kit finetune` (0 ok, 1 on a KitError, 143 after SIGTERM)."""

from kit.core.boundary import run_single
from kit.finetune.commands import finetune

if __name__ == "__main__":
    run_single(finetune)
