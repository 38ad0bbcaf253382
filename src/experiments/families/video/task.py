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

from experiments.family import atomic_write_csv, epoch_number, ExperimentTask


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
    @torch.no_grad()
    def evaluation_step(self, batch: torch.Tensor, epoch: int) -> dict:
        """One batch of clips: its sums for the figures, its codes, and the clips beside their
        reconstructions (on the CPU) for the pictures."""
        batch = batch.to(self.device)
        out = self.model(batch)
        recon = out["recon"].clamp(0, 1)
        part = sums(batch, recon)
        part["codes"] = out["codes"].reshape(-1).cpu() if "codes" in out else None
        part["clips"], part["recon"] = batch.cpu(), recon.cpu()
        return part

    def figures(self, parts: list, epoch: int) -> dict[str, float]:
        total = {k: sum(p[k] for p in parts) for k in ("se", "values", "ssim", "frames")}
        metrics = figures_of(total)
        codes = [p["codes"] for p in parts if p["codes"] is not None]
        if codes:
            counts = torch.bincount(torch.cat(codes), minlength=2 ** self.model.bits).float()
            p = counts[counts > 0] / counts.sum()
            metrics["codes/used_fraction"] = (counts > 0).float().mean().item()
            metrics["codes/perplexity"] = math.exp(-(p * p.log()).sum().item())
        return metrics

    def evaluation_files(self, parts: list, figures: dict, folder: Path, epoch: int, during_training: bool,
                         datamodule=None) -> None:
        """During training: the first `pictures` clips beside their reconstructions,
        `reconstructions/epoch=NNNN.png`. For eval.py: `per_clip.csv` (each clip's MSE, PSNR, SSIM, by name)
        and every clip's reconstruction, `pictures` clips per PNG (`reconstructions/clips_NNNN-MMMM.png`)."""
        from experiments.families.video.pictures import draw_reconstructions

        if during_training:
            if parts:
                first = parts[0]
                shown = [f"{k} {figures[k]:.4g}" for k in ("val/psnr", "val/ssim") if k in figures]
                draw_reconstructions(first["clips"][: self.pictures], first["recon"][: self.pictures],
                                     folder / "reconstructions" / f"epoch={epoch_number(epoch):04d}.png",
                                     title=f"epoch {epoch_number(epoch)}: " + ", ".join(shown),
                                     names=[f"validation clip {i}" for i in range(self.pictures)])
            return
        names = getattr(datamodule, "val_names", None)
        rows, clip = [], 0
        for part in parts:
            for k, (c, r) in enumerate(zip(part["clips"], part["recon"])):
                one = figures_of(sums(c[None], r[None]))
                rows.append({"clip": names[clip + k] if names else clip + k,
                             **{key.removeprefix("val/"): v for key, v in one.items()}})
            for start in range(0, len(part["clips"]), self.pictures):
                last = min(start + self.pictures, len(part["clips"])) - 1
                draw_reconstructions(part["clips"][start:start + self.pictures],
                                     part["recon"][start:start + self.pictures],
                                     folder / "reconstructions" / f"clips_{clip + start:04d}-{clip + last:04d}.png",
                                     title=f"checkpoint epoch {epoch_number(epoch)}: clips {clip + start}-{clip + last}",
                                     names=[str(names[clip + k]) if names else str(clip + k)
                                            for k in range(start, last + 1)])
            clip += len(part["clips"])
        atomic_write_csv(rows, folder / "per_clip.csv")

    @torch.no_grad()
    def check_outputs(self, batch: torch.Tensor) -> list[tuple[str, torch.Tensor, tuple]]:
        batch = batch.to(self.device)
        out = self.model(batch)
        return [("recon", out["recon"], tuple(batch.shape)), ("latent", out["latent"], tuple(out["latent"].shape))]


def sums(batch: torch.Tensor, recon: torch.Tensor) -> dict:
    """What the figures add up over clips: squared error and its count, SSIM summed over frames and their count."""
    frames = lambda x: x.movedim(2, 1).reshape(-1, x.shape[1], x.shape[3], x.shape[4])  # noqa: E731
    n = batch.shape[0] * batch.shape[2]
    return {"se": F.mse_loss(recon, batch, reduction="sum").item(), "values": batch.numel(),
            "ssim": ssim(frames(recon), frames(batch), data_range=1.0).item() * n, "frames": n}  # SSIM: a mean over frames


def figures_of(total: dict) -> dict[str, float]:
    mse = total["se"] / total["values"]
    return {"val/mse": mse, "val/psnr": 10 * math.log10(1.0 / max(mse, 1e-12)), "val/ssim": total["ssim"] / total["frames"]}

