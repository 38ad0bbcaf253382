"""A callback for tests to give train.py (`+callbacks.record._target_=tests.batch_record.FirstBatches`): what
each training batch held, by epoch and index, appended to `batches.txt` in the folder the run started from."""

import hashlib

from lightning.pytorch.callbacks import Callback


class FirstBatches(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        digest = hashlib.sha256(batch.detach().cpu().numpy().tobytes()).hexdigest()[:12]
        with open("batches.txt", "a") as f:
            f.write(f"{trainer.current_epoch} {batch_idx} {digest}\n")
