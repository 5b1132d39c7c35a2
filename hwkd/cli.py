"""The `hwkd` command line: argparse subcommands, each a small function that calls down.

Heavy libraries (torch, TVM, optuna) are imported inside the subcommands so `hwkd --help` stays
fast. Errors raised on purpose print as one line and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from hwkd import __version__
from hwkd.errors import HwkdError

EXIT_USAGE = 2
Handler = Callable[[argparse.Namespace], int]


def _cmd_devices(args: argparse.Namespace) -> int:
    from hwkd.profiles import builtin_profiles, load_profile

    rows = [load_profile(name).summary() for name in builtin_profiles()]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    print(f"{'device':<8} {'cores':>5} {'GHz':>5} {'GFLOP/s':>8} {'GB/s':>6}  {'measures':<10} description")
    for row in rows:
        print(
            f"{row['name']:<8} {row['cores']:>5} {row['clock_ghz']:>5.2f} {row['peak_gflops']:>8.1f} "
            f"{row['dram_bandwidth_gb_s']:>6.1f}  {row['measures']:<10} {row['description']}"
        )
    print("\nAdd a board with --device path/to/board.yaml (copy one of the files under "
          f"{rows[0]['path'].rsplit('/', 1)[0] if rows else 'device_profiles'}/).")
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:
    from hwkd.spaces import describe_spaces

    for row in describe_spaces():
        print(json.dumps(row, sort_keys=True) if args.json else f"{row['name']:<8} {row['description']}")
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    from hwkd.estimate_cli import run_estimate

    return run_estimate(args)


def _cmd_search(args: argparse.Namespace) -> int:
    from hwkd.distill.config import BriefConfig
    from hwkd.search import Budgets, Search, SearchConfig

    defaults = BriefConfig()
    config = SearchConfig(
        device=args.device, space=args.space, data=args.data, data_dir=args.data_dir, teacher=args.teacher,
        run_dir=args.run_dir, storage=args.storage, trials=args.trials, timeout_s=args.timeout,
        sampler=args.sampler, seed=args.seed,
        budgets=Budgets(args.max_latency_ms, args.max_memory_kb, args.max_params),
        brief=BriefConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr if args.lr is not None else defaults.lr,
            temperature=args.temperature, alpha=args.alpha, seed=args.seed,
        ),
        train_device=args.train_device, latency_source=args.latency_source, threads=args.threads,
    )
    _check_brief(config.brief)
    summary = Search(config).run()
    print(summary.front_table)
    print(
        f"\n{summary.new_trials} new trials in {summary.seconds:.0f} s: {summary.completed} trained, "
        f"{summary.infeasible} infeasible, {summary.failed} failed. Run folder: {summary.run_dir}"
    )
    if summary.interrupted:
        print("stopped by Ctrl-C; run the same command to continue the search", file=sys.stderr)
        return 130
    return 0


def _check_brief(brief: object) -> None:
    from hwkd.distill.config import BriefConfig

    assert isinstance(brief, BriefConfig)
    problems = []
    if brief.steps < 1:
        problems.append(f"--steps {brief.steps}: must be at least 1")
    if brief.batch_size < 1:
        problems.append(f"--batch-size {brief.batch_size}: must be at least 1")
    if not 0 <= brief.alpha <= 1:
        problems.append(f"--alpha {brief.alpha}: must be in [0, 1]")
    if brief.temperature <= 0:
        problems.append(f"--temperature {brief.temperature}: must be > 0")
    if problems:
        raise HwkdError("; ".join(problems))


def _cmd_report(args: argparse.Namespace) -> int:
    from hwkd.report import front_table, write_reports
    from hwkd.run_folder import open_run

    folder = open_run(args.run)
    trials, front = write_reports(folder)
    states = trials.state.value_counts().to_dict()
    print(front_table(front))
    print(f"\n{len(trials)} trials ({', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items()))})")
    for name in ("trials.csv", "pareto.csv", "pareto.png", "pareto.html"):
        print(f"  {folder.file(name)}")
    return 0


def _add_search(sub: argparse._SubParsersAction) -> None:
    from hwkd.distill.config import BriefConfig

    brief = BriefConfig()
    p = sub.add_parser(
        "search",
        help="search students for a device (the main job)",
        description="Propose students with Optuna, compile each with TVM for the device, distill it briefly "
        "from the teacher, and rank them on validation accuracy against latency. Running the same command "
        "again continues the same study.",
    )
    p.add_argument("--device", default="rpi4", help="device name or path/to/board.yaml (default rpi4)")
    p.add_argument("--space", default="nb201-small", help="nb201, nb201-small, fbnet, ... or path/to/space.yaml "
                   "(default nb201-small)")
    p.add_argument("--data", default="embedded", help="embedded (default), fashion-mnist, cifar10, cifar100, folder")
    p.add_argument("--data-dir", help="the dataset's folder (fashion-mnist, cifar10, cifar100, folder)")
    p.add_argument("--teacher", help="teacher file: .pt2 (torch.export), .pt (TorchScript) or .onnx; "
                   "default: train hwkd's default teacher once and cache it")
    p.add_argument("--run-dir", help="run folder (default hwkd-runs/SPACE-DEVICE-DATA)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite in the run folder)")
    p.add_argument("--trials", type=int, help="trials to add in this invocation (default 16, or unlimited "
                   "with --timeout)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--sampler", choices=["tpe", "nsga2"], default="tpe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-latency-ms", type=float, help="latency budget; students over it are not trained")
    p.add_argument("--max-memory-kb", type=float, help="peak activation memory budget, KiB")
    p.add_argument("--max-params", type=int, help="parameter budget")
    p.add_argument("--steps", type=int, default=brief.steps, help=f"brief distillation steps (default {brief.steps})")
    p.add_argument("--batch-size", type=int, default=brief.batch_size)
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {brief.lr})")
    p.add_argument("--temperature", type=float, default=brief.temperature, help="distillation temperature T")
    p.add_argument("--alpha", type=float, default=brief.alpha, help="weight of the distillation term (0..1)")
    p.add_argument("--train-device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--latency-source", choices=["auto", "model", "measured"], default="auto")
    p.add_argument("--threads", type=int, help="threads on the device (default: the profile's)")
    p.set_defaults(handler=_cmd_search)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a run's tables and plots and print its Pareto front")
    p.add_argument("run", metavar="RUN", help="a run folder written by hwkd search")
    p.set_defaults(handler=_cmd_report)


def _add_devices(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list the built-in device profiles")
    p.add_argument("--json", action="store_true", help="one JSON object per device")
    p.set_defaults(handler=_cmd_devices)


def _add_spaces(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spaces", help="list the built-in search spaces")
    p.add_argument("--json", action="store_true", help="one JSON object per space")
    p.set_defaults(handler=_cmd_spaces)


def _add_estimate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "estimate",
        help="latency, memory, MACs and parameters of students on a device",
        description="Compile students with TVM for a device profile and report latency_ms "
        "(cost model or measured), peak_memory_bytes, params_bytes and macs.",
    )
    p.add_argument("--device", required=True, help="built-in device name or path/to/board.yaml")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", help="one architecture id of --space")
    what.add_argument("--arch-file", help="a file with one architecture id per line")
    what.add_argument("--onnx", nargs="+", metavar="FILE", help="ONNX model files")
    p.add_argument("--space", help="search space name or path/to/space.yaml (with --arch/--arch-file)")
    p.add_argument("--input-shape", default=None, help="N,C,H,W (default: the space's, e.g. 1,3,32,32)")
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs (default 10)")
    p.add_argument("--threads", type=int, default=None, help="threads on the device (default: profile)")
    p.add_argument(
        "--latency-source",
        choices=["auto", "model", "measured"],
        default="auto",
        help="auto measures where the profile can (host, rpc) and models elsewhere",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per result, in input order")
    p.set_defaults(handler=_cmd_estimate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwkd",
        description="Find a small, fast student network for an edge device and distill a teacher into it.",
    )
    parser.add_argument("--version", action="version", version=f"hwkd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_search, _add_report, _add_estimate, _add_devices, _add_spaces):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(message)s" if not args.debug else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except HwkdError as exc:
        if args.debug:
            raise
        print(f"hwkd {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"hwkd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
