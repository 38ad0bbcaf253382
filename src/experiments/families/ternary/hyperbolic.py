"""Training and evaluation of the hyperbolic Ternary VAE variants: v5.11, v5.11 partial freeze, v5.12.

The frozen parts (encoders A and B, decoder A) come from a v5.5-compatible checkpoint, loaded by the
`frozen_checkpoint` preflight stage (checkpoint/frozen.py) before any training. What trains:
- v5.11: the two projections only;
- partial freeze: also encoder B at `encoder_b_lr_scale` x lr; encoder A starts frozen and sits in the
  optimizer at `encoder_a_lr_scale` x lr, so that the homeostasis callback may unfreeze it;
- v5.12: the partial-freeze split with the rich hierarchy loss.
Decoder A never trains: it is the judge of coverage.

Loss (each weight 0 switches its term off; every term is summed over the A and B embeddings):
  radial_weight * radial + geodesic_weight * geodesic                              (v5.11)
  + hierarchy_weight * level-mean hierarchy + richness_weight * richness shortfall
  + separation_weight * separation + ce_weight * CE(decoder A on encoder A's mean) (v5.12)

Prediction (predict.py, `load_run(...).predict`): every operation, or those of a file, with its latent means,
Poincare radii and valuation level (predictions.py: `latent.csv`, `radii.png`).
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.families.ternary import hyperbolic_losses as hl
from experiments.families.ternary import hyperbolic_metrics as hm
from experiments.families.ternary.data import NUM_OPERATIONS, operation_index
from experiments.families.ternary.metrics import trits_from_logits
from experiments.families.ternary.vae_v5_11 import HyperbolicTernaryVAE
from experiments.family import ExperimentTask, StageResult, UserError

TRAIN_TERMS = ("loss", "radial", "geodesic", "hierarchy", "richness", "separation", "ce")
FROZEN_PARTS = ("encoder_a", "encoder_b", "decoder_a")  # loaded from the source checkpoint


def frozen_coverage(ctx) -> StageResult:
    """Preflight stage: reconstruction coverage of the frozen path (decoder A on encoder A's mean) over
    all operations, after the frozen_checkpoint stage loaded the parts: below
    frozen_checkpoint.min_coverage the run stops before training."""
    node = ctx.cfg.get("frozen_checkpoint")
    if node is None:
        return StageResult(name="frozen_coverage", status="skip", details="this experiment has no frozen parts")
    coverage = ctx.task.evaluate(ctx.datamodule, 0)["coverage/recon_a"]  # before training: epoch 0
    ctx.task.train()
    threshold = float(node.get("min_coverage", 0.95))
    if ctx.task.frozen_source.get("allow_random"):
        return StageResult(
            name="frozen_coverage",
            details=f"coverage {coverage:.2%} from RANDOM frozen parts "
            f"(allow_random=true: threshold {threshold:.0%} not enforced)",
            metrics={"coverage": coverage},
        )
    if ctx.resume_from is not None:  # mid-run coverage is the guard's business, not a source check
        return StageResult(
            name="frozen_coverage",
            details=f"coverage {coverage:.2%} of the run being resumed "
            f"(its own last checkpoint; threshold applies to a run's source only)",
            metrics={"coverage": coverage},
        )
    if coverage < threshold:  # the source given is not a trained one: bad input (exit 2)
        raise UserError(
            f"reconstruction coverage of the frozen parts is {coverage:.2%} (decoder A on encoder A's "
            f"mean, all 19,683 operations), below frozen_checkpoint.min_coverage={threshold:.0%}: "
            f"{ctx.task.frozen_source.get('path') or ctx.resume_from} is not a trained source"
        )
    return StageResult(
        name="frozen_coverage",
        details=f"coverage {coverage:.2%} >= {threshold:.0%} after loading",
        metrics={"coverage": coverage},
    )


class HyperbolicTernaryTask(ExperimentTask):
    summary_keys = ("train/loss", "coverage/recon_a", "hierarchy/b", "richness/b", "Q/b")
    percent_keys = ("coverage/recon_a",)
    train_terms = TRAIN_TERMS
    frozen_parts = FROZEN_PARTS
    preflight_stages = {"frozen_coverage": frozen_coverage}
    # How verify.py judges each metric against the untrained control (projection re-initialised,
    # frozen parts as loaded). Coverage is reported, not judged: the control shares the frozen path.
    higher_is_better = ("Q/a", "Q/b")
    lower_is_better = ("hierarchy/a", "hierarchy/b")
    primary_metric = "hierarchy/b"

    def __init__(
        self,
        model: HyperbolicTernaryVAE,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        encoder_b_lr_scale: float | None = None,
        encoder_a_lr_scale: float | None = None,
        radial_weight: float = 1.0,
        geodesic_weight: float = 0.1,
        hierarchy_weight: float = 0.0,
        richness_weight: float = 0.0,
        separation_weight: float = 0.0,
        ce_weight: float = 0.0,
        inner_radius: float = 0.3,
        outer_radius: float = 3.0,
        geodesic_scale: float = 2.0,
        margin: float = 0.1,
        richness_floor: float = 0.002,
        metric_pairs: int = 20000,
        seed: int = 0,
    ):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.encoder_b_lr_scale, self.encoder_a_lr_scale = encoder_b_lr_scale, encoder_a_lr_scale
        self.weights = {
            "radial": radial_weight,
            "geodesic": geodesic_weight,
            "hierarchy": hierarchy_weight,
            "richness": richness_weight,
            "separation": separation_weight,
            "ce": ce_weight,
        }
        self.inner, self.outer = inner_radius, outer_radius
        self.geodesic_scale, self.margin, self.richness_floor = geodesic_scale, margin, richness_floor
        self.metric_pairs, self.seed = metric_pairs, seed
        for part in FROZEN_PARTS:
            self.set_trainable(part, part == "encoder_b" and encoder_b_lr_scale is not None)
        if encoder_b_lr_scale is not None:
            self.mark_trained("encoder_b")
        self._levels = hm.valuation(torch.arange(NUM_OPERATIONS))

    # ---- which parts train ----
    def set_trainable(self, part: str, trainable: bool) -> None:
        # An encoder's log-variance head stays frozen: these variants embed the mean only, so it would
        # get no gradient (the preflight gradients stage refuses such a tensor).
        for name, p in getattr(self.model, part).named_parameters():
            p.requires_grad_(trainable and not name.startswith("logvar."))
            if not trainable:
                p.grad = None  # AdamW skips a tensor without a gradient: no update, no weight decay

    def unfreeze_encoder_a(self) -> None:
        if self.encoder_a_lr_scale is None:
            raise RuntimeError("encoder A is not in the optimizer (task.encoder_a_lr_scale is null)")
        self.set_trainable("encoder_a", True)
        self.mark_trained("encoder_a")

    def configure_optimizers(self):
        groups = [{"params": [*self.model.proj_a.parameters(), *self.model.proj_b.parameters()], "lr": self.lr}]
        for part, scale in (("encoder_b", self.encoder_b_lr_scale), ("encoder_a", self.encoder_a_lr_scale)):
            if scale is not None:
                params = [p for n, p in getattr(self.model, part).named_parameters() if not n.startswith("logvar.")]
                groups.append({"params": params, "lr": self.lr * scale})
        return torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)

    # ---- loss ----
    def levels_of(self, index: torch.Tensor) -> torch.Tensor:
        if self._levels.device != index.device:
            self._levels = self._levels.to(index.device)
        return self._levels[index]

    def compute_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (loss, detached raw terms in TRAIN_TERMS order; each term summed over A and B)."""
        out = self.model(x)
        index = operation_index(x)
        levels = self.levels_of(index)
        n = len(x)
        pairs = torch.stack([torch.arange(n, device=x.device), torch.arange(1, n + 1, device=x.device) % n], 1)
        terms = dict.fromkeys(TRAIN_TERMS[1:], 0.0)
        for z in (out["z_hyp_a"], out["z_hyp_b"]):
            radius = hm.poincare_radius(z)
            terms["radial"] = terms["radial"] + hl.radial_loss(radius, levels, self.inner, self.outer)
            terms["geodesic"] = terms["geodesic"] + hl.geodesic_loss(z, index, pairs, self.geodesic_scale)
            rich = hl.rich_hierarchy_loss(radius, levels, self.inner, self.outer, self.margin, self.richness_floor)
            for k, v in rich.items():
                terms[k] = terms[k] + v
        target = (x + 1).long().reshape(-1)
        terms["ce"] = F.cross_entropy(out["logits_a"].reshape(-1, 3), target, reduction="sum") / n
        loss = sum(self.weights[k] * terms[k] for k in terms if self.weights[k])
        stacked = torch.stack([loss] + [torch.as_tensor(terms[k]) for k in TRAIN_TERMS[1:]]).detach()
        return loss, stacked

    def training_loss(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, terms = self.compute_loss(batch)
        self.add_training_terms(terms)
        return loss

    # ---- evaluation over all 19,683 operations ----
    @torch.no_grad()
    def evaluation_step(self, batch: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        batch = batch.to(self.device)
        out = self.model(batch)
        ok = (trits_from_logits(out["logits_a"]) == batch.long()).all(-1)
        return {"index": operation_index(batch), "ok": ok, "z_hyp_a": out["z_hyp_a"], "z_hyp_b": out["z_hyp_b"]}

    @torch.no_grad()
    def figures(self, parts: list[dict], epoch: int) -> dict[str, float]:
        cat = {k: torch.cat([p[k] for p in parts]).cpu() for k in parts[0]}
        levels = self.levels_of(cat["index"].to(self._levels.device)).cpu()
        metrics = {"coverage/recon_a": cat["ok"].float().mean().item()}
        i, j = hm.metric_pairs(NUM_OPERATIONS, self.metric_pairs, self.seed)
        by_index = torch.full((NUM_OPERATIONS,), -1, dtype=torch.long)
        by_index[cat["index"]] = torch.arange(len(cat["index"]))  # rows of operations i and j
        present = (by_index[i] >= 0) & (by_index[j] >= 0)  # a partial validation scores the pairs it has
        i, j = i[present], j[present]
        padic = hm.padic_distance(i, j)
        for side in ("a", "b"):
            z = cat[f"z_hyp_{side}"].double()
            radius = hm.poincare_radius(z)
            h = hm.hierarchy(levels, radius)
            dc = hm.dist_corr(hm.poincare_distance(z[by_index[i]], z[by_index[j]]), padic)
            metrics.update(
                {
                    f"hierarchy/{side}": h,
                    f"richness/{side}": hm.richness(levels, radius),
                    f"dist_corr/{side}": dc,
                    f"Q/{side}": hm.q_metric(dc, h),
                    f"radius_mean/{side}": radius.mean().item(),
                }
            )
        return metrics

    @torch.no_grad()
    def check_outputs(self, batch: torch.Tensor) -> list[tuple[str, torch.Tensor, tuple]]:
        out = self.model(batch.to(self.device))
        n, d = batch.shape[0], self.model.latent_dim
        return [
            ("logits_a", out["logits_a"], (n, self.model.input_dim, 3)),
            ("z_hyp_a", out["z_hyp_a"], (n, d)),
            ("z_hyp_b", out["z_hyp_b"], (n, d)),
        ]

    # ---- prediction (predict.py, load_run(...).predict) ----
    def prediction_data(self, data: dict, path: Path | None) -> dict:
        """All operations (no input), or those of a file (one a line: an index or 9 trits)."""
        return {**data, "operations": str(path) if path else None}

    @torch.no_grad()
    def prediction_step(self, batch: torch.Tensor) -> list[dict]:
        """Each operation's record: `operation`, `trits`, `valuation` (its 3-adic level), `radius_a` and
        `radius_b` (Poincare radii of its two embeddings), `exact_a` (decoder A reconstructs it from mean A),
        `mu_a` and `mu_b` (the encoders' means)."""
        from experiments.families.ternary.predictions import trits_text

        batch = batch.to(self.device)
        out = self.model(batch)
        index = operation_index(batch)
        exact = (trits_from_logits(out["logits_a"]) == batch.long()).all(-1)
        radii = [hm.poincare_radius(out[f"z_hyp_{s}"].double()).cpu() for s in ("a", "b")]
        return [
            {
                "operation": int(i),
                "trits": trits_text(t),
                "valuation": int(v),
                "radius_a": float(ra),
                "radius_b": float(rb),
                "exact_a": bool(e),
                "mu_a": ma.cpu(),
                "mu_b": mb.cpu(),
            }
            for i, t, v, ra, rb, e, ma, mb in zip(
                index, batch.long(), self.levels_of(index), *radii, exact, out["mu_a"], out["mu_b"]
            )
        ]

    def prediction_files(self, records: list[dict], folder: Path, datamodule) -> None:
        """latent.csv and radii.png (radius by valuation level)."""
        from experiments.families.ternary.predictions import draw_radii, write_latent_csv

        write_latent_csv(records, folder / "latent.csv")
        draw_radii(records, folder / "radii.png")

    @torch.no_grad()
    def radii_by_level(self, datamodule, side: str = "b") -> tuple[torch.Tensor, torch.Tensor]:
        """(levels, Poincare radii) of all operations, for reports."""
        parts = self.evaluation_parts(datamodule, 0)
        index = torch.cat([p["index"] for p in parts]).cpu()
        z = torch.cat([p[f"z_hyp_{side}"] for p in parts]).cpu().double()
        return self.levels_of(index.to(self._levels.device)).cpu(), hm.poincare_radius(z)
