"""Worked examples of families that live outside the framework (docs/own-family.md)."""
