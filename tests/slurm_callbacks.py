"""A callback for the Slurm tests (`+callbacks.wait._target_=tests.slurm_callbacks.WaitForWarning
+callbacks.wait.step=N`): in the start that trains step N, training pauses after it until the cluster's
warning signal has come (3 minutes at most), so that a time limit's warning, which Slurm sends whenever its
30-second check comes round, lands at a known step."""

import time

from lightning.pytorch.callbacks import Callback

from experiments.stop import PREEMPTION


class WaitForWarning(Callback):
    def __init__(self, step: int, timeout_s: float = 180.0):
        self.step, self.timeout_s = step, timeout_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        deadline = time.monotonic() + self.timeout_s
        while trainer.global_step == self.step and not PREEMPTION.received and time.monotonic() < deadline:
            time.sleep(0.1)
