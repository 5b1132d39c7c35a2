"""Benchmark of `hwkd calibrate`: how well the cost model predicts two real runtimes on this machine.

For `nb201`, `fbnet` and `mbconv-small`, N random students per space are measured here with two
runtimes on the same graphs and threads: hwkd's TVM library (the `host` profile's measurement)
and ONNX Runtime (the file `hwkd export` writes). Then, per space and runtime, it prints:

- the uncalibrated `host` cost model (for ONNX Runtime its onnxruntime model): Spearman and median
  absolute error against all students;
- the model calibrated from `--fit` students (picked as `hwkd calibrate --measure` picks them:
  spread over the model's latency range), scored on the others;
- MACs with a least-squares affine fit on the same students, the baseline to beat.

Each runtime is measured in its own process (a thread pool of one would compete with the other's),
every student `--passes` times in interleaved passes (a slow minute of a shared machine then hits
one pass of many students, not every pass of a few); the fastest pass is the latency, and the
spread between passes is printed as the noise of the machine. Measurements go to CSVs a
later run reuses (`--out`; the settings they were taken with are kept beside them, and a run that
asks for other students, seed, passes, threads or layout is refused); the fit is then a few
seconds. Run it with nothing else on the machine.

    python benchmarks/calibrate.py [--students 110] [--fit 10] [--passes 3] [--spaces nb201,fbnet,mbconv-small]
                                   [--out calibrate-measurements]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

SPACES = ("nb201", "fbnet", "mbconv-small")
RUNTIMES = ("tvm", "ort")
PARAMS = ("dense_conv", "pointwise_conv", "depthwise_conv", "other", "overhead")
FIELDS = ("space", "arch", "latency_ms", "pass_spread_pct", "passes_ms")


def distinct_archs(space: object, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    for _ in range(count * 50):
        if len(seen) == count:
            break
        seen.setdefault(space.parse(space.sample(rng)), None)  # type: ignore[attr-defined]
    return list(seen)


class OrtRunner:
    """One student as ONNX Runtime runs the file `hwkd export` writes (a session per timing pass)."""

    def __init__(self, module: object, input_shape: tuple[int, ...], threads: int) -> None:
        from hwkd.latency.onnxruntime_graph import student_onnx

        self.model = student_onnx(module, input_shape)  # type: ignore[arg-type]
        self.x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
        self.threads = threads

    def time_ms(self) -> float:
        # the fastest run, not the median: on this 2-core VM 8 fbnet students timed in 4 passes of a
        # session each spread 6 % between passes by the fastest run and 13 % by the median one
        return min(self.runs_ms())

    def runs_ms(self) -> list[float]:
        """Milliseconds per call of 7 runs of at least 20 ms each, in a fresh session."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(self.model, options, providers=["CPUExecutionProvider"])
        feed = {"input": self.x}
        for _ in range(3):
            session.run(None, feed)
        runs = []
        for _ in range(7):  # as TVM's time_evaluator: runs of at least 20 ms, 7 of them
            start, calls = time.perf_counter(), 0
            while time.perf_counter() - start < 0.02:
                session.run(None, feed)
                calls += 1
            runs.append((time.perf_counter() - start) / calls * 1e3)
        return runs


class TvmRunner:
    """One student as hwkd's TVM library, compiled once and timed as `hwkd estimate` times it."""

    def __init__(self, module: object, input_shape: tuple[int, ...], profile: object, tuning: object = None,
                 blocked: bool = False) -> None:
        from hwkd.latency.lowering import Lowerer
        from hwkd.latency.measure import compile_student
        from hwkd.latency.relax_import import torch_to_relax
        from hwkd.latency.schedule import register_tile

        graph = torch_to_relax(module, input_shape)  # type: ignore[arg-type]
        lowered = Lowerer(register_tile(profile.cpu.simd_bits), blocked).lower(graph)  # type: ignore[attr-defined]
        self.tuning = None
        if tuning is not None:  # a TuningPlan: tune the kernels here first, as `hwkd export --tune` does
            from hwkd.latency.tuning import tune_student

            self.tuning = tune_student(graph, lowered, profile, tuning)  # type: ignore[arg-type]
            lowered = self.tuning.lowered or lowered  # in the layout that was fastest
        schedules = self.tuning.schedules if self.tuning else None
        self.student = compile_student(lowered, graph.params, profile, schedules)  # type: ignore[arg-type]
        self.input_shape = input_shape
        self.profile = profile

    def time_ms(self) -> float:
        return statistics.median(self.runs_ms())  # as `hwkd estimate` reports a measured library

    def runs_ms(self) -> list[float]:
        """Milliseconds per call of each of time_evaluator's runs (7, of at least 20 ms each)."""
        from hwkd.latency.measure import Board, TimingPlan

        with Board(self.profile) as board:  # type: ignore[arg-type]
            return board.runs_ms(board.load(self.student), self.input_shape, TimingPlan())


