"""MAGVIT-v2-style tokenizer: causal 3D convolutions (time padded on the past side only), spatial and
temporal downsampling, and lookup-free quantization (LFQ).

Causality: a latent at time j depends on input frames <= j * time_factor, and reconstruction frame t on
latents <= t // time_factor, so frame t of the output never sees an input frame after t. As in MAGVIT-v2,
frames - 1 must be divisible by the time factor (9, 17 frames): then the last latent sees the last frame.
LFQ: each of `bits` latent channels is quantised to its sign (codebook 2^bits, straight-through
gradient). Per-bit code probabilities p = sigmoid(4 z / tau) (the softmax over the 2^bits codes by
squared distance factorises per bit); entropy loss = mean per-sample entropy - entropy of the batch-mean
distribution over all 2^bits codes (exact; a per-bit average would call two opposite codes, used half
the time each, a full codebook); commitment loss = ||z - sg(q)||^2.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv3d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.time_pad, self.space_pad = kernel - 1, kernel // 2
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.space_pad
        return self.conv(F.pad(x, (p, p, p, p, self.time_pad, 0)))  # (W, W, H, H, T past, T future = 0)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling: each latent frame becomes `time` frames, each pixel `space` x `space`."""

    def __init__(self, time: int, space: int):
        super().__init__()
        self.scale = (time, space, space)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class LFQ(nn.Module):
    def __init__(self, bits: int, tau: float = 1.0):
        super().__init__()
        self.bits, self.tau = bits, tau
        self.register_buffer("powers", 2 ** torch.arange(bits), persistent=False)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(z.device.type, enabled=False):  # under mixed precision too: in bf16 the entropies
            return self._quantized(z.float())  # (logs of products over bits) went NaN within 2 epochs

    def _quantized(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        q = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        quantized = z + (q - z).detach()  # straight-through
        p = torch.sigmoid(4 * z / self.tau).movedim(1, -1).reshape(-1, self.bits)
        per_sample = _bit_entropy(p).sum(-1).mean()
        codebook = self._codebook_entropy(p)
        codes = ((q > 0).long().movedim(1, -1) * self.powers).sum(-1)
        return {
            "quantized": quantized,
            "codes": codes,
            "entropy_loss": per_sample - codebook,
            "commitment_loss": F.mse_loss(z, q.detach()),
        }

    def _codebook_entropy(self, p: torch.Tensor) -> torch.Tensor:
        """Entropy of the batch-mean distribution over all 2^bits codes (exact up to 12 bits)."""
        if self.bits > 12:  # 2^bits columns would not fit: the per-bit upper bound instead
            return _bit_entropy(p.mean(0)).sum()
        signs = ((torch.arange(2**self.bits, device=p.device).unsqueeze(1) & self.powers) > 0).float()
        log_p = p.clamp_min(1e-6).log() @ signs.T + (1 - p).clamp_min(1e-6).log() @ (1 - signs).T
        mean = log_p.exp().mean(0)
        return -(mean * mean.clamp_min(1e-12).log()).sum()


def _bit_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


class MagVitV2(nn.Module):
    def __init__(
        self,
        channels: int = 3,
        hidden: int = 32,
        bits: int = 10,
        space_factor: int = 4,
        time_factor: int = 2,
        tau: float = 1.0,
    ):
        super().__init__()
        if space_factor not in (1, 2, 4, 8) or time_factor not in (1, 2, 4):
            raise ValueError("space_factor must be 1, 2, 4 or 8 and time_factor 1, 2 or 4")
        self.bits, self.space_factor, self.time_factor = bits, space_factor, time_factor
        n_space, n_time = int(math.log2(space_factor)), int(math.log2(time_factor))
        layers, width = [CausalConv3d(channels, hidden), nn.SiLU()], hidden
        for i in range(max(n_space, n_time)):
            stride = (2 if i < n_time else 1, 2 if i < n_space else 1, 2 if i < n_space else 1)
            layers += [CausalConv3d(width, width * 2, stride=stride), nn.SiLU()]
            width *= 2
        layers += [CausalConv3d(width, bits)]
        self.encoder = nn.Sequential(*layers)
        layers = [CausalConv3d(bits, width), nn.SiLU()]
        for i in reversed(range(max(n_space, n_time))):
            layers += [
                Upsample(2 if i < n_time else 1, 2 if i < n_space else 1),
                CausalConv3d(width, width // 2),
                nn.SiLU(),
            ]
            width //= 2
        layers += [CausalConv3d(width, channels)]
        self.decoder = nn.Sequential(*layers)
        self.quantizer = LFQ(bits, tau)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if (x.shape[2] - 1) % self.time_factor or x.shape[3] % self.space_factor or x.shape[4] % self.space_factor:
            raise ValueError(
                f"clip shape {tuple(x.shape[2:])}: frames - 1 must be divisible by {self.time_factor} "
                f"(e.g. 9 or 17 frames) and height, width by {self.space_factor}"
            )
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x)  # latent j summarises frames <= j * time_factor; 1 + (T - 1) / time_factor of them
        q = self.quantizer(z)
        recon = self.decoder(q["quantized"])[:, :, : x.shape[2]]  # upsampling made time_factor frames each
        return {
            "latent": z,
            "codes": q["codes"],
            "recon": recon,
            "entropy_loss": q["entropy_loss"],
            "commitment_loss": q["commitment_loss"],
        }
