"""Training and evaluation of the video autoencoders (magvit) and tokenizers (magvit_v2).

Loss: MSE reconstruction, plus for a quantizing model `entropy_weight` x entropy loss and
`commitment_weight` x commitment loss. Metrics on the validation clips: MSE, PSNR (data range 1), SSIM
(torchmetrics, over frames), and for a quantizer the fraction of the 2^bits codes used and the perplexity
of their empirical distribution. Every validation epoch saves `reconstructions/epoch=NNNN.png` (input
frames above, reconstruction below) in the run directory (a logger that takes images gets it:
callbacks.LoggerReport).
"""
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from experiments.run_dir import epoch_number
from experiments.task_contract import ExperimentTask


class VideoTask(ExperimentTask):
    summary_keys = ("train/loss", "val/mse", "val/psnr", "val/ssim", "codes/used_fraction", "codes/perplexity")
    higher_is_better = ("val/psnr", "val/ssim", "codes/used_fraction", "codes/perplexity")
    lower_is_better = ("val/mse",)
    primary_metric = "val/psnr"

    def __init__(self, model, lr: float = 1e-3, weight_decay: float = 0.0, entropy_weight: float = 0.1,
                 commitment_weight: float = 0.25, pictures: int = 4, seed: int = 0):
        super().__init__()
        self.model, self.lr, self.weight_decay = model, lr, weight_decay
        self.entropy_weight, self.commitment_weight = entropy_weight, commitment_weight
        self.pictures, self.seed = pictures, seed

    def training_loss(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        out = self.model(batch)
        loss = F.mse_loss(out["recon"], batch)
        if "entropy_loss" in out:
            loss = loss + self.entropy_weight * out["entropy_loss"] + self.commitment_weight * out["commitment_loss"]
        self.add_training_terms(loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=self.lr,
                                 weight_decay=self.weight_decay)

    # ---- evaluation ----
    @staticmethod
    def _empty() -> dict:
        return {"se": 0.0, "values": 0, "ssim": 0.0, "frames": 0, "codes": [], "first": None}

    def on_validation_epoch_start(self) -> None:
        self._val = self._empty()

    @torch.no_grad()
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._accumulate(self._val, batch)

    def _accumulate(self, v: dict, batch: torch.Tensor) -> torch.Tensor:
        """Adds a batch to the sums of `v`; returns its reconstruction."""
        out = self.model(batch)
        recon = out["recon"].clamp(0, 1)
        self._add(v, batch, recon)
        if "codes" in out:
            v["codes"].append(out["codes"].reshape(-1).cpu())
        if v["first"] is None:
            v["first"] = (batch[: self.pictures].cpu(), recon[: self.pictures].cpu())
        return recon

    @staticmethod
    def _add(v: dict, batch: torch.Tensor, recon: torch.Tensor) -> None:
        v["se"] += F.mse_loss(recon, batch, reduction="sum").item()
        v["values"] += batch.numel()
        frames = lambda x: x.movedim(2, 1).reshape(-1, x.shape[1], x.shape[3], x.shape[4])  # noqa: E731
        n = batch.shape[0] * batch.shape[2]
        v["ssim"] += ssim(frames(recon), frames(batch), data_range=1.0).item() * n  # mean over frames
        v["frames"] += n

    def _metrics(self, v: dict) -> dict[str, float]:
        mse = v["se"] / v["values"]
        metrics = {"val/mse": mse, "val/psnr": 10 * math.log10(1.0 / max(mse, 1e-12)), "val/ssim": v["ssim"] / v["frames"]}
        if v["codes"]:
            codes = torch.cat(v["codes"])
            counts = torch.bincount(codes, minlength=2 ** self.model.bits).float()
            p = counts[counts > 0] / counts.sum()
            metrics["codes/used_fraction"] = (counts > 0).float().mean().item()
            metrics["codes/perplexity"] = math.exp(-(p * p.log()).sum().item())
        return metrics

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        metrics = self._metrics(self._val)
        self.epoch_metrics.update(metrics)
        self.log_dict(metrics)
        if self._val["first"] is not None and self.trainer.is_global_zero:
            from experiments.reports.video_pictures import draw_reconstructions

            name = f"epoch={epoch_number(self.current_epoch):04d}.png"
            path = Path(self.trainer.default_root_dir) / "reconstructions" / name
            draw_reconstructions(*self._val["first"], path)

    @torch.no_grad()
    def evaluate(self, datamodule, epoch: int) -> dict[str, float]:
        """The validation figures outside a Trainer (verify.py); writes nothing."""
        self.eval()
        v = self._empty()
        for batch in datamodule.val_dataloader():
            self._accumulate(v, batch.to(self.device))
        return self._metrics(v)

    @torch.no_grad()
    def evaluate_to(self, datamodule, epoch: int, folder: Path) -> dict[str, float]:
        """eval.py: the figures over every clip, `per_clip.csv` (each clip's MSE, PSNR, SSIM) and every
        clip's reconstruction, `pictures` clips per PNG (`reconstructions/clips_NNNN-MMMM.png`)."""
        from experiments.checkpoint.io import atomic_write_csv
        from experiments.reports.video_pictures import draw_reconstructions

        self.eval()
        v, rows = self._empty(), []
        names = getattr(datamodule, "val_names", None)
        for batch in datamodule.val_dataloader():
            batch = batch.to(self.device)
            recon = self._accumulate(v, batch).cpu()
            batch = batch.cpu()
            for clip, rec in zip(batch, recon):
                one = self._empty()
                self._add(one, clip[None], rec[None])
                k = len(rows)
                rows.append({"clip": names[k] if names else k, **self._metrics(one)})
            for start in range(0, batch.shape[0], self.pictures):
                first = len(rows) - batch.shape[0] + start
                last = min(first + self.pictures, len(rows)) - 1
                draw_reconstructions(batch[start:start + self.pictures], recon[start:start + self.pictures],
                                     folder / "reconstructions" / f"clips_{first:04d}-{last:04d}.png")
        atomic_write_csv([{k.removeprefix("val/"): val for k, val in r.items()} for r in rows], folder / "per_clip.csv")
        return self._metrics(v)

    @torch.no_grad()
    def check_outputs(self, batch: torch.Tensor) -> list[tuple[str, torch.Tensor, tuple]]:
        batch = batch.to(self.device)
        out = self.model(batch)
        return [("recon", out["recon"], tuple(batch.shape)), ("latent", out["latent"], tuple(out["latent"].shape))]
