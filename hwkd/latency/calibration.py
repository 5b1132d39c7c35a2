"""Few-shot calibration: fit a profile's cost model to latencies measured on the user's board.

No model from datasheets matches every runtime, clock and thread setting, so a handful of the cost
model's interpretable constants move to fit measurements, and nothing else: the modeled time of
each kernel class (`hwkd.latency.cost_model.KERNEL_CLASSES`: dense, pointwise and depthwise or
grouped convolutions, everything else; with the onnxruntime model, of ONNX Runtime's nodes of
each class) and the per-call overhead (`kernel_overhead_us` and `parallel_overhead_us` together,
or the onnxruntime model's `node_overhead_us` and `light_node_overhead_us`). A measured student's
latency is modeled as

    y ~= sum_c s_c * T_c + s_o * O

where `T_c` is the modeled time of its class-`c` kernels and `O` their call overheads under the
base profile: linear in the five multipliers `s`. The fit:

1. a global factor `g = median(y / model)`, robust to a few bad measurements: with one
   measurement this alone is the calibration;
2. least squares on relative errors `(prediction - y) / y`, each multiplier pulled toward `g` by a
   ridge penalty `lam * (s_j / g - 1)^2` (so a class the measurements hardly contain keeps its
   datasheet ratio to the others), Huber-reweighted so one outlier cannot drag the fit, every
   multiplier kept at or above `g / 20`;
3. `lam` chosen from a fixed grid by leave-one-out cross-validation with a one-standard-error
   rule (Hastie, Tibshirani and Friedman, The Elements of Statistical Learning, 7.10), paired: the
   strongest prior whose leave-one-out relative errors exceed those of the best `lam` by less than
   one standard error of their per-measurement difference. So the data must earn every departure
   from the datasheet ratios (a class whose time barely varies between the measured students
   would otherwise take any value that fits them: with 10 measurements, picking the best
   leave-one-out error alone gave multipliers as wild as x0.05 that ranked held-out students worse
   than the global factor did, benchmarks/calibrate.py), while a broken measurement, which every
   `lam` misses alike, does not push the choice to the prior.

The leave-one-out errors of the chosen fit are what a user should expect on new students; the
calibrated profile records them. A multiplier the fit moved far from the global factor (over 3x
either way) that the measurements pin down poorly (its standard error over a third of it: its
class's share of the modeled time hardly varies between the measured students, so it trades off
against another class) gets a warning: the fit predicts students like the measured ones, but not
students with another mix of kernels.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from hwkd.errors import HwkdError
from hwkd.latency.cost_model import KERNEL_CLASSES, graph_cost, kernel_class, model_version
from hwkd.latency.lowered import Kernel
from hwkd.latency.onnxruntime_graph import RuntimeNode
from hwkd.profiles import CalibrationInfo, DeviceProfile
from hwkd.stats import spearman

MIN_MEASUREMENTS = 3  # below this a leave-one-out error cannot be computed
PARAMETERS = (*KERNEL_CLASSES, "overhead")
RIDGE_GRID = (1e-6, 1e-3, 0.01, 0.1, 1.0, 10.0, 1000.0)  # 1e-6: the data alone; 1000: the global factor alone
_FLOOR = 0.05  # smallest multiplier, as a fraction of the global factor
_HUBER_K = 1.345  # the usual 95 %-efficiency tuning constant, in units of the residuals' MAD
WILD_RATIO = 3.0  # a multiplier this far from the global factor (either way) must be well determined
LOOSE_RELATIVE_SE = 1 / 3  # ... that is, its standard error below this fraction of it


@dataclass(frozen=True)
class CostBreakdown:
    """A student's modeled latency split into the parts a calibration scales (ms)."""

    class_ms: tuple[float, ...]  # per KERNEL_CLASSES
    overhead_ms: float

    @property
    def total_ms(self) -> float:
        return sum(self.class_ms) + self.overhead_ms

    def vector(self) -> np.ndarray:
        return np.array([*self.class_ms, self.overhead_ms], dtype=float)


def breakdown(kernels: Iterable[Kernel], profile: DeviceProfile,
              runtime_nodes: Sequence[RuntimeNode] = ()) -> CostBreakdown:
    """`runtime_nodes`: ONNX Runtime's nodes of the student, which the onnxruntime model costs instead of
    the kernels (their fixed costs per node are the overhead)."""
    per_class = dict.fromkeys(KERNEL_CLASSES, 0.0)
    overhead = 0.0
    for cost in graph_cost(kernels, profile, runtime_nodes):
        per_class[kernel_class(cost.kind)] += cost.work_ms
        overhead += cost.overhead_ms
    return CostBreakdown(tuple(per_class[c] for c in KERNEL_CLASSES), overhead)


