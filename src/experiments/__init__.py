"""Hydra-driven experiment framework: train.py, verify.py, eval.py and predict.py over config groups; in Python,
`from experiments import load_run` (api.py)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # load_run imports torch and Lightning: only when it is asked for, never by `import experiments` (the
    # programs' --help and the DDP child processes import the package first)
    if name == "load_run":
        from experiments.api import load_run

        return load_run
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")
