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
from pathlib import Path

from hwkd import __version__
from hwkd.errors import HwkdError

EXIT_USAGE = 2
Handler = Callable[[argparse.Namespace], int]


def _cmd_devices(args: argparse.Namespace) -> int:
    from hwkd.latency.calibration import stale_calibration
    from hwkd.profiles import builtin_profiles, load_profile

    rows = []
    for name in [*builtin_profiles(), *args.files]:
        profile = load_profile(name)
        row = profile.summary()
        stale = stale_calibration(profile)
        if stale:  # a calibration fitted to another version of the model no longer knows its error
            row.update(expected_error_pct=None, stale_calibration=stale)
        rows.append(row)
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    width = max(8, *(len(row["name"]) for row in rows))
    print(f"{'device':<{width}} {'cores':>5} {'GHz':>5} {'GFLOP/s':>8} {'GB/s':>6}  {'measures':<10} "
          f"{'model error':<14} description")
    for row in rows:
        error = ("stale (below)" if row.get("stale_calibration") else
                 f"{row['expected_error_pct']:.1f} % median" if row["calibrated"] else "uncalibrated")
        print(
            f"{row['name']:<{width}} {row['cores']:>5} {row['clock_ghz']:>5.2f} {row['peak_gflops']:>8.1f} "
            f"{row['dram_bandwidth_gb_s']:>6.1f}  {row['measures']:<10} {error:<14} {row['description']}"
        )
    for row in rows:
        if row.get("stale_calibration"):
            print(row["stale_calibration"])
        elif row["calibration"] and row["calibration"].get("caveat"):
            print(f"{row['name']}: {row['calibration']['caveat']}")
    print("\nAdd a board with --device path/to/board.yaml (copy one of the files under "
          f"{rows[0]['path'].rsplit('/', 1)[0] if rows else 'device_profiles'}/).")
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:
    from hwkd.spaces import describe_spaces

    rows = describe_spaces()
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    name_w = max(len("space"), *(len(row["name"]) for row in rows))
    size_w = max(len("students"), *(len(f"{row['size']:,}") for row in rows))
    print(f"{'space':<{name_w}}  {'students':>{size_w}}  description")
    for row in rows:
        print(f"{row['name']:<{name_w}}  {row['size']:>{size_w},}  {row['description']}")
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    from hwkd.estimate_cli import run_estimate

    return run_estimate(args)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from hwkd.api import calibrate
    from hwkd.calibrator import DEFAULT_SPACE, CalibrateConfig
    from hwkd.estimate_cli import parse_input_shape

    outcome = calibrate(CalibrateConfig(
        device=args.device, out=args.out, measurements=args.measurements, runtime=args.runtime, measure=args.measure,
        space=args.space or DEFAULT_SPACE, input_shape=parse_input_shape(args.input_shape),
        num_classes=args.num_classes, threads=args.threads, seed=args.seed, force=args.force,
        cost_model=args.cost_model,
    ), progress=sys.stderr.isatty())
    fit, info = outcome.fit, outcome.profile.calibration
    threads = info.threads if info else "?"
    scales = ", ".join(f"{k} x{v:.2f}" for k, v in fit.multipliers.items())
    print(f"calibrated {info.base_profile if info else args.device} from {len(outcome.measured)} measurements "
          f"({outcome.source}; {outcome.runtime}, {threads} threads)")
    print(f"  leave-one-out median error {fit.loo_median_abs_error_pct:.1f} % "
          f"(uncalibrated {fit.uncalibrated_median_abs_error_pct:.1f} %), Spearman {fit.loo_spearman:.3f}")
    print(f"  multipliers of the datasheet model: {scales}")
    if fit.caveat:
        print(f"  warning: {fit.caveat}")
    print(f"wrote {outcome.path} (use it with --device {outcome.path})")
    return 0


def _synflow_points(args: argparse.Namespace, default: float) -> float:
    """--synflow-points, else the run's own when continuing one (a run started before the score
    existed ranked by accuracy alone), else the default."""
    from hwkd.errors import RunError
    from hwkd.run_folder import RunFolder
    from hwkd.searcher import SearchConfig

    if args.synflow_points is not None:
        return float(args.synflow_points)
    folder = RunFolder(SearchConfig(device=args.device, space=args.space, data=args.data,
                                    run_dir=args.run_dir).resolved_run_dir())
    try:
        return folder.read().fixed.brief.synflow_points if folder.exists() else default
    except RunError:  # the search itself reports a broken run folder
        return default


