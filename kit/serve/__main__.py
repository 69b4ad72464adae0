"""`python -m kit.serve MODEL_DIR [--host H] [--port P] [--params FILE]`: the model server without the root CLI.
The load test starts this entry point, so serving never depends on kit.cli (or on anything but kit.core)."""

from kit.core.boundary import run_single
from kit.serve.commands import serve

if __name__ == "__main__":
    run_single(serve)