def collect(runtime: str, path: Path, students: int, seed: int, passes: int, threads: int,
            spaces: tuple[str, ...] = SPACES, blocked: bool = False) -> None:
    """Measure every student `passes` times, interleaved, so a slow minute of a shared machine hits one
    pass of many students instead of all passes of a few; the fastest pass is the latency (the least
    disturbed: on this 2-core VM two sets of 3 passes agreed within 7 % by their fastest pass and 40 %
    by their median one, ONNX Runtime, 2 threads)."""
    from hwkd.errors import HwkdError
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space

    host = load_profile("host").with_threads(threads)
    todo = []
    for name in spaces:
        space = load_space(name)
        for n, arch in enumerate(distinct_archs(space, students, seed), start=1):
            print(f"\r  preparing {runtime} {name}: {n}/{students}   ", end="", file=sys.stderr, flush=True)
            module = space.build(arch, 10, space.default_input_shape).eval()
            try:
                runner = (OrtRunner(module, space.default_input_shape, threads) if runtime == "ort"
                          else TvmRunner(module, space.default_input_shape, host, blocked=blocked))
            except HwkdError as exc:  # one student that will not compile costs only itself
                print(f"\n  {name} {arch}: left out, {exc}", file=sys.stderr)
                continue
            todo.append((name, arch, runner))
        print(file=sys.stderr)
    times: list[list[float]] = [[] for _ in todo]
    for p in range(passes):
        for n, (_, _, runner) in enumerate(todo):
            print(f"\r  timing {runtime}: pass {p + 1}/{passes}, {n + 1}/{len(todo)}   ", end="", file=sys.stderr,
                  flush=True)
            times[n].append(runner.time_ms())
    print(file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for (name, arch, _), runs in zip(todo, times):
            writer.writerow({"space": name, "arch": arch, "latency_ms": f"{min(runs):.4f}",
                             "pass_spread_pct": f"{100 * (max(runs) - min(runs)) / min(runs):.2f}",
                             "passes_ms": " ".join(f"{r:.4f}" for r in runs)})
    settings_path(path).write_text(json.dumps(settings(students, seed, passes, threads, blocked)))


def report(measured: dict[str, list[dict[str, str]]], fit_count: int, spaces: tuple[str, ...] = SPACES,
           blocked: bool = False) -> None:
    from hwkd.latency.calibration import breakdown, median_abs_error_pct
    from hwkd.latency.estimator import Estimator
    from hwkd.profiles import load_profile
    from hwkd.spaces import load_space
    from hwkd.stats import spearman

    schedule = load_profile("host")
    roofline = replace(schedule, cost=replace(schedule.cost, model="roofline"))
    onnxruntime = replace(schedule, cost=replace(schedule.cost, model="onnxruntime"))
    if not schedule.cost.node_overhead_us:
        sys.exit("the host profile has no cost_model.node_overhead_us (benchmarks/overheads.py --onnxruntime)")
    # each runtime by its own model: hwkd's library by the schedule model, ONNX Runtime by the
    # onnxruntime model (the others' rankings are printed beside them)
    models = {"tvm": schedule, "ort": onnxruntime}
    estimator = Estimator(schedule, "model")
    if blocked:  # the library of the channel-blocked layout (its lowered students are cached apart)
        from hwkd.latency.lowering import Lowerer
        from hwkd.latency.schedule import register_tile

        estimator.lowerer = Lowerer(register_tile(schedule.cpu.simd_bits), blocked=True)
    counting = Estimator(onnxruntime, "model")  # ONNX Runtime's nodes of each student
    table = []
    both = []
    noise = []
    measured_by: dict[tuple[str, str], dict[str, float]] = {}  # (space, runtime) -> arch -> latency_ms
    ceiling = []
    for name in spaces:
        space = load_space(name)
        for runtime in RUNTIMES:
            mine = [r for r in measured[runtime] if r["space"] == name]
            if len(mine) <= fit_count + 2:
                continue
            lowered = [estimator.lowered_arch(space, r["arch"]) for r in mine]
            nodes = [counting.runtime_nodes_arch(space, r["arch"]) for r in mine]
            y = [float(r["latency_ms"]) for r in mine]
            fits = {}  # each model: its parts, the picks it is fitted on, the held-out rest, the fit
            for m in (schedule, roofline, onnxruntime):
                m_parts = [breakdown(low.kernels, m, n) for low, n in zip(lowered, nodes)]
                fits[m.cost.model] = (m_parts, *fitted_split(m_parts, y, fit_count))
            both.append((name, runtime, {
                model_name: (spearman([p.total_ms for p in m_parts], y),
                             median_abs_error_pct([m_fit.predict_ms(m_parts[i]) for i in m_rest],
                                                  [y[i] for i in m_rest]))
                for model_name, (m_parts, _, m_rest, m_fit) in fits.items()}))
            parts, picks, rest, result = fits[models[runtime].cost.model]
            model = [p.total_ms for p in parts]
            macs = np.array([float(low.macs) for low in lowered])
            # the ranking's noise ceiling: how alike two passes of the same students rank them, beside
            # how alike the model ranks them to one pass (both sides as noisy as one pass's)
            passes = [[float(v) for v in r["passes_ms"].split()] for r in mine]
            runs = range(min(len(p) for p in passes))
            pass_vs_pass = [spearman([p[i] for p in passes], [p[j] for p in passes])
                            for i in runs for j in runs if i < j]
            model_vs_pass = [spearman(model, [p[i] for p in passes]) for i in runs]
            half = len(runs) // 2  # with 4 or more passes: the fastest of each half, as the latency is taken
            halves = (spearman([min(p[:half]) for p in passes], [min(p[half:2 * half]) for p in passes])
                      if half >= 2 else float("nan"))
            noise.append((name, runtime, statistics.median(float(r["pass_spread_pct"]) for r in mine),
                          statistics.median(pass_vs_pass) if pass_vs_pass else float("nan"),
                          statistics.median(model_vs_pass), halves))
            measured_by[name, runtime] = {r["arch"]: float(r["latency_ms"]) for r in mine}
            ceiling.append((name, runtime, best_weighting_spearman(parts, y)))
            calibrated = [result.predict_ms(parts[i]) for i in rest]
            a, b = np.polyfit(macs[picks], np.array(y)[picks], 1)
            by_macs = [a * macs[i] + b for i in rest]
            held = [y[i] for i in rest]
            table.append((name, runtime, len(mine), len(rest),
                          spearman(model, y), median_abs_error_pct(model, y),
                          spearman(calibrated, held), median_abs_error_pct(calibrated, held),
                          spearman(by_macs, held), median_abs_error_pct(by_macs, held),
                          spearman(list(macs), y), result))
    print(f"\n## Cost model against two runtimes on this machine (host profile, {schedule.runtime.threads} threads; "
          "hwkd's TVM library by the schedule model, ONNX Runtime by the onnxruntime model: its nodes' rooflines, "
          f"{schedule.cost.node_overhead_us:g} us per convolution or matrix product, "
          f"{schedule.cost.light_overhead_us:g} us per other node + its bytes at "
          f"{schedule.cost.light_bytes_per_cycle:g} B/cycle/core)\n")
    print(f"Calibrated: fitted on {fit_count} students spread over the model's latency range, scored on the rest. "
          f"MACs baseline: least-squares affine fit on the same {fit_count}.\n")
    print("| space | runtime | students | scored | uncalibrated Spearman | uncalibrated median error | "
          "calibrated Spearman | calibrated median error | MACs-affine Spearman | MACs-affine median error |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in table:
        name, runtime, n, scored, s0, e0, s1, e1, s2, e2 = row[:10]
        print(f"| {name} | {runtime} | {n} | {scored} | {s0:.3f} | {e0:.1f} % | {s1:.3f} | {e1:.1f} % | "
              f"{s2:.3f} | {e2:.1f} % |")
    print("\nGoals: uncalibrated Spearman >= 0.95; calibrated median error <= 5 % and below MACs-affine.\n")
    print("| space | runtime | uncal. Spearman >= 0.95 | cal. error <= 5 % | cal. error < MACs |")
    print("|---|---|---|---|---|")
    for row in table:
        name, runtime, _, _, s0, _, _, e1, _, e2 = row[:10]
        print(f"| {name} | {runtime} | {'met' if s0 >= 0.95 else 'NOT met'} | {'met' if e1 <= 5 else 'NOT met'} | "
              f"{'met' if e1 < e2 else 'NOT met'} |")
    print("\nThe three cost models against both runtimes: uncalibrated Spearman, and median error calibrated "
          f"from {fit_count} (each model's own picks):\n")
    print("| space | runtime | schedule model | roofline model | onnxruntime model |")
    print("|---|---|---:|---:|---:|")
    for name, runtime, by_model in both:
        print(f"| {name} | {runtime} | " + " | ".join(f"{rho:.3f}, {err:.1f} %" for rho, err in by_model.values()) + " |")
    print("\nMeasurement noise: median over students of (slowest - fastest pass) / fastest pass; how alike two "
          "passes rank the students (Spearman, median over pairs of passes: the ceiling of any ranking scored "
          "against one pass) and how alike the uncalibrated model ranks them to one pass (median over passes); "
          "with 4 or more passes, how alike the fastest of the first half ranks them to the fastest of the "
          "second (the ceiling for a latency taken as the fastest of several):\n")
    print("| space | runtime | pass spread | pass vs pass Spearman | model vs one pass Spearman | "
          "fastest of half the passes vs the other half |")
    print("|---|---|---:|---:|---:|---:|")
    for name, runtime, spread, pass_rho, model_rho, halves in noise:
        print(f"| {name} | {runtime} | {spread:.1f} % | {pass_rho:.3f} | {model_rho:.3f} | "
              + ("-" if math.isnan(halves) else f"{halves:.3f}") + " |")
    print("\nHow alike the two runtimes rank the same students (Spearman of their measured latencies), how MACs "
          "rank each, and how the weighting of the model's parts that fits all students best ranks them "
          "(non-negative least relative squares, in-sample: what the parts can say, not a calibration):\n")
    print("| space | TVM vs ONNX Runtime | MACs vs TVM | MACs vs ONNX Runtime | best weighting, TVM | "
          "best weighting, ONNX Runtime |")
    print("|---|---:|---:|---:|---:|---:|")
    best = {(name, runtime): value for name, runtime, value in ceiling}
    by_macs_rank = {(row[0], row[1]): row[10] for row in table}
    for name in spaces:
        tvm, ort = measured_by.get((name, "tvm")), measured_by.get((name, "ort"))
        if not tvm or not ort:
            continue
        common = sorted(set(tvm) & set(ort))
        print(f"| {name} | {spearman([tvm[a] for a in common], [ort[a] for a in common]):.3f} | "
              f"{by_macs_rank[name, 'tvm']:.3f} | {by_macs_rank[name, 'ort']:.3f} | {best[name, 'tvm']:.3f} | "
              f"{best[name, 'ort']:.3f} |")
    print("\nFitted multipliers (on the host profile's datasheet constants) and leave-one-out error of each fit:\n")
    print("| space | runtime | " + " | ".join(PARAMS) + " | ridge | LOO error |")
    print("|---|---|" + "---:|" * (len(PARAMS) + 2))
    for row in table:
        result = row[-1]
        print(f"| {row[0]} | {row[1]} | " + " | ".join(f"{result.multipliers[p]:.2f}" for p in PARAMS)
              + f" | {result.ridge:g} | {result.loo_median_abs_error_pct:.1f} % |")


def fitted_split(parts: list, measured_ms: list[float], fit_count: int) -> tuple[list[int], list[int], Any]:
    """(picks, rest, fit): the calibration the benchmark scores, fitted on `fit_count` students spread
    over the modeled range (as `hwkd calibrate --measure` picks them), the rest held out."""
    from hwkd.latency.calibration import fit, spread_picks

    picks = spread_picks([p.total_ms for p in parts], fit_count)
    rest = [i for i in range(len(measured_ms)) if i not in picks]
    return picks, rest, fit([parts[i] for i in picks], [measured_ms[i] for i in picks])


def best_weighting_spearman(parts: list, measured_ms: list[float]) -> float:
    """Spearman of the non-negative weighting of each student's cost parts (kernel classes, per-call
    overhead) that fits all of `measured_ms` best in relative terms: near the best ranking that any
    weighting of the model's parts, so any calibration of it, could give these students."""
    from scipy.optimize import nnls

    from hwkd.stats import spearman

    x = np.array([[*p.class_ms, p.overhead_ms] for p in parts])
    y = np.array(measured_ms)
    weights, _ = nnls(x / y[:, None], np.ones(len(y)))
    return spearman(list(x @ weights), list(y))


def settings(students: int, seed: int, passes: int, threads: int, blocked: bool) -> dict[str, Any]:
    """What a measurement CSV depends on besides its spaces (which it lists itself)."""
    return {"students": students, "seed": seed, "passes": passes, "threads": threads, "blocked": blocked}


def settings_path(csv_path: Path) -> Path:
    return csv_path.with_suffix(".settings.json")


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=110, help="students per space (default 110)")
    parser.add_argument("--fit", type=int, default=10, help="measurements a calibration gets (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=3, help="timing passes over all students (default 3)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads of both runtimes (default: this process's cores)")
    parser.add_argument("--out", default="calibrate-measurements", help="prefix of the measurement CSVs "
                        "(PREFIX-tvm.csv, PREFIX-ort.csv), reused when present")
    parser.add_argument("--spaces", default=",".join(SPACES), help="comma-separated (default: all three)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated (default: both)")
    parser.add_argument("--blocked", action="store_true", help="hwkd's library and model in the channel-blocked "
                        "layout (hwkd.latency.blocked_layout), not the default NCHW")
    parser.add_argument("--collect", choices=RUNTIMES, help=argparse.SUPPRESS)  # one runtime, in a child process
    args = parser.parse_args()
    spaces = tuple(name.strip() for name in args.spaces.split(",") if name.strip())
    unknown = [name for name in spaces if name not in SPACES]
    if unknown:
        parser.error(f"--spaces {','.join(unknown)}: choose from {', '.join(SPACES)}")
    if args.collect:
        collect(args.collect, Path(f"{args.out}-{args.collect}.csv"), args.students, args.seed, args.passes,
                args.threads, spaces, args.blocked)
        return
    runtimes = [name.strip() for name in args.runtimes.split(",") if name.strip()]
    if any(name not in RUNTIMES for name in runtimes):
        parser.error(f"--runtimes {args.runtimes}: choose from {', '.join(RUNTIMES)}")
    measured: dict[str, list[dict[str, str]]] = dict.fromkeys(RUNTIMES, [])
    for runtime in runtimes:
        path = Path(f"{args.out}-{runtime}.csv")
        if not path.exists():
            # each runtime in its own process: one runtime's thread pool never competes with the other's
            subprocess.run([sys.executable, __file__, "--collect", runtime, "--students", str(args.students),
                            "--seed", str(args.seed), "--passes", str(args.passes), "--threads", str(args.threads),
                            "--spaces", ",".join(spaces), "--out", args.out]
                           + (["--blocked"] if args.blocked else []), check=True)
        else:
            print(f"{path}: measured before, reused (delete it to measure again)", file=sys.stderr)
            asked = settings(args.students, args.seed, args.passes, args.threads, args.blocked)
            if settings_path(path).exists():  # written beside every CSV since the students' settings were kept
                saved = json.loads(settings_path(path).read_text())
                differ = [(f"--{k}" if saved.get(k) else f"no --{k}") if isinstance(v, bool)
                          else f"--{k} {saved.get(k)} (asked {v})" for k, v in asked.items() if saved.get(k) != v]
                if differ:
                    parser.error(f"{path} was measured with {', '.join(differ)}: delete it, or ask for its settings")
            else:
                print(f"{path}: no {settings_path(path).name} beside it, its students, seed, passes and threads "
                      "are taken to be the ones asked", file=sys.stderr)
        measured[runtime] = read_rows(path)
        missing = sorted(set(spaces) - {row["space"] for row in measured[runtime]})
        if missing:
            parser.error(f"{path} has no {', '.join(missing)} students: delete it, or ask for the spaces it has")
    report(measured, args.fit, spaces, args.blocked)


if __name__ == "__main__":
    main()
