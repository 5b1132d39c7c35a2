"""Zero-cost accuracy proxies: scores of an untrained student, from one forward and backward pass.

SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving
synaptic flow", NeurIPS 2020; as a NAS score, Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS", ICLR 2021): with every weight made positive and an all-ones input, let R be the
sum of the network's outputs; the score is sum over weights of |w * dR/dw|. It grows with the
number of paths through the network and their width, so it sees capacity that a few hundred steps
of training have not yet turned into accuracy (benchmarks/proxy_fidelity.py measures how well it
ranks fully distilled students).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def synflow(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """log10 of SynFlow for `model` (left untouched: a copy is scored) on one input of `input_shape`
    (a leading batch dimension is replaced by 1). In float64, so the long products of deep networks
    do not overflow; BatchNorm in eval mode, so its running statistics act as fixed scales."""
    scored = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in scored.parameters():
            p.abs_()
    scored.zero_grad(set_to_none=True)
    with torch.enable_grad():
        scored(torch.ones((1, *input_shape[1:]), dtype=torch.float64)).sum().backward()
    with torch.no_grad():
        total = sum(float((p * p.grad).abs().sum()) for p in scored.parameters() if p.grad is not None)
    return math.log10(max(total, 1e-300))
