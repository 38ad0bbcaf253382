"""Training and evaluation of the Ternary VAE v5.5 (dual VAE with cross-injection).

The framework's side of the contract (epoch sums, their checkpoint state) is task_contract.py's. Prediction
(predict.py, `load_run(...).predict`): every operation, or those of a file, with its latent means and whether
each decoder reconstructs it (predictions.py: `latent.csv`, `latent.png`).
"""

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.families.ternary import metrics as tm
from experiments.families.ternary.data import NUM_OPERATIONS, operation_index
from experiments.families.ternary.vae_v5_5 import DualVAE
from experiments.family import ExperimentTask, atomic_savefig, epoch_number

TRAIN_TERMS = ("loss", "ce_a", "ce_b", "kl_a", "kl_b", "entropy_gap")


class TernaryVAETask(ExperimentTask):
    summary_keys = ("train/loss", "coverage/recon_a", "coverage/recon_b", "coverage/sampled_a", "entropy/latent_a")
    percent_keys = ("coverage/recon_a", "coverage/recon_b", "coverage/sampled_a")
    train_terms = TRAIN_TERMS

    def __init__(
        self,
        model: DualVAE,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        rho_min: float = 0.1,
        rho_max: float = 0.7,
        rho_ramp_epochs: int = 400,
        lambda3_base: float = 0.3,
        lambda3_amplitude: float = 0.15,
        lambda3_period: int = 30,
        beta_a_start: float = 0.3,
        beta_a_end: float = 0.8,
        beta_b_start: float = 0.0,
        beta_b_end: float = 0.5,
        beta_warmup_epochs: int = 50,
        free_bits: float = 0.5,
        eps_kl: float = 5e-4,
        coverage_samples: int = 19683,
        seed: int = 0,
    ):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.rho_min, self.rho_max, self.rho_ramp_epochs = rho_min, rho_max, rho_ramp_epochs
        self.lambda3_base, self.lambda3_amplitude, self.lambda3_period = lambda3_base, lambda3_amplitude, lambda3_period
        self.beta_a = (beta_a_start, beta_a_end)
        self.beta_b = (beta_b_start, beta_b_end)
        self.beta_warmup_epochs = beta_warmup_epochs
        self.free_bits, self.eps_kl = free_bits, eps_kl
        self.coverage_samples, self.seed = coverage_samples, seed

    # ---- schedules (functions of the epoch only, so a resumed run follows the same curve) ----
    def rho(self, epoch: int) -> float:
        ramp = min(1.0, epoch / max(1, self.rho_ramp_epochs))
        return self.rho_min + (self.rho_max - self.rho_min) * ramp

    def lambda3(self, epoch: int) -> float:
        phase = 2 * math.pi * (epoch % self.lambda3_period) / self.lambda3_period + math.pi / 2
        return self.lambda3_base + self.lambda3_amplitude * math.cos(phase)

    def betas(self, epoch: int) -> tuple[float, float]:
        t = min(1.0, epoch / max(1, self.beta_warmup_epochs))
        return tuple(start + (end - start) * t for start, end in (self.beta_a, self.beta_b))

    # ---- loss ----
    def compute_loss(self, x: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (loss, detached terms in TRAIN_TERMS order)."""
        out = self.model(x, self.rho(epoch))
        target = (x + 1).long().reshape(-1)
        batch = x.shape[0]
        ce_a = F.cross_entropy(out["logits_a"].reshape(-1, 3), target, reduction="sum") / batch
        ce_b = F.cross_entropy(out["logits_b"].reshape(-1, 3), target, reduction="sum") / batch
        kl_a, kl_a_raw = tm.kl_free_bits(out["mu_a"], out["logvar_a"], self.free_bits)
        kl_b, kl_b_raw = tm.kl_free_bits(out["mu_b"], out["logvar_b"], self.free_bits)
        gap = (
            tm.gaussian_batch_entropy(out["z_a"], self.eps_kl) - tm.gaussian_batch_entropy(out["z_b"], self.eps_kl)
        ).abs()
        beta_a, beta_b = self.betas(epoch)
        loss = ce_a + beta_a * kl_a + ce_b + beta_b * kl_b + self.lambda3(epoch) * gap
        terms = torch.stack([loss, ce_a, ce_b, kl_a_raw, kl_b_raw, gap]).detach()
        return loss, terms

    def training_loss(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The scalar to minimise for one batch (preflight runs exactly this)."""
        loss, terms = self.compute_loss(batch, self.current_epoch)
        self.add_training_terms(terms)
        return loss

    def training_figures(self, means: list[float], count: float) -> dict[str, float]:
        return {**super().training_figures(means, count), "train/rho": self.rho(self.current_epoch)}

    # ---- evaluation over all 19,683 operations ----
    # How verify.py judges each metric against the untrained control; others are reported, not judged.
    higher_is_better = (
        "coverage/recon_a",
        "coverage/recon_b",
        "coverage/recon_a_mixed",
        "coverage/sampled_a",
        "coverage/sampled_b",
    )
    lower_is_better = ("val/ce",)
    primary_metric = "coverage/recon_a"

    @torch.no_grad()
    def evaluation_step(self, batch: torch.Tensor, epoch: int) -> dict:
        """One batch of operations: exact reconstructions by each path, the cross-entropy sum, the means."""
        batch = batch.to(self.device)
        rho = self.rho(epoch)
        enc = self.model.encode(batch)
        mu_a, mu_b = enc["mu_a"], enc["mu_b"]
        ops = batch.long()
        pred_a = tm.trits_from_logits(self.model.decoder_a(mu_a))
        pred_b = tm.trits_from_logits(self.model.decoder_b(mu_b))
        pred_mixed = tm.trits_from_logits(self.model.decoder_a((1 - rho) * mu_a + rho * mu_b))
        out = self.model(batch, rho, sample=False)
        target = (batch + 1).long().reshape(-1)
        loss = (
            F.cross_entropy(out["logits_a"].reshape(-1, 3), target, reduction="sum")
            + F.cross_entropy(out["logits_b"].reshape(-1, 3), target, reduction="sum")
        ).item()
        exact_a, exact_b = (pred_a == ops).all(-1), (pred_b == ops).all(-1)
        return {
            "ok_a": exact_a.sum().item(),
            "ok_b": exact_b.sum().item(),
            "ok_a_mixed": (pred_mixed == ops).all(-1).sum().item(),
            "loss": loss,
            "n": len(batch),
            "mu_a": mu_a,
            "mu_b": mu_b,
            "exact_a": exact_a.cpu(),
            "exact_b": exact_b.cpu(),
        }

    @torch.no_grad()
    def check_outputs(self, batch: torch.Tensor) -> list[tuple[str, torch.Tensor, tuple]]:
        """(name, output, expected shape) of a forward pass, for verify.py's `predicts` stage."""
        batch = batch.to(self.device)
        out = self.model(batch, self.rho(0), sample=False)
        n, d = batch.shape[0], self.model.latent_dim
        return [
            ("logits_a", out["logits_a"], (n, self.model.input_dim, 3)),
            ("logits_b", out["logits_b"], (n, self.model.input_dim, 3)),
            ("mu_a", out["mu_a"], (n, d)),
            ("mu_b", out["mu_b"], (n, d)),
        ]

    def figures(self, parts: list, epoch: int) -> dict[str, float]:
        total = {k: sum(p[k] for p in parts) for k in ("ok_a", "ok_b", "ok_a_mixed", "loss", "n")}
        n = total["n"]
        metrics = {
            "val/ce": total["loss"] / n,
            "coverage/recon_a": total["ok_a"] / n,
            "coverage/recon_b": total["ok_b"] / n,
            "coverage/recon_a_mixed": total["ok_a_mixed"] / n,
            "entropy/latent_a": tm.histogram_entropy(torch.cat([p["mu_a"] for p in parts])),
            "entropy/latent_b": tm.histogram_entropy(torch.cat([p["mu_b"] for p in parts])),
        }
        metrics.update(self.sampled_coverage(epoch))
        return metrics

    def evaluation_files(
        self, parts: list, figures: dict[str, float], folder, epoch: int, during_training: bool, datamodule=None
    ) -> None:
        """latent.png, at the end of training and in eval.py's results: where each operation sits in latent
        space."""
        self._last = (parts, epoch)
        if not during_training:
            draw_latent(parts, figures, epoch, Path(folder) / "latent.png")

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and getattr(self, "_last", None):  # the last evaluation's
            parts, epoch = self._last
            draw_latent(parts, self.epoch_metrics, epoch, Path(self.trainer.default_root_dir) / "latent.png")

    @torch.no_grad()
    def sampled_coverage(self, epoch: int) -> dict[str, float]:
        """Distinct operations among `coverage_samples` categorical draws from z ~ N(0, I), per decoder.
        Its own generator, seeded by (seed, epoch): evaluation never moves the training RNG."""
        g = torch.Generator(device="cpu").manual_seed(self.seed * 7919 + epoch)
        z = torch.randn(self.coverage_samples, self.model.latent_dim, generator=g).to(self.device)
        out = {"coverage/samples": float(self.coverage_samples)}
        for name, decoder in (("a", self.model.decoder_a), ("b", self.model.decoder_b)):
            trits = tm.sample_trits(decoder(z).cpu(), generator=g)
            out[f"coverage/sampled_{name}"] = tm.distinct_fraction(trits, NUM_OPERATIONS)
        return out

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    # ---- prediction (predict.py, load_run(...).predict) ----
    def prediction_data(self, data: dict, path: Path | None) -> dict:
        """All operations (no input), or those of a file (one a line: an index or 9 trits)."""
        return {**data, "operations": str(path) if path else None}

    @torch.no_grad()
    def prediction_step(self, batch: torch.Tensor) -> list[dict]:
        """Each operation's record: `operation` (its index), `trits`, `mu_a` and `mu_b` (the encoders' means),
        `exact_a` and `exact_b` (whether decoder A on mean A, decoder B on mean B, reconstruct it)."""
        from experiments.families.ternary.predictions import trits_text

        batch = batch.to(self.device)
        enc = self.model.encode(batch)
        ops = batch.long()
        exact_a = (tm.trits_from_logits(self.model.decoder_a(enc["mu_a"])) == ops).all(-1)
        exact_b = (tm.trits_from_logits(self.model.decoder_b(enc["mu_b"])) == ops).all(-1)
        return [
            {
                "operation": int(i),
                "trits": trits_text(t),
                "exact_a": bool(a),
                "exact_b": bool(b),
                "mu_a": ma.cpu(),
                "mu_b": mb.cpu(),
            }
            for i, t, a, b, ma, mb in zip(operation_index(ops), ops, exact_a, exact_b, enc["mu_a"], enc["mu_b"])
        ]

    def prediction_files(self, records: list[dict], folder: Path, datamodule) -> None:
        """latent.csv and latent.png (the operations on the means' first two principal components)."""
        from experiments.families.ternary.predictions import write_latent_csv

        write_latent_csv(records, folder / "latent.csv")
        part = {
            "mu_a": torch.stack([r["mu_a"] for r in records]),
            "mu_b": torch.stack([r["mu_b"] for r in records]),
            "exact_a": torch.tensor([r["exact_a"] for r in records]),
            "exact_b": torch.tensor([r["exact_b"] for r in records]),
        }
        figures = {f"coverage/recon_{s}": part[f"exact_{s}"].float().mean().item() for s in ("a", "b")}
        draw_latent([part], figures, None, folder / "latent.png")


def draw_latent(parts: list, figures: dict, epoch: int | None, path: Path) -> None:
    """Each encoder's means of every evaluated operation on its first two principal components, coloured by
    whether its decoder reconstructs the operation exactly: where the misses lie, not only how many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, side in zip(axes, ("a", "b")):
        mu = torch.cat([p[f"mu_{side}"] for p in parts]).float().cpu()
        exact = torch.cat([p[f"exact_{side}"] for p in parts])
        centred = mu - mu.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        xy = (centred @ v[:2].T).numpy()
        ax.scatter(
            xy[exact.numpy(), 0],
            xy[exact.numpy(), 1],
            s=1,
            c="tab:green",
            alpha=0.4,
            linewidths=0,
            label=f"reconstructed ({int(exact.sum()):,})",
        )
        ax.scatter(
            xy[~exact.numpy(), 0],
            xy[~exact.numpy(), 1],
            s=3,
            c="tab:red",
            linewidths=0,
            label=f"missed ({int((~exact).sum()):,})",
        )
        ax.set_title(
            f"encoder {side.upper()}: coverage/recon_{side} {figures.get(f'coverage/recon_{side}', 0):.2%}", fontsize=9
        )
        ax.set_xlabel("principal component 1 of the means")
        ax.set_ylabel("principal component 2")
        ax.legend(fontsize=8, markerscale=4, loc="upper right")
    when = f"epoch {epoch_number(epoch)}: " if epoch is not None else ""  # None: a prediction's operations
    fig.suptitle(f"{when}{len(mu):,} operations in latent space", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=90)
    plt.close(fig)
