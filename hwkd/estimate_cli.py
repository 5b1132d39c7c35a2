"""`hwkd estimate`: latency, memory, MACs and parameters of students, one result per input."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hwkd.errors import ConfigError, HwkdError
from hwkd.latency.tuning import DEFAULT_VARIANTS, TuningPlan

log = logging.getLogger(__name__)


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError("--input-shape", [f"{text!r} is not N,C,H,W (e.g. 1,3,32,32)"]) from None
    if len(shape) != 4 or any(v < 1 for v in shape):
        raise ConfigError("--input-shape", [f"{text!r} is not N,C,H,W with positive sizes (e.g. 1,3,32,32)"])
    return shape


def read_arch_file(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise HwkdError(f"--arch-file {path}: no such file")
    archs = [line.strip() for line in file.read_text().splitlines()]
    archs = [a for a in archs if a and not a.startswith("#")]
    if not archs:
        raise HwkdError(f"--arch-file {path}: no architecture in it (one per line, # for comments)")
    return archs


def tuning_plan(args: argparse.Namespace) -> TuningPlan | None:
    """`--tune [--tune-trials N]` as a plan; None without --tune."""
    if args.tune_trials is not None and not args.tune:
        raise HwkdError("--tune-trials needs --tune")
    if not args.tune:
        return None
    trials = DEFAULT_VARIANTS if args.tune_trials is None else args.tune_trials
    if trials < 1:
        raise HwkdError(f"--tune-trials {trials}: must be at least 1 (schedules measured per kernel)")
    return TuningPlan(variants=trials)


def run_estimate(args: argparse.Namespace) -> int:
    from hwkd.latency.estimator import Estimator
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    profile = load_profile(args.device)
    if args.threads is not None:
        profile = profile.with_threads(args.threads)
    shape = parse_input_shape(args.input_shape)
    if args.num_classes < 1:
        raise HwkdError(f"--num-classes {args.num_classes}: must be at least 1")
    estimator = Estimator(profile, args.latency_source, tuning=tuning_plan(args))

    if args.onnx:
        jobs = [(path, lambda p=path: estimator.estimate_onnx(p, shape)) for path in args.onnx]
    else:
        if not args.space:
            raise HwkdError("--space is needed with --arch/--arch-file (see hwkd spaces)")
        space = load_space(args.space)
        archs = [args.arch] if args.arch else read_arch_file(args.arch_file)
        for arch in archs:  # every id is checked before any compiling starts
            space.parse(arch)
        jobs = [
            (arch, lambda a=arch: estimator.estimate_arch(space, a, shape, args.num_classes)) for arch in archs
        ]

    from hwkd.progress import progress_bar

    if not args.json:
        print(f"{'latency_ms':>11} {'source':<8} {'peak_mem_KiB':>12} {'params_KiB':>10} {'MMACs':>8}  student")
    with progress_bar(len(jobs), "estimating", "student", len(jobs) > 1 and sys.stderr.isatty()) as bar:
        for label, job in jobs:
            estimate = job()
            if args.json:
                print(json.dumps(estimate.to_json(), sort_keys=True), flush=True)
            else:
                print(
                    f"{estimate.latency_ms:>11.3f} {estimate.source:<8} {estimate.peak_memory_bytes / 1024:>12.1f} "
                    f"{estimate.params_bytes / 1024:>10.1f} {estimate.macs / 1e6:>8.2f}  {label}"
                    + (f"  (tuned, {estimate.layout} library)" if estimate.layout else ""),
                    flush=True,
                )
            bar.update()
    if not args.json and not estimator.measure:
        if estimator.stale_calibration:
            print(f"model latencies of {profile.name}: {estimator.stale_calibration}")
        elif profile.calibration is not None:
            print(f"model latencies of {profile.name}, calibrated to {profile.calibration.runtime}: "
                  f"median error {profile.calibration.loo_median_abs_error_pct:.1f} % (leave-one-out)")
            if profile.calibration.caveat:
                print(f"caveat of that calibration: {profile.calibration.caveat}")
        else:
            print(f"model latencies of {profile.name}, uncalibrated: their error on your board is unknown "
                  "(hwkd calibrate fits the profile to measurements)")
    return 0
