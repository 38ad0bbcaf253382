"""Training and evaluation of the video autoencoders (magvit) and tokenizers (magvit_v2).

Loss: MSE reconstruction, plus for a quantizing model `entropy_weight` x entropy loss and
`commitment_weight` x commitment loss. Metrics on the validation clips: MSE, PSNR (data range 1), SSIM
(torchmetrics, over frames), and for a quantizer the fraction of the 2^bits codes used and the perplexity
of their empirical distribution. Every validation epoch saves `reconstructions/epoch=NNNN.png` (input
frames above, reconstruction below) in the run directory (a logger that takes images gets it:
callbacks.LoggerReport).

Prediction (predict.py, `load_run(...).predict`): a clip file or a folder of clips (every kind the data module
reads), each clip's reconstruction as PNG frames (a frame folder the data module reads back), its tokens
(a quantizer's codes; an autoencoder's latent) as `.npy`, its MSE, PSNR and SSIM against itself in
`per_clip.csv`, and a picture of the first clips.
"""

import io
import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from experiments.family import ExperimentTask, UserError, atomic_write_bytes, atomic_write_csv, epoch_number

UNSAFE = re.compile(r"[^\w.@=-]")  # what a clip's name may not carry into a file name


class VideoTask(ExperimentTask):
    summary_keys = ("train/loss", "val/mse", "val/psnr", "val/ssim", "codes/used_fraction", "codes/perplexity")
    higher_is_better = ("val/psnr", "val/ssim", "codes/used_fraction", "codes/perplexity")
    lower_is_better = ("val/mse",)
    primary_metric = "val/psnr"

    def __init__(
        self,
        model,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        entropy_weight: float = 0.1,
        commitment_weight: float = 0.25,
        pictures: int = 4,
        seed: int = 0,
    ):
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
        return torch.optim.AdamW(
            [p for p in self.parameters() if p.requires_grad], lr=self.lr, weight_decay=self.weight_decay
        )

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
            counts = torch.bincount(torch.cat(codes), minlength=2**self.model.bits).float()
            p = counts[counts > 0] / counts.sum()
            metrics["codes/used_fraction"] = (counts > 0).float().mean().item()
            metrics["codes/perplexity"] = math.exp(-(p * p.log()).sum().item())
        return metrics

    def evaluation_files(
        self, parts: list, figures: dict, folder: Path, epoch: int, during_training: bool, datamodule=None
    ) -> None:
        """During training: the first `pictures` clips beside their reconstructions,
        `reconstructions/epoch=NNNN.png`. For eval.py: `per_clip.csv` (each clip's MSE, PSNR, SSIM, by name)
        and every clip's reconstruction, `pictures` clips per PNG (`reconstructions/clips_NNNN-MMMM.png`)."""
        from experiments.families.video.pictures import draw_reconstructions

        if during_training:
            if parts:
                first = parts[0]
                shown = [f"{k} {figures[k]:.4g}" for k in ("val/psnr", "val/ssim") if k in figures]
                draw_reconstructions(
                    first["clips"][: self.pictures],
                    first["recon"][: self.pictures],
                    folder / "reconstructions" / f"epoch={epoch_number(epoch):04d}.png",
                    title=f"epoch {epoch_number(epoch)}: " + ", ".join(shown),
                    names=[f"validation clip {i}" for i in range(self.pictures)],
                )
            return
        names = getattr(datamodule, "val_names", None)
        rows, clip = [], 0
        for part in parts:
            for k, (c, r) in enumerate(zip(part["clips"], part["recon"])):
                one = figures_of(sums(c[None], r[None]))
                rows.append(
                    {
                        "clip": names[clip + k] if names else clip + k,
                        **{key.removeprefix("val/"): v for key, v in one.items()},
                    }
                )
            for start in range(0, len(part["clips"]), self.pictures):
                last = min(start + self.pictures, len(part["clips"])) - 1
                draw_reconstructions(
                    part["clips"][start : start + self.pictures],
                    part["recon"][start : start + self.pictures],
                    folder / "reconstructions" / f"clips_{clip + start:04d}-{clip + last:04d}.png",
                    title=f"checkpoint epoch {epoch_number(epoch)}: clips {clip + start}-{clip + last}",
                    names=[str(names[clip + k]) if names else str(clip + k) for k in range(start, last + 1)],
                )
            clip += len(part["clips"])
        atomic_write_csv(rows, folder / "per_clip.csv")

    # ---- prediction (predict.py, load_run(...).predict) ----
    def prediction_data(self, data: dict, path: Path | None) -> dict:
        """Every clip of the file or folder, in the evaluation's batches (eval.py on it: the same figures)."""
        if path is None:
            raise UserError("give the clips to encode: input=CLIP (.npy, a video, a folder of frames) or input=FOLDER")
        return {**data, "folder": str(path), "val_fraction": 1}

    @torch.no_grad()
    def prediction_step(self, batch: dict) -> list[dict]:
        """Each clip's record: `clip` (its name), `input` and `reconstruction` (C, T, H, W) in [0, 1], `tokens`
        (a quantizer's codes, (T', H', W') integers; None for an autoencoder), `latent`, and its `mse`,
        `psnr`, `ssim` against itself (what eval.py's per_clip.csv gives)."""
        clips = batch["clips"].to(self.device)
        out = self.model(clips)
        recon = out["recon"].clamp(0, 1)
        records = []
        for k, name in enumerate(batch["names"]):
            one = figures_of(sums(clips[k : k + 1], recon[k : k + 1]))
            records.append(
                {
                    "clip": name,
                    "input": clips[k].cpu(),
                    "reconstruction": recon[k].cpu(),
                    "tokens": out["codes"][k].cpu() if "codes" in out else None,
                    "latent": out["latent"][k].cpu(),
                    **{key.removeprefix("val/"): v for key, v in one.items()},
                }
            )
        return records

    def prediction_files(self, records: list[dict], folder: Path, datamodule) -> None:
        """Per clip `reconstructions/<n>-<clip>/NNNN.png` (its frames) and `tokens/<n>-<clip>.npy`;
        `per_clip.csv`; `reconstructions.png`, the first `pictures` clips above their reconstructions."""
        from experiments.families.video.pictures import draw_reconstructions

        rows = []
        for n, r in enumerate(records):
            stem = f"{n:04d}-{UNSAFE.sub('_', str(r['clip']))}"  # numbered: two names made alike stay apart
            for t in range(r["reconstruction"].shape[1]):
                atomic_write_bytes(folder / "reconstructions" / stem / f"{t:04d}.png", png(r["reconstruction"][:, t]))
            codes = r["tokens"] if r["tokens"] is not None else r["latent"]
            buffer = io.BytesIO()
            np.save(buffer, codes.numpy(), allow_pickle=False)
            atomic_write_bytes(folder / "tokens" / f"{stem}.npy", buffer.getvalue())
            rows.append(
                {
                    "clip": r["clip"],
                    "folder": stem,
                    "mse": r["mse"],
                    "psnr": r["psnr"],
                    "ssim": r["ssim"],
                    "tokens": "codes" if r["tokens"] is not None else "latent",
                    "token_shape": list(codes.shape),
                }
            )
        atomic_write_csv(rows, folder / "per_clip.csv")
        first = records[: self.pictures]
        if first:
            draw_reconstructions(
                torch.stack([r["input"] for r in first]),
                torch.stack([r["reconstruction"] for r in first]),
                folder / "reconstructions.png",
                title=f"{len(records)} clips: the first {len(first)}",
                names=[str(r["clip"]) for r in first],
            )

    @torch.no_grad()
    def check_outputs(self, batch: torch.Tensor) -> list[tuple[str, torch.Tensor, tuple]]:
        batch = batch.to(self.device)
        out = self.model(batch)
        return [("recon", out["recon"], tuple(batch.shape)), ("latent", out["latent"], tuple(out["latent"].shape))]


def sums(batch: torch.Tensor, recon: torch.Tensor) -> dict:
    """What the figures add up over clips: squared error and its count, SSIM summed over frames and their count."""
    frames = lambda x: x.movedim(2, 1).reshape(-1, x.shape[1], x.shape[3], x.shape[4])  # noqa: E731
    n = batch.shape[0] * batch.shape[2]
    return {
        "se": F.mse_loss(recon, batch, reduction="sum").item(),
        "values": batch.numel(),
        "ssim": ssim(frames(recon), frames(batch), data_range=1.0).item() * n,
        "frames": n,
    }  # SSIM: a mean over frames


def png(frame: torch.Tensor) -> bytes:
    """A (C, H, W) frame in [0, 1] as an 8-bit PNG (grey for one channel, RGB for three)."""
    from PIL import Image

    pixels = (frame.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def figures_of(total: dict) -> dict[str, float]:
    mse = total["se"] / total["values"]
    return {
        "val/mse": mse,
        "val/psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "val/ssim": total["ssim"] / total["frames"],
    }
