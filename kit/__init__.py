"""kit: a Jupyter-first reproducible workflow kit, one package per pipeline stage plus `kit.core`.
Stages: data, finetune, optimize, deploy, cost (and serve, the model server they share); see docs/pipeline.md."""

__version__ = "0.1.0"
