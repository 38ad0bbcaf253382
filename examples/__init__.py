"""Worked examples of families that live outside the framework (README: "Add your own experiment")."""
