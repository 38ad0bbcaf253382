"""The seed run's MAGVIT-style autoencoder contract: 3D convolutions at full resolution.
Input (B, 3, T, H, W) -> encoding (B, 64, T, H, W) -> reconstruction (B, 3, T, H, W).
The seed's model had 548,107 parameters; this one has 558,531 (its layers were not recorded)."""

import torch
from torch import nn

SEED_PARAMETERS = 548_107


def conv(c_in: int, c_out: int) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, kernel_size=3, padding=1)


class MagVit(nn.Module):
    def __init__(self, channels: int = 3, hidden: int = 32, latent: int = 64):
        super().__init__()
        self.encoder = nn.Sequential(
            conv(channels, hidden),
            nn.ReLU(),
            conv(hidden, latent),
            nn.ReLU(),
            conv(latent, latent),
            nn.ReLU(),
            conv(latent, latent),
        )
        self.decoder = nn.Sequential(
            conv(latent, latent),
            nn.ReLU(),
            conv(latent, latent),
            nn.ReLU(),
            conv(latent, hidden),
            nn.ReLU(),
            conv(hidden, channels),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x)
        return {"latent": z, "recon": self.decoder(z)}
