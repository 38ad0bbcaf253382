"""Training and evaluation of the curve regression: what the framework needs from a family
(experiments.family, docs/FAMILIES.md), and nothing else.

Loss: mean squared error on the noisy training points. Validation, on the clean grid: `val/mse` and
`val/r2` = 1 - SSE / SST (the share of the curve's variance explained; 0 for predicting its mean).
The end of training draws `fit.png` in the run directory: the curve and the model's prediction.
Prediction (predict.py ckpt=RUN input=FILE, `load_run(RUN).predict(FILE)`): y for each x of a file,
`predictions.csv`.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.family import ExperimentTask, atomic_savefig, atomic_write_csv


class SineTask(ExperimentTask):
    summary_keys = ("train/loss", "val/mse", "val/r2")
    primary_metric = "val/r2"  # verify.py fails a checkpoint that does not clearly beat an untrained one
    higher_is_better = ("val/r2",)
    lower_is_better = ("val/mse",)

    def __init__(self, model, lr: float = 3e-3, weight_decay: float = 0.0, seed: int = 0):
        super().__init__()
        self.model, self.lr, self.weight_decay, self.seed = model, lr, weight_decay, seed
        self._last = None  # the latest validation's (prediction, target) rows, drawn at the end

    def training_loss(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self.model(batch[:, :1]), batch[:, 1:])
        self.add_training_terms(loss)  # the framework reports the epoch's mean as train/loss
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # ---- evaluation: the framework runs these for validation, verify.py and eval.py alike ----
    @torch.no_grad()
    def evaluation_step(self, batch: torch.Tensor, epoch: int) -> torch.Tensor:
        batch = batch.to(self.device)
        return torch.cat([batch[:, :1], self.model(batch[:, :1]), batch[:, 1:]], 1)  # (x, prediction, target) rows

    def figures(self, parts: list, epoch: int) -> dict[str, float]:
        return fit_figures(torch.cat(parts))

    def evaluation_files(
        self, parts, figures, folder: Path, epoch: int, during_training: bool, datamodule=None
    ) -> None:
        """fit.png: the curve and the model's prediction (at the end of training: on_fit_end)."""
        self._last = torch.cat(parts).cpu()
        if not during_training:
            draw_fit(self._last, figures, folder / "fit.png")

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and self._last is not None:
            draw_fit(self._last, self.epoch_metrics, Path(self.trainer.default_root_dir) / "fit.png")

    # ---- prediction: optional (predict.py and load_run(...).predict refuse a family without it) ----
    def prediction_data(self, data: dict, path: Path | None) -> dict:
        return {**data, "points": str(path) if path else None}  # no file: the validation grid's x values

    @torch.no_grad()
    def prediction_step(self, x: torch.Tensor) -> list[dict]:
        y = self.model(x.to(self.device)[:, None])[:, 0]
        return [{"x": float(a), "y": float(b)} for a, b in zip(x, y)]

    def prediction_files(self, records: list[dict], folder: Path, datamodule) -> None:
        atomic_write_csv(records, folder / "predictions.csv")

    @torch.no_grad()
    def check_outputs(self, batch: torch.Tensor) -> list[tuple[str, torch.Tensor, tuple]]:
        batch = batch.to(self.device)
        return [("prediction", self.model(batch[:, :1]), (len(batch), 1))]


def fit_figures(rows: torch.Tensor) -> dict[str, float]:
    """val/mse and val/r2 from (x, prediction, target) rows."""
    prediction, target = rows[:, 1].double(), rows[:, 2].double()
    sse = ((prediction - target) ** 2).sum()
    sst = ((target - target.mean()) ** 2).sum()
    return {"val/mse": (sse / len(rows)).item(), "val/r2": (1 - sse / sst).item()}


def draw_fit(rows: torch.Tensor, metrics: dict, path: Path) -> None:
    """The curve and the model's prediction over the rows evaluated (all of the validation set, or the
    batches a debug run limits it to), in order of x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    rows = rows[rows[:, 0].argsort()]
    ax.plot(rows[:, 0], rows[:, 2], label="curve", color="black", linewidth=1)
    ax.plot(rows[:, 0], rows[:, 1], label="model", color="tab:red", linewidth=1)
    ax.set_title(f"val/r2 {metrics.get('val/r2', float('nan')):.4f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
