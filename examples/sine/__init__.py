"""A fourth family in its own folder: regression of a noisy 1-D curve by a small MLP."""
