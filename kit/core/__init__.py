"""What every stage shares: params (schema), errors, io, runner (papermill), layout, reports, metrics, boundary, lazy.
Import the module you need (`from kit.core.params import load_params`); nothing here imports torch or a stage."""
