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
    for add in (_add_devices, _add_spaces, _add_estimate):
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
