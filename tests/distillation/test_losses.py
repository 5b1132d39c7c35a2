from __future__ import annotations

import torch
import torch.nn.functional as F

from hwkd.distillation.losses import kd_loss


def test_without_a_teacher_it_is_cross_entropy() -> None:
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.allclose(kd_loss(logits, None, labels, 4.0, 0.7), F.cross_entropy(logits, labels))
    assert torch.allclose(kd_loss(logits, torch.randn(8, 5), labels, 4.0, 0.0), F.cross_entropy(logits, labels))


def test_matching_the_teacher_costs_no_soft_loss() -> None:
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.allclose(kd_loss(logits, logits.clone(), labels, 4.0, 1.0), torch.tensor(0.0), atol=1e-6)


def test_soft_term_is_kl_scaled_by_t_squared() -> None:
    s, t, labels = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    temperature = 3.0
    p_t = F.softmax(t / temperature, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / temperature, 1))).sum(1).mean()
    expected = 0.6 * temperature**2 * kl + 0.4 * F.cross_entropy(s, labels)
    assert torch.allclose(kd_loss(s, t, labels, temperature, 0.6), expected, atol=1e-5)
