"""Ternary VAE v5.5: two VAEs over 9-trit operations with cross-injection (docs/families/ternary.md).

Input: trits in {-1, 0, 1}, shape (B, 9). Output: logits (B, 9, 3), class c means trit c - 1.
"""

import torch
from torch import nn


class Encoder(nn.Module):
    """9-256-128-64 (ReLU), then mean and log-variance heads."""

    def __init__(self, input_dim: int, latent_dim: int, hidden: tuple[int, ...] = (256, 128, 64)):
        super().__init__()
        layers, width = [], input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.mu = nn.Linear(width, latent_dim)
        self.logvar = nn.Linear(width, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class DecoderA(nn.Module):
    """The small decoder: latent-32-64-(9*3)."""

    def __init__(self, latent_dim: int, input_dim: int):
        super().__init__()
        self.input_dim = input_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, input_dim * 3)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, self.input_dim, 3)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.net(x))


class DecoderB(nn.Module):
    """The wide decoder: latent-128, two residual blocks of width 128, then 9*3."""

    def __init__(self, latent_dim: int, input_dim: int, width: int = 128, blocks: int = 2):
        super().__init__()
        self.input_dim = input_dim
        self.inp = nn.Sequential(nn.Linear(latent_dim, width), nn.ReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.out = nn.Linear(width, input_dim * 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(z))).view(-1, self.input_dim, 3)


class DualVAE(nn.Module):
    """VAE-A (encoder A, decoder A) and VAE-B (encoder B, decoder B) coupled by cross-injection:
    zA' = (1 - rho) zA + rho * stopgrad(zB), and symmetrically for B."""

    def __init__(self, input_dim: int = 9, latent_dim: int = 16):
        super().__init__()
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.encoder_a = Encoder(input_dim, latent_dim)
        self.encoder_b = Encoder(input_dim, latent_dim)
        self.decoder_a = DecoderA(latent_dim, input_dim)
        self.decoder_b = DecoderB(latent_dim, input_dim)

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu_a, logvar_a = self.encoder_a(x)
        mu_b, logvar_b = self.encoder_b(x)
        return {"mu_a": mu_a, "logvar_a": logvar_a, "mu_b": mu_b, "logvar_b": logvar_b}

    def forward(self, x: torch.Tensor, rho: float, sample: bool = True) -> dict[str, torch.Tensor]:
        out = self.encode(x)
        z_a, z_b = out["mu_a"], out["mu_b"]
        if sample:
            z_a = z_a + torch.randn_like(z_a) * torch.exp(0.5 * out["logvar_a"])
            z_b = z_b + torch.randn_like(z_b) * torch.exp(0.5 * out["logvar_b"])
        out["z_a"], out["z_b"] = z_a, z_b
        out["logits_a"] = self.decoder_a((1 - rho) * z_a + rho * z_b.detach())
        out["logits_b"] = self.decoder_b((1 - rho) * z_b + rho * z_a.detach())
        return out