@dataclass(frozen=True)
class Fit:
    multipliers: dict[str, float]  # PARAMETERS -> factor on the base profile's constants
    ridge: float
    loo_predictions_ms: tuple[float, ...]
    loo_median_abs_error_pct: float
    loo_spearman: float
    uncalibrated_median_abs_error_pct: float  # the base profile on the same measurements
    global_factor: float = 1.0  # median measured / modeled: what every multiplier is pulled toward
    standard_errors: dict[str, float] = field(default_factory=dict)  # PARAMETERS -> of its multiplier

    @property
    def poorly_determined(self) -> tuple[str, ...]:
        """Multipliers far from the global factor that the measurements pin down poorly."""
        g = self.global_factor
        return tuple(name for name in PARAMETERS
                     if (self.multipliers[name] > WILD_RATIO * g or self.multipliers[name] < g / WILD_RATIO)
                     and self.standard_errors.get(name, 0.0) > LOOSE_RELATIVE_SE * self.multipliers[name])

    @property
    def caveat(self) -> str | None:
        """One line on the poorly determined multipliers, None when there are none."""
        names = self.poorly_determined
        if not names:
            return None
        g = self.global_factor
        listed = ", ".join(f"{n} x{self.multipliers[n]:.2f} (standard error {self.standard_errors[n]:.2f})"
                           for n in names)
        return (f"poorly determined, far from the global factor x{g:.2f}: {listed}; the measured students hardly "
                "differ in the share of the time these take, so students with another mix of kernels may be off; "
                "measure a few such students too")

    def predict_ms(self, part: CostBreakdown) -> float:
        return float(part.vector() @ np.array([self.multipliers[p] for p in PARAMETERS]))


def fit(parts: Sequence[CostBreakdown], measured_ms: Sequence[float]) -> Fit:
    """Multipliers for `parts` (the base profile's breakdowns) that best predict `measured_ms`."""
    if len(parts) != len(measured_ms):
        raise ValueError(f"{len(parts)} breakdowns but {len(measured_ms)} measurements")
    if len(parts) < MIN_MEASUREMENTS:
        raise HwkdError(f"calibration needs at least {MIN_MEASUREMENTS} measurements, got {len(parts)} "
                        "(5-10 students spread over the space's latency range are enough; more help)")
    x = np.stack([p.vector() for p in parts])
    y = np.asarray(measured_ms, dtype=float)
    tried = []  # (ridge, leave-one-out predictions, their relative errors)
    for ridge in RIDGE_GRID:
        loo = np.array([x[i] @ _solve(np.delete(x, i, 0), np.delete(y, i), ridge) for i in range(len(y))])
        tried.append((ridge, loo, np.abs(loo - y) / y))
    best = min(tried, key=lambda t: float(t[2].mean()))[2]
    ridge, loo, errors = max((t for t in tried if _within_one_standard_error(t[2] - best)), key=lambda t: t[0])
    error = float(np.median(errors))
    theta = _solve(x, y, ridge)
    g = _global_factor(x, y)
    return Fit(
        multipliers={p: float(v) for p, v in zip(PARAMETERS, theta)},
        ridge=ridge,
        loo_predictions_ms=tuple(float(v) for v in loo),
        loo_median_abs_error_pct=100 * error,
        loo_spearman=spearman(list(loo), list(y)),
        uncalibrated_median_abs_error_pct=100 * float(np.median(np.abs(x.sum(1) - y) / y)),
        global_factor=g,
        standard_errors={p: float(v) for p, v in zip(PARAMETERS, _standard_errors(x, y, theta, ridge, g))},
    )


def _within_one_standard_error(excess: np.ndarray) -> bool:
    """Whether per-measurement excess errors over the best fit's are, on average, within one standard
    error of their mean (the best fit itself: all zeros)."""
    return float(excess.mean()) <= float(excess.std(ddof=1)) / math.sqrt(len(excess))


def _standard_errors(x: np.ndarray, y: np.ndarray, theta: np.ndarray, ridge: float, g: float) -> np.ndarray:
    """Standard errors of the multipliers: the ridge problem's posterior covariance
    sigma^2 (A'A + ridge / g^2 I)^-1 on the relative design A = x / y, sigma from the residuals' MAD
    (at least 1 %, as in the fit). A class whose share barely varies has a nearly flat direction."""
    a = x / y[:, None]
    residuals = a @ theta - 1.0
    sigma = _robust_scale(residuals)
    precision = a.T @ a + ridge / g**2 * np.eye(x.shape[1])
    covariance = sigma**2 * np.linalg.pinv(precision)
    return np.sqrt(np.maximum(np.diag(covariance), 0.0))


def _global_factor(x: np.ndarray, y: np.ndarray) -> float:
    """Median of measured / modeled: robust to a few bad measurements."""
    return float(np.median(y / x.sum(1)))


