"""Ternary VAE v5.11 (also v5.11 partial freeze and v5.12): the encoders and decoder A of v5.5, loaded from
a v5.5-compatible checkpoint, plus a trained hyperbolic projection of each encoder's mean into the
Poincare ball (docs/families/ternary.md).

    z_hyp = normalize(z + direction_net(z)) * sigmoid(radius_net(z)) * max_norm

The parts keep the names and shapes of v5.5's (`encoder_a`, `encoder_b`, `decoder_a`), so their
state-dict keys match a v5.5 checkpoint's. Which parts train is the task's business, not the model's.
"""

import torch
from torch import nn

from experiments.families.ternary.vae_v5_5 import DecoderA, Encoder


class HyperbolicProjection(nn.Module):
    def __init__(self, latent_dim: int, hidden: int = 64, max_norm: float = 0.95):
        super().__init__()
        self.max_norm = max_norm
        self.direction_net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, latent_dim))
        self.radius_net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        direction = nn.functional.normalize(z + self.direction_net(z), dim=-1)
        return direction * torch.sigmoid(self.radius_net(z)) * self.max_norm


class HyperbolicTernaryVAE(nn.Module):
    def __init__(self, input_dim: int = 9, latent_dim: int = 16, projection_hidden: int = 64, max_norm: float = 0.95):
        super().__init__()
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.encoder_a = Encoder(input_dim, latent_dim)
        self.encoder_b = Encoder(input_dim, latent_dim)
        self.decoder_a = DecoderA(latent_dim, input_dim)
        self.proj_a = HyperbolicProjection(latent_dim, projection_hidden, max_norm)
        self.proj_b = HyperbolicProjection(latent_dim, projection_hidden, max_norm)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Deterministic: the encoders' means are embedded (no sampling), as in v5.5's coverage."""
        mu_a, _ = self.encoder_a(x)
        mu_b, _ = self.encoder_b(x)
        return {
            "mu_a": mu_a,
            "mu_b": mu_b,
            "logits_a": self.decoder_a(mu_a),
            "z_hyp_a": self.proj_a(mu_a),
            "z_hyp_b": self.proj_b(mu_b),
        }
