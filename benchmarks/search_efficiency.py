"""Benchmark of the search's sampler: how good a front does each sampler find in T trials?

Runs hwkd's own search (`hwkd.api.search`: embedded data, the default space, teacher and rpi4
cost model) once per sampler and seed: `gp` (what hwkd's default, `auto`, runs without a budget:
8 opening students spread over the cost range, under a budget over those within it, then
Optuna's GPSampler), `tpe` (the same opening, then multivariate TPE; `auto` under a budget),
`nsga2` (the same opening, then NSGA-II) and `random` (Optuna's RandomSampler from the first
trial). Prints, in one run on this machine, the
hypervolume of each front after T trials (mean, median, spread, each seed) and a one-sided
Mann-Whitney U test of each sampler against random (as Optuna's own sampler benchmarks do), and
plots the mean hypervolume against the trials run.

    python benchmarks/search_efficiency.py [--trials 16] [--seeds 10] [--steps 40] [--plot FILE.png]

The trial budget is cheaper than the default search's (`--steps` brief distillation steps instead
of 200, said in the output), the same for every sampler; T trials are T students estimated, as
`--trials` counts them (a proposal that costs nothing uses no trial); the brief distillation's own seed is
fixed, so a student scores the same in every run and only the samplers' choices differ.
Hypervolume of the front of what the search maximizes, its score (`--synflow-points`, the
search's default; 0: validation accuracy alone), against latency_ms: against the reference point
(chance accuracy, the largest latency any run saw) as a fraction of the box from that point to
(100 %, 0 ms); for a score with SynFlow, whose scale has no natural bounds, the box spans the
lowest to the highest score any run saw. About 9 minutes per sampler on 2 cores at the defaults; run it while nothing else runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from hwkd.distillation.config import BriefConfig
from hwkd.reports import score_name

SAMPLERS = ("gp", "tpe", "nsga2", "random")


def hypervolume(points: list[tuple[float, float]], chance: float, max_latency_ms: float, top: float = 1.0) -> float:
    """Area dominated by (score up, latency down) points inside the reference box from (chance,
    max_latency_ms) to (top, 0), as a fraction of it."""
    area, best = 0.0, chance
    # sweep from the fastest student up: each adds the strip its accuracy gains over the faster ones
    for latency, accuracy in sorted((lat, acc) for acc, lat in points if lat <= max_latency_ms):
        if accuracy > best:
            area += (accuracy - best) * (max_latency_ms - latency)
            best = accuracy
    return area / ((top - chance) * max_latency_ms)


def run_search(sampler: str, seed: int, trials: int, steps: int, synflow_points: float, folder: Path,
               max_latency_ms: float | None = None) -> list[tuple[float, float] | None]:
    """(score, latency_ms) of each trial that `--trials` counts, in order; None for one not trained."""
    from optuna.trial import TrialState

    from hwkd.api import search
    from hwkd.records import TrialOutcome
    from hwkd.reports import load_study
    from hwkd.run_folder import RunFolder
    from hwkd.searcher import Budgets, SearchConfig

    search(SearchConfig(device="rpi4", run_dir=str(folder), trials=trials, sampler=sampler, seed=seed,
                        brief=BriefConfig(steps=steps, seed=0, synflow_points=synflow_points),
                        budgets=Budgets(max_latency_ms=max_latency_ms)),
           progress=False)
    outcomes: list[tuple[float, float] | None] = []
    for t in sorted(load_study(RunFolder(folder)).get_trials(deepcopy=False), key=lambda t: t.number):
        if TrialOutcome.from_trial(t).cost_nothing:
            continue  # a repeated or invalid proposal: it used none of the trials (hwkd.searcher)
        if t.state == TrialState.COMPLETE and t.values is not None:
            outcomes.append((float(t.values[0]), float(t.values[1])))
        elif t.state.is_finished():
            outcomes.append(None)
    return outcomes[:trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per search (default 16, the default search's)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40, help="brief distillation steps per trial (default 40)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--synflow-points", type=float, default=BriefConfig.synflow_points,
                        help=f"the searches' score (default {BriefConfig.synflow_points:g}, the search's; "
                        "0: brief accuracy alone)")
    parser.add_argument("--max-latency-ms", type=float, help="a latency budget for every search (students over it "
                        "are not trained); the hypervolume's reference latency is then the budget")
    parser.add_argument("--plot", default="search_efficiency.png", help="where the plot goes ('' for none)")
    args = parser.parse_args()
    os.environ.setdefault("HWKD_THREADS", "2")  # a fixed thread count: the same student scores the same
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    chance = 0.1  # ten classes
    runs: dict[str, list[list[tuple[float, float] | None]]] = {s: [] for s in samplers}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for sampler in samplers:  # interleaved: a drift in the machine's speed touches every sampler alike
                runs[sampler].append(run_search(sampler, seed, args.trials, args.steps, args.synflow_points,
                                                Path(tmp) / f"{sampler}-{seed}", args.max_latency_ms))
                print(f"  {sampler} seed {seed}: {sum(o is not None for o in runs[sampler][-1])} trained students, "
                      f"{time.monotonic() - started:.0f} s", flush=True)
    max_latency = args.max_latency_ms or max(o[1] for trials in runs.values() for run in trials for o in run
                                             if o is not None)

    scores = [o[0] for trials in runs.values() for run in trials for o in run if o is not None]
    low, top = (chance, 1.0) if not args.synflow_points else (min(scores), max(scores))

    def curve(run: list[tuple[float, float] | None]) -> list[float]:
        return [hypervolume([o for o in run[: t + 1] if o is not None], low, max_latency, top)
                for t in range(len(run))]

    final = {s: [curve(run)[-1] for run in runs[s]] for s in samplers}
    print(f"\nhypervolume after {args.trials} trials, {args.seeds} seeds; brief distillation {args.steps} steps per "
          f"trial (the default search: 200); score: {score_name(args.synflow_points)}; reference: "
          f"{100 * low:.2f} to {100 * top:.2f} (score), {max_latency:.3f} ms "
          f"({'the budget' if args.max_latency_ms else 'the slowest student seen'}); "
          f"{time.monotonic() - started:.0f} s in all")
    print(f"{'sampler':<8} {'mean':>7} {'median':>7} {'stdev':>7} {'p > random':>11}  per seed")
    from scipy.stats import mannwhitneyu

    for s in samplers:
        values = final[s]
        p = (mannwhitneyu(values, final["random"], alternative="greater").pvalue
             if s != "random" and "random" in final else float("nan"))
        print(f"{s:<8} {statistics.mean(values):>7.4f} {statistics.median(values):>7.4f} "
              f"{statistics.stdev(values) if len(values) > 1 else 0.0:>7.4f} {p:>11.4f}  "
              + " ".join(f"{v:.4f}" for v in values))
    print(f"goal: the default sampler (auto: {'tpe under a budget' if args.max_latency_ms else 'gp without a budget'}) "
          "significantly above random (p < 0.05) at the default trial count")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for s in samplers:
            curves = [curve(run) for run in runs[s]]
            mean = [statistics.mean(c[t] for c in curves if t < len(c)) for t in range(args.trials)]
            ax.plot(range(1, args.trials + 1), mean, label=f"{s} (mean of {len(curves)} seeds)")
        ax.set_xlabel("trials")
        ax.set_ylabel("hypervolume (fraction of the reference box)")
        ax.set_title(f"nb201-widths on rpi4, embedded data, brief {args.steps} steps\n"
                     f"score: {score_name(args.synflow_points)}", fontsize=10)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
