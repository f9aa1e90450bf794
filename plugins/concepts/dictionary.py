"""A sparse dictionary of a layer's activations: a TopK sparse autoencoder (Gao et al. 2024, "Scaling and
evaluating sparse autoencoders"; the form the `overcomplete` package (Fel et al. 2025) offers for vision
models), trained on the activation vectors of a layer's positions across the folder.

Each position's activation x (C,) is written as a few of `atoms` directions:

    z = TopK(ReLU(E (x - b) + e)),   x ~ D z + b

with D's columns (the atoms) of unit length, so that an atom's code is how much of it a position holds.
TopK keeps the k largest codes and zeroes the rest: the sparsity is set, not tuned through a penalty.
Training is full-precision Adam on the mean squared error, seeded, on batches of positions.

>>> sae = train_dictionary(vectors, atoms=64, k=4, steps=500)    # vectors (P, C)
>>> codes = sae.encode(vectors)                                   # (P, 64), at most 4 non-zero per row
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class TopKDictionary(nn.Module):
    """Encoder, TopK, and a decoder with unit-length atoms."""

    def __init__(self, channels: int, atoms: int, k: int, generator: torch.Generator):
        super().__init__()
        self.k = k
        decoder = torch.randn(channels, atoms, generator=generator, dtype=torch.float64)
        self.decoder = nn.Parameter(decoder / decoder.norm(dim=0, keepdim=True))
        self.encoder = nn.Parameter(self.decoder.detach().T.clone())  # tied at the start, as is usual
        self.encoder_bias = nn.Parameter(torch.zeros(atoms, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(channels, dtype=torch.float64))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(P, atoms) codes: the k largest of ReLU(E (x - b) + e) per row, the rest 0."""
        pre = torch.relu((x.double() - self.bias) @ self.encoder.T + self.encoder_bias)
        top = pre.topk(min(self.k, pre.shape[1]), dim=1)
        return torch.zeros_like(pre).scatter(1, top.indices, top.values)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.decoder.T + self.bias

    def normalise(self) -> None:
        """Atoms back to unit length after a step (their scale lives in the codes)."""
        with torch.no_grad():
            self.decoder /= self.decoder.norm(dim=0, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Fit:
    """What the dictionary leaves unexplained and how sparse it is, on the vectors it is measured on."""

    relative_error: float  # ||x - x_hat||^2 / ||x - mean x||^2, summed over the vectors
    active: float  # mean number of non-zero codes per vector
    dead: int  # atoms never active on these vectors


def train_dictionary(vectors: torch.Tensor, atoms: int, k: int, steps: int = 1000, batch_size: int = 256,
                     lr: float = 1e-3, seed: int = 0) -> TopKDictionary:
    """A TopK dictionary of `atoms` atoms fitted to `vectors` (P, C). The bias starts at the vectors'
    mean, each step takes a seeded random batch, and the atoms are renormalised after each step."""
    generator = torch.Generator().manual_seed(seed)
    x = vectors.double()
    model = TopKDictionary(x.shape[1], atoms, k, generator)
    with torch.no_grad():
        model.bias.copy_(x.mean(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        batch = x[torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)]
        optimizer.zero_grad()
        ((model.decode(model.encode(batch)) - batch) ** 2).sum(1).mean().backward()
        optimizer.step()
        model.normalise()
    return model.eval()


@torch.no_grad()
def fit(model: TopKDictionary, vectors: torch.Tensor) -> Fit:
    x = vectors.double()
    codes = model.encode(x)
    error = float(((model.decode(codes) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum().clamp_min(1e-300))
    return Fit(error, float((codes > 0).sum(1).double().mean()), int(((codes > 0).sum(0) == 0).sum()))
