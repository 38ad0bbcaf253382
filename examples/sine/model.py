"""A plain nn.Module: x -> y through `depth` hidden layers of `width` tanh units."""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, width: int = 64, depth: int = 2):
        super().__init__()
        layers, inputs = [], 1
        for _ in range(depth):
            layers += [nn.Linear(inputs, width), nn.Tanh()]
            inputs = width
        self.net = nn.Sequential(*layers, nn.Linear(inputs, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
