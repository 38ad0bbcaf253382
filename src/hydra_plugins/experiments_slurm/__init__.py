"""The framework's SLURM launcher (`hydra/launcher=slurm`): Hydra takes launchers from this package only."""
