"""Hydra-driven experiment framework: train.py and verify.py over config groups."""

__version__ = "0.1.0"