def _robust_scale(residuals: np.ndarray) -> float:
    """The residuals' MAD as a standard deviation; residuals within a percent are measurement noise
    on any machine, so never less than 1 %."""
    return max(1.4826 * float(np.median(np.abs(residuals))), 0.01)


def _solve(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge-to-the-global-factor least squares on relative errors, Huber-reweighted, bounded below."""
    g = _global_factor(x, y)
    k = x.shape[1]
    free = np.ones(k, dtype=bool)
    theta = np.full(k, g)
    weights = np.ones(len(y))
    prior_a = math.sqrt(ridge) / g * np.eye(k)
    prior_b = math.sqrt(ridge) * np.ones(k)
    for _ in range(10):  # IRLS steps; each also re-fixes multipliers that fell below the floor
        a = x / y[:, None] * np.sqrt(weights)[:, None]
        b = np.sqrt(weights)
        for _ in range(k):
            if not free.any():
                break
            fixed = ~free
            rhs = np.concatenate([b - a[:, fixed] @ theta[fixed], prior_b[free]])
            lhs = np.vstack([a[:, free], prior_a[np.ix_(free, free)]])
            theta[free] = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
            low = free & (theta < _FLOOR * g)
            if not low.any():
                break
            theta[low] = _FLOOR * g
            free &= ~low
        residuals = (x @ theta - y) / y
        scale = _robust_scale(residuals)
        new = np.minimum(1.0, _HUBER_K * scale / np.maximum(np.abs(residuals), 1e-12))
        if np.allclose(new, weights, atol=1e-4):
            break
        weights = new
    return theta


def stale_calibration(profile: DeviceProfile) -> str | None:
    """Why `profile`'s calibration no longer describes hwkd's estimates, or None when it does.

    Its multipliers were fitted to one version of the cost model and of the schedule it prices; after
    either changed they scale a different model, and the error the fit recorded is no longer known.
    """
    info = profile.calibration
    if info is None or info.model_version == model_version(profile):
        return None
    fitted = (f"was fitted to {info.model_version}" if info.model_version
              else "records no model version (fitted before 2026-12)")
    return (f"device {profile.name}'s calibration {fitted}, hwkd now estimates with {model_version(profile)}: "
            f"its expected error ({info.loo_median_abs_error_pct:.1f} %) no longer holds; calibrate again "
            f"(hwkd calibrate --device {info.base_profile} ...)")


def calibrated_profile(base: DeviceProfile, result: Fit, info: CalibrationInfo, name: str,
                       keep_measuring: bool) -> DeviceProfile:
    """`base` with its cost constants multiplied by the fit and `info` recorded.

    `keep_measuring` is False when the measurements came from another runtime than hwkd's TVM
    library: measuring would then time something other than what the profile predicts.
    """
    m = result.multipliers
    fitted = {
        "kernel_overhead_us": base.cost.kernel_overhead_us * m["overhead"],
        "parallel_overhead_us": base.cost.parallel_overhead_us * m["overhead"],
        **({"node_overhead_us": base.cost.node_overhead_us * m["overhead"]} if base.cost.node_overhead_us else {}),
        **({"light_node_overhead_us": base.cost.light_node_overhead_us * m["overhead"]}
           if base.cost.light_node_overhead_us is not None else {}),
        **{f"{c}_scale": base.cost.scale(c) * m[c] for c in KERNEL_CLASSES},
    }
    cost = replace(base.cost, **{key: round(value, 6) for key, value in fitted.items()})  # type: ignore[arg-type]
    where = f"hwkd calibrate, {info.measurements} measurements ({info.source}, {info.runtime}, " \
            f"{info.threads} threads), {info.date}"
    sources = dict(base.sources)
    for key in fitted:
        sources[f"cost_model.{key}"] = f"fitted: {where}"
    description = base.description.split(" [calibrated")[0] + f" [calibrated: {info.runtime}, {info.threads} threads]"
    return replace(
        base,
        name=name,
        description=description,
        cost=cost,
        runtime=replace(base.runtime, threads=info.threads,
                        executor=base.runtime.executor if keep_measuring else info.runtime),
        measure_local=base.measure_local and keep_measuring,
        rpc=base.rpc if keep_measuring else None,
        sources=sources,
        calibration=info,
    )


def spread_picks(latencies_ms: Sequence[float], count: int) -> list[int]:
    """Indices of `count` values spread evenly over the sorted range of `latencies_ms`."""
    order = sorted(range(len(latencies_ms)), key=lambda i: latencies_ms[i])
    if count >= len(order):
        return order
    if count == 1:
        return [order[len(order) // 2]]
    picks = [order[round(j * (len(order) - 1) / (count - 1))] for j in range(count)]
    return list(dict.fromkeys(picks))


def median_abs_error_pct(predicted: Sequence[float], measured: Sequence[float]) -> float:
    return 100 * statistics.median(abs(p - m) / m for p, m in zip(predicted, measured))
