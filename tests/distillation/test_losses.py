"""Each distillation loss against a case worked out by hand, and the registry that names them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hwkd.distillation.config import FINETUNE, LOSS_NAMES, BriefConfig, FullConfig
from hwkd.distillation.losses import LOSSES, LogitLoss, distill_loss, kd_term, register
from hwkd.errors import HwkdError


def logits_of(*rows: list[float]) -> torch.Tensor:
    """Logits whose softmax (T = 1) is exactly these probabilities."""
    return torch.tensor(rows).log()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_without_a_teacher_every_loss_is_cross_entropy(name: str) -> None:
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.allclose(distill_loss(name, logits, None, labels, 4.0, 0.7), F.cross_entropy(logits, labels))
    assert torch.allclose(distill_loss(name, logits, torch.randn(8, 5), labels, 4.0, 0.0),
                          F.cross_entropy(logits, labels))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_matching_the_teacher_costs_no_distillation_loss(name: str) -> None:
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    # (DIST's Pearson keeps a 1e-8 in its denominator, as the paper's code does)
    assert float(distill_loss(name, logits, logits.clone(), labels, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-3)


def test_kd_is_kl_scaled_by_t_squared_plus_the_labels_term() -> None:
    s, t, labels = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    temperature = 3.0
    p_t = F.softmax(t / temperature, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / temperature, 1))).sum(1).mean()
    expected = 0.6 * temperature**2 * kl + 0.4 * F.cross_entropy(s, labels)
    assert torch.allclose(distill_loss("kd", s, t, labels, temperature, 0.6), expected, atol=1e-5)


def test_the_ramp_scales_the_distillation_term_alone() -> None:
    s, t, labels = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    term = float(kd_term(s, t, labels, 4.0))
    hard = float(F.cross_entropy(s, labels))
    assert float(distill_loss("kd", s, t, labels, 4.0, 0.9, 0.25)) == pytest.approx(0.25 * 0.9 * term + 0.1 * hard)
    assert float(distill_loss("dkd", s, t, labels, 4.0, 0.9, 0.0)) == pytest.approx(hard)  # step 0 of no term


def test_dkd_by_hand() -> None:
    # label 0; teacher [1/5, 3/5, 1/5], student uniform (T = 1)
    s, t, label = logits_of([1 / 3, 1 / 3, 1 / 3]), logits_of([0.2, 0.6, 0.2]), torch.tensor([0])
    # target vs the rest: teacher [0.2, 0.8], student [1/3, 2/3]
    target = 0.2 * math.log(0.2 / (1 / 3)) + 0.8 * math.log(0.8 / (2 / 3))
    # among the non-target classes: teacher [3/4, 1/4], student [1/2, 1/2]
    non_target = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = 1.0 * target + 2.0 * non_target
    assert float(LOSSES["dkd"].term(s, t, label, 1.0)) == pytest.approx(expected, rel=1e-5)
    # the paper's decomposition: KD = target part + (1 - teacher's target probability) * non-target part
    assert float(kd_term(s, t, label, 1.0)) == pytest.approx(target + (1 - 0.2) * non_target, rel=1e-5)
    # at T = 2 both parts are on softened outputs and scaled by T^2
    soft_t, soft_s = F.softmax(t / 2, 1)[0], F.softmax(s / 2, 1)[0]
    target_2 = sum(float(p * (p / q).log()) for p, q in zip([soft_t[0], 1 - soft_t[0]], [soft_s[0], 1 - soft_s[0]]))
    q_t, q_s = soft_t[1:] / soft_t[1:].sum(), soft_s[1:] / soft_s[1:].sum()
    non_target_2 = float((q_t * (q_t / q_s).log()).sum())
    assert float(LOSSES["dkd"].term(s, t, label, 2.0)) == pytest.approx(4 * (target_2 + 2 * non_target_2), rel=1e-5)


def test_dist_by_hand() -> None:
    # two images (T = 1): the first's classes in the opposite order, the second matched exactly
    t = logits_of([0.5, 0.25, 0.25], [0.25, 0.5, 0.25])
    s = logits_of([0.25, 0.25, 0.5], [0.25, 0.5, 0.25])
    # per image, 1 - Pearson: the first pair centred is [1/6, -1/12, -1/12] vs [-1/12, -1/12, 1/6], r = -1/2
    inter = (1.5 + 0.0) / 2
    # per class over the two images: class 0 student constant (r = 0), class 1 equal (r = 1), class 2 teacher constant
    intra = (1.0 + 0.0 + 1.0) / 3
    expected = 2.0 * inter + 2.0 * intra
    assert float(LOSSES["dist"].term(s, t, torch.tensor([0, 1]), 1.0)) == pytest.approx(expected, rel=1e-5)
    # relations, not values: a student whose outputs are the teacher's, sharpened, keeps every
    # relation (DIST ~0) where KD still asks for the teacher's exact values
    t = logits_of([0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5])
    sharper = logits_of([0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6])
    labels = torch.tensor([0, 1, 2])
    assert float(LOSSES["dist"].term(sharper, t, labels, 1.0)) < 1e-5
    assert float(kd_term(sharper, t, labels, 1.0)) > 0.02


def test_ls_by_hand() -> None:
    # teacher [0, 1, 2]: mean 1, std 1, Z-scores [-1, 0, 1]; student [0, 0, 3]: mean 1, std sqrt(3)
    t, s, label = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([2])
    root3 = math.sqrt(3)

    def softmax(z: list[float]) -> list[float]:
        e = [math.exp(v / 2) for v in z]  # base temperature 2
        return [v / sum(e) for v in e]

    p_t, p_s = softmax([-1, 0, 1]), softmax([-1 / root3, -1 / root3, 2 / root3])
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    expected = 10 * 2**2 * kl  # weight 10 (9 beside CE's 0.1 at alpha 0.9), T_b^2 = 4
    assert float(LOSSES["ls"].term(s, t, label, 4.0)) == pytest.approx(expected, rel=1e-5)
    # the configured temperature does not apply: standardization replaces it
    assert float(LOSSES["ls"].term(s, t, label, 1.0)) == pytest.approx(expected, rel=1e-5)
    # relations, not range: a student whose logits are the teacher's scaled and shifted costs
    # nothing, where KD still asks for the teacher's exact range
    t = torch.randn(6, 10)
    scaled = 0.3 * t + 5.0
    labels = torch.randint(0, 10, (6,))
    assert float(LOSSES["ls"].term(scaled, t, labels, 4.0)) < 1e-5
    assert float(kd_term(scaled, t, labels, 1.0)) > 0.02


def test_the_registry_names_the_losses_and_refuses_duplicates() -> None:
    assert tuple(LOSSES) == LOSS_NAMES  # the CLI lists them without importing torch
    with pytest.raises(ValueError, match="'kd' is registered already"):
        register(LogitLoss("kd", kd_term, "again"))
    with pytest.raises(HwkdError, match=r"--loss 'ce': choose kd, dkd, dist, ls"):
        distill_loss("ce", torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), 4.0, 0.5)
    with pytest.raises(HwkdError, match=r"--loss 'ce': choose kd, dkd, dist, ls"):
        FullConfig(loss="ce").check()
    # the measured defaults (README): KD ranks students best in brief runs, LS with a 2-epoch ramp
    # trains the chosen one best; pruned students fine-tune with KD at full weight
    assert (BriefConfig().loss, FullConfig().loss, FullConfig().loss_warmup_epochs) == ("kd", "ls", 2.0)
    assert (FINETUNE.loss, FINETUNE.loss_warmup_epochs) == ("kd", 0.0)