def _cmd_search(args: argparse.Namespace) -> int:
    from hwkd.distillation.config import BriefConfig
    from hwkd.searcher import Budgets, SearchConfig

    defaults = BriefConfig()
    config = SearchConfig(
        device=args.device, space=args.space, data=args.data, data_dir=args.data_dir, teacher=args.teacher,
        run_dir=args.run_dir, storage=args.storage, trials=args.trials, timeout_s=args.timeout,
        sampler=args.sampler, seed=args.seed,
        budgets=Budgets(args.max_latency_ms, args.max_memory_kb, args.max_params),
        brief=BriefConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr if args.lr is not None else defaults.lr,
            temperature=args.temperature, alpha=args.alpha, loss=args.loss, seed=args.seed,
            synflow_points=_synflow_points(args, defaults.synflow_points),
        ),
        train_device=args.train_device, latency_source=args.latency_source, threads=args.threads,
        workers=args.workers, heartbeat_s=args.heartbeat_s,
    )
    from hwkd.api import search
    from hwkd.reports import front_table

    summary = search(config, progress=None)
    print(summary.budget_hint or front_table(summary.front, config.brief.synflow_points))
    print(
        f"\n{summary.new_trials} new trials in {summary.seconds:.0f} s: {summary.completed} trained, "
        f"{summary.infeasible} infeasible, {summary.failed} failed"
        + (f" (and {summary.free_trials} proposals that cost nothing: an earlier student's result reused, or "
           "not a valid student)" if summary.free_trials else "")
        + f". Run folder: {summary.run_dir}"
    )
    if summary.interrupted:
        print("stopped by Ctrl-C; run the same command to continue the search", file=sys.stderr)
        return 130
    if summary.budget_hint:
        print(f"hwkd search: error: {summary.budget_hint}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hwkd.api import report as build
    from hwkd.reports import MIN_FIDELITY_STUDENTS, front_table
    from hwkd.run_folder import RunFolder

    report = build(args.run)  # checks the folder
    folder = RunFolder(Path(args.run))
    states = report.state_counts()
    print(front_table(report.front, report.synflow_points))
    print(f"\n{len(report.trials)} trials ({', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items()))})")
    fidelity = report.fidelity
    distilled = len(report.full_test_accuracy)
    if fidelity is not None:
        print(fidelity.line())
    elif distilled:
        print(f"{distilled} fully distilled student(s); proxy fidelity is shown from {MIN_FIDELITY_STUDENTS}")
    if report.final:
        print("\nafter the search (test accuracy, latency on the run's device; int8 at its fp32 latency):")
        for f in report.final:
            print(f"  {f.name:<16} {f.kind:<9} {100 * f.test_accuracy:6.2f}%  {f.latency_ms:8.3f} ms"
                  + (f"  (from {f.from_latency_ms:.3f} ms)" if f.from_latency_ms else ""))
    names = (["trials.csv", "pareto.csv", "pareto.png", "pareto.html"] + (["final.csv"] if report.final else [])
             + (["fidelity.png"] if fidelity else []))
    for name in names:
        print(f"  {folder.file(name)}")
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from hwkd.api import distill
    from hwkd.distillation.config import FullConfig

    d = FullConfig()
    config = FullConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=d.warmup_epochs,
        weight_decay=d.weight_decay, temperature=args.temperature, alpha=args.alpha, loss=args.loss,
        loss_warmup_epochs=args.loss_warmup_epochs, transfer=args.transfer,
        transfer_weight=args.transfer_weight, teacher_layers=tuple(_names(args.teacher_layers)),
        student_layers=tuple(_names(args.student_layers)), augment=not args.no_augment, seed=args.seed,
    )
    outcome = distill(args.run, args.trial, config, args.train_device, args.restart, progress=None)
    r = outcome.result
    print(f"trial {outcome.trial.number}: test accuracy {100 * r.test_accuracy:.2f}% after {r.epochs} epochs "
          f"(teacher {100 * outcome.teacher_test_accuracy:.2f}%, brief validation accuracy "
          f"{100 * outcome.trial.val_accuracy:.2f}%), {r.seconds:.0f} s")
    note = outcome.teacher_note()
    if note:
        print(f"  {note}")
    print(f"  {outcome.folder / 'student.pt'}\n  {outcome.folder / 'result.json'}")
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hwkd.api import compress
    from hwkd.compress_trial import CompressConfig
    from hwkd.distillation.config import FINETUNE

    finetune = replace(FINETUNE, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       temperature=args.temperature, alpha=args.alpha, loss=args.loss, seed=args.seed)
    outcome = compress(args.run, args.trial, CompressConfig(
        max_latency_ms=args.max_latency_ms, ratio=args.ratio, name=args.name, finetune=finetune,
        train_device=args.train_device, restart=args.restart), progress=None)
    r = outcome.record
    epochs = f"{r.finetune_epochs} epoch{'s' if r.finetune_epochs != 1 else ''}"
    tuned = f"after {epochs} of {r.finetune.loss.upper()} fine-tuning" if r.finetune_epochs else "without fine-tuning"
    print(f"trial {r.trial} pruned to {r.latency_ms:.3f} ms on {r.device} (from {r.unpruned_latency_ms:.3f} ms, "
          f"target {r.target_ms:.3f} ms): {r.channels_removed} of {r.channels_before} channels removed, "
          f"{r.params_bytes / 4e3:.1f}k parameters (from {r.unpruned_params_bytes / 4e3:.1f}k)")
    print(f"test accuracy {100 * r.test_accuracy:.2f}% {tuned} (distilled student "
          f"{100 * r.unpruned_test_accuracy:.2f}%, right after pruning {100 * r.pruned_test_accuracy:.2f}%)")
    print(f"  {outcome.folder / 'student.pt'}\n  {outcome.folder / 'result.json'}")
    print(f"ship it with: hwkd export {args.run} --trial {r.trial} --compressed {r.name}")
    return 0


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _cmd_export(args: argparse.Namespace) -> int:
    from hwkd.api import export
    from hwkd.estimate_cli import tuning_plan

    outcome = export(args.run, args.trial, args.format.split(","), args.out, args.force, args.compressed,
                     tuning=tuning_plan(args))
    m = outcome.manifest
    acc = ", ".join(f"{k} {100 * v:.2f}%" for k, v in m["test_accuracy"].items())
    print(f"trial {m['trial']} exported for {m['device']['name']}: test accuracy {acc}")
    for name in m["sha256"]:
        print(f"  {outcome.out_dir / name}")
    print(f"  {outcome.out_dir / 'manifest.json'}")
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _add_distill(sub: argparse._SubParsersAction) -> None:
    from hwkd.distillation.config import FullConfig

    d = FullConfig()
    p = sub.add_parser("distill", help="fully distill a searched student from the run's teacher",
                       description="Full distillation of one trial's student: KD on standardized logits, the "
                       "distillation term ramped up over the first epochs (or --loss, --loss-warmup-epochs), "
                       "optionally feature or attention transfer, augmentation, warm-up + cosine schedule; "
                       "checkpoints every epoch and resumes when run again.")
    p.add_argument("run", metavar="RUN", help="a run folder written by hwkd search")
    p.add_argument("--trial", type=int, required=True, help="the trial number (hwkd report lists them)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help=f"of --loss kd, dkd and dist (default {d.temperature:g}; ls sets its own)")
    p.add_argument("--alpha", type=float, default=d.alpha, help=f"weight of the distillation term (default {d.alpha})")
    _add_loss(p, d.loss)
    p.add_argument("--loss-warmup-epochs", type=float, default=d.loss_warmup_epochs, metavar="EPOCHS",
                   help="ramp the distillation term's weight up from 0 over these first epochs, as DKD's authors do "
                   f"(default {d.loss_warmup_epochs:g}, at most half the run; 0: full weight from the first step)")
    p.add_argument("--transfer", default="none", help="none (default), feature (FitNets hints with adapters) "
                   "or attention (attention transfer)")
    p.add_argument("--transfer-weight", type=float, default=d.transfer_weight)
    p.add_argument("--teacher-layers", help="comma-separated teacher layers (fx node names); default: pair the "
                   "deepest stages automatically")
    p.add_argument("--student-layers", help="comma-separated student layers, as many as --teacher-layers")
    p.add_argument("--no-augment", action="store_true", help="no random shifts and flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    _add_config(p)
    p.set_defaults(handler=_cmd_distill)


def _add_compress(sub: argparse._SubParsersAction) -> None:
    from hwkd.distillation.config import FINETUNE

    d = FINETUNE
    p = sub.add_parser("compress", help="prune a distilled student to a latency target and fine-tune it with KD",
                       description="Structured channel pruning of a fully distilled student (whole output channels, "
                       "residual and grouped convolutions kept consistent), re-costed on the run's device after "
                       "each step until it meets the target, then fine-tuned with knowledge distillation from the "
                       "run's teacher. The result goes to RUN/compressed/trial-N-NAME/.")
    p.add_argument("run", metavar="RUN", help="a run folder written by hwkd search")
    p.add_argument("--trial", type=int, required=True, help="a fully distilled trial (hwkd distill)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--max-latency-ms", type=float, help="the latency to reach on the run's device")
    target.add_argument("--ratio", type=float, help="or: this fraction of the student's latency (e.g. 0.7)")
    p.add_argument("--name", help="name of the result (default: the target, e.g. 0.42ms)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"KD fine-tuning epochs, 0 for none (default {d.epochs})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak fine-tuning learning rate (default {d.lr})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--alpha", type=float, default=d.alpha, help=f"weight of the KD term (default {d.alpha})")
    _add_loss(p, d.loss)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--restart", action="store_true", help="ignore an existing fine-tuning checkpoint")
    _add_config(p)
    p.set_defaults(handler=_cmd_compress)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="deployable files of a distilled student for the run's device")
    p.add_argument("run", metavar="RUN", help="a run folder written by hwkd search")
    p.add_argument("--trial", type=int, required=True)
    p.add_argument("--format", default="onnx,onnx-int8,tvm", help="any of onnx, onnx-int8, tvm (default: all)")
    p.add_argument("--out", help="output folder (default RUN/export/trial-N, or trial-N-NAME with --compressed)")
    p.add_argument("--compressed", metavar="NAME", help="the pruned student of this name (hwkd compress) instead "
                   "of the distilled one")
    p.add_argument("--force", action="store_true", help="replace the files of an existing output folder")
    _add_tune(p)
    _add_config(p)
    p.set_defaults(handler=_cmd_export)


def _add_search(sub: argparse._SubParsersAction) -> None:
    from hwkd.distillation.config import BriefConfig

    brief = BriefConfig()
    p = sub.add_parser(
        "search",
        help="search students for a device (the main job)",
        description="Propose students with Optuna, compile each with TVM for the device, distill it briefly "
        "from the teacher, and rank them on validation accuracy against latency. Running the same command "
        "again continues the same study.",
    )
    p.add_argument("--device", default="rpi4", help="device name or path/to/board.yaml (default rpi4)")
    p.add_argument("--space", default="nb201-widths", help="nb201-widths, nb201-small, nb201, fbnet, ... or "
                   "path/to/space.yaml (default nb201-widths)")
    p.add_argument("--data", default="embedded", help="embedded (default), fashion-mnist, cifar10, cifar100, folder")
    p.add_argument("--data-dir", help="the dataset's folder (fashion-mnist, cifar10, cifar100, folder)")
    p.add_argument("--teacher", help="teacher file: .pt2 (torch.export), .pt (TorchScript) or .onnx; "
                   "default: train hwkd's default teacher once and cache it")
    p.add_argument("--run-dir", help="run folder (default hwkd-runs/SPACE-DEVICE-DATA)")
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db (default: $HWKD_STORAGE, "
                   "else RUN/study.db); its password is never written to the run folder")
    p.add_argument("--trials", type=int, help="trials to add in this invocation (default 16, or unlimited "
                   "with --timeout)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--sampler", choices=["auto", "gp", "tpe", "nsga2", "random"], default="auto",
                   help="after students spread over the cost range: gp, tpe or nsga2; auto (default): gp, or tpe "
                   "when a budget is set; random: a baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-latency-ms", type=float, help="latency budget; students over it are not trained")
    p.add_argument("--max-memory-kb", type=float, help="peak activation memory budget, KiB")
    p.add_argument("--max-params", type=int, help="parameter budget")
    p.add_argument("--steps", type=int, default=brief.steps, help=f"brief distillation steps (default {brief.steps})")
    p.add_argument("--batch-size", type=int, default=brief.batch_size)
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {brief.lr})")
    p.add_argument("--temperature", type=float, default=brief.temperature, help="distillation temperature T")
    p.add_argument("--alpha", type=float, default=brief.alpha, help="weight of the distillation term (0..1)")
    _add_loss(p, brief.loss)
    p.add_argument("--synflow-points", type=float, default=None,
                   help="the search ranks students by brief accuracy plus this many points per decade of their "
                   f"untrained SynFlow score; 0: accuracy alone (default {brief.synflow_points:g}, or a continued "
                   "run's own)")
    p.add_argument("--train-device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--latency-source", choices=["auto", "model", "measured"], default="auto")
    p.add_argument("--threads", type=int, help="threads on the device (default: the profile's)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine, each on its share of "
                   "the cores (default 1); more machines join with the same command and --storage")
    p.add_argument("--heartbeat-s", type=int, default=60, help="seconds between a worker's heartbeats; a trial "
                   "silent for twice as long (its worker died) is failed and run again once (default 60)")
    _add_config(p)
    p.set_defaults(handler=_cmd_search)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a run's tables and plots and print its Pareto front")
    p.add_argument("run", metavar="RUN", help="a run folder written by hwkd search")
    p.set_defaults(handler=_cmd_report)


def _add_devices(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list the built-in device profiles (and profile files given)")
    p.add_argument("files", nargs="*", metavar="FILE", help="profile files to list too, e.g. a calibrated one")
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
    _add_tune(p)
    _add_config(p)
    p.set_defaults(handler=_cmd_estimate)


def _add_tune(p: argparse.ArgumentParser) -> None:
    from hwkd.latency.tuning import DEFAULT_VARIANTS

    p.add_argument("--tune", action="store_true", help="measure variants of each kernel's schedule where the "
                   "student runs (here for host, else over the profile's rpc section) and compile the fastest; "
                   "timings are kept in the cache, so a kernel is tuned once")
    p.add_argument("--tune-trials", type=int, default=None, metavar="N", help="schedules measured per kernel, "
                   f"hwkd's default included (default {DEFAULT_VARIANTS}, all of them)")


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    from hwkd.profiles import COST_MODELS

    p = sub.add_parser(
        "calibrate",
        help="fit a device profile to latencies measured on your board",
        description="Fit the cost model's constants (per kernel class and per call) to measurements of your "
        "board, from a CSV taken with any runtime or measured by hwkd over TVM RPC, and write a profile that "
        "every command takes with --device FILE. It records its leave-one-out error.",
    )
    p.add_argument("--device", required=True, help="the profile to start from: built-in name or path/to/board.yaml")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--measurements", metavar="CSV", help="a CSV with latency_ms and arch (ids of --space) or "
                      "onnx (ONNX paths, relative to the CSV)")
    what.add_argument("--measure", type=int, metavar="N", help="measure N students of --space spread over its "
                      "latency range (here for host, else over the profile's rpc section)")
    p.add_argument("--out", required=True, help="the calibrated profile to write (.yaml)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--space", help=f"search space of the arch ids or of --measure (default {'nb201-widths'})")
    p.add_argument("--input-shape", default=None, help="N,C,H,W of the measured students (default: the space's)")
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs (default 10)")
    p.add_argument("--threads", type=int, default=None, help="threads the measurements used (default: profile)")
    p.add_argument("--runtime", help="what ran the measured students (needed with --measurements): tvm (hwkd's "
                   "library; default with --measure), onnxruntime, tflite, ncnn, ... A profile calibrated to "
                   "another runtime than tvm is never measured with TVM")
    p.add_argument("--cost-model", choices=COST_MODELS, default=None, help="the model fitted: "
                   "schedule (hwkd's register-tiled kernels, loop by loop; the built-in profiles'), roofline "
                   "(each kernel's work against the peaks) or onnxruntime (the nodes ONNX Runtime runs, each its "
                   "roofline plus a fixed cost; needs the profile's cost_model.node_overhead_us) (default: "
                   "onnxruntime for --runtime onnxruntime where the profile has that cost, else the profile's)")
    p.add_argument("--seed", type=int, default=0, help="which students --measure picks")
    _add_config(p)
    p.set_defaults(handler=_cmd_calibrate)


def _add_loss(p: argparse.ArgumentParser, default: str) -> None:
    from hwkd.distillation.config import LOSS_NAMES

    p.add_argument("--loss", default=default, help=f"distillation loss: {', '.join(LOSS_NAMES)} (default {default}): "
                   "Hinton KD, decoupled KD (Zhao et al. 2022), DIST (Huang et al. 2022) or KD on "
                   "standardized logits (Sun et al. 2024; base temperature 2, --temperature does not apply)")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.yaml", help="settings from a YAML file whose keys are this command's "
                   "long flags (e.g. max-latency-ms: 15); flags on the command line win")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwkd",
        description="Find a small, fast student network for an edge device and distill a teacher into it.",
    )
    parser.add_argument("--version", action="version", version=f"hwkd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_search, _add_report, _add_distill, _add_compress, _add_export, _add_estimate, _add_calibrate,
                _add_devices, _add_spaces):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from hwkd.config_file import expand_config

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = expand_config(argv, _subcommands(parser))
    except HwkdError as exc:
        command = next((a for a in argv if a in _subcommands(parser)), "")
        print(f"hwkd {command}: error: {exc}".replace("hwkd : ", "hwkd: "), file=sys.stderr)
        return EXIT_USAGE
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
