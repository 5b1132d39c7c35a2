"""Tune a student's kernels by measuring them where they will run.

Every fused kernel of the student's `main` gets the variants of hwkd's schedule
(`hwkd.latency.schedule.schedule_variants`: the default, the next-ranked register tiles, the
other strategy, shorter vectors). MetaSchedule's builder compiles them in parallel, its runner
times each one alone (here for a profile measured locally, on the board over the profile's TVM
RPC section otherwise), and every timing goes into MetaSchedule's JSON database in the cache
dir, one per target, thread count and board: a kernel that was tuned before, in this student or
another, is looked up, not measured again.

A kernel timed alone is not the kernel in the library: on this machine the per-kernel winners made
whole fbnet libraries up to 11 % *slower* (`benchmarks/runtimes.py`), as kernels alone run with
their inputs in cache. So the candidate libraries (hwkd's default schedules, every kernel's
fastest, and only the kernels at least `SIGNIFICANT` faster alone) are compiled and timed whole,
in rounds of all of them back to back, and the one fastest relative to the default within a round
(the median over rounds) is shipped; tuning never ships a library slower than the default one as
measured.

The layout is tuned the same way: the student is also lowered into the channel-blocked layout
(`hwkd.latency.blocked_layout`, NCHW16c on AVX-512), its kernels get their variants, and its
libraries join the candidates. It is not hwkd's default because the cost model does not follow it
yet (benchmarks/calibrate.py --blocked), but a tuned library is chosen by measurement, not by the
model: on this 2-core AVX-512 machine the blocked library ran 0.61-1.04x the default one's time
in two runs of benchmarks/runtimes.py (`tvm-blocked`), fastest on the 3x3 and 224x224 students.

Why hwkd's variants and not MetaSchedule's generic search space: on this 2-core machine its first
16 candidates for one fbnet 1x1 convolution took 4.5 minutes (its builder imports
`tvm.s_tir.tensor_intrin`, 30 s per worker) and the next 16 another 70 s, against about 2 s per
kernel for all its variants here (fbnet k3_e6: 31 kernels, 128 schedules in 62 s); students have
20-50 kernels.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwkd.cache import cache_dir
from hwkd.errors import MeasureError, error_line
from hwkd.file_lock import file_lock
from hwkd.files import write_atomic
from hwkd.latency.lowered import LOWERING_VERSION, LoweredGraph
from hwkd.latency.measure import CompiledStudent, Measurement
from hwkd.latency.schedule import VARIANT_KNOBS, register_tile, schedule_variants
from hwkd.profiles import DeviceProfile

if TYPE_CHECKING:
    from hwkd.latency.relax_import import RelaxGraph

log = logging.getLogger(__name__)

DEFAULT_VARIANTS = 1 + len(VARIANT_KNOBS)


@dataclass(frozen=True)
class TuningPlan:
    variants: int = DEFAULT_VARIANTS  # at most this many schedules per kernel, the default included
    number: int = 10  # calls per timed run
    repeat: int = 5  # timed runs; the database keeps their times, the choice uses their mean
    min_repeat_ms: int = 20
    blocked: bool = True  # also tune the channel-blocked layout and ship it where it is faster whole


@dataclass(frozen=True)
class KernelTuning:
    kernel: str  # the fused kernel's name in this student
    chosen: str  # the fastest variant ("tiled", "tiled tile_rank=1", "anchored lanes=8", ...)
    default_us: float  # hwkd's default schedule, measured alone
    best_us: float  # the chosen variant, measured alone
    variants: int  # how many were measured, by this tuning and earlier ones
    measured_now: int  # how many of them this tuning measured (0: all read from the database)

    @property
    def from_database(self) -> bool:
        return self.measured_now == 0


@dataclass(frozen=True)
class TuningResult:
    where: str  # "local" or "rpc HOST:PORT"
    database: str  # the folder of MetaSchedule's JSON database
    kernels: tuple[KernelTuning, ...]
    schedules: dict[str, Any]  # kernel name -> its tuned PrimFunc, for the compiler: the shipped choice
    # which candidate library was fastest whole: "default", "all" or "significant" (the kernels'
    # schedules), each also in the blocked layout ("blocked", "blocked all", "blocked significant")
    library: str = "default"
    library_ms: dict[str, float] | None = None  # each candidate library, timed whole
    layout: str = "NCHW"  # the shipped library's activation layout ("NCHW16c": blocked by 16 channels)
    # the student lowered in that layout, whose kernels `schedules` names: what the compiler compiles
    lowered: LoweredGraph | None = field(default=None, compare=False, repr=False)
    measured_other_layouts: int = 0  # schedules measured now for the layout not shipped
    # the shipped library as compiled and timed for the choice (None when no candidate differed from
    # hwkd's default): an estimate or export uses them instead of compiling and timing it again
    compiled: CompiledStudent | None = field(default=None, compare=False, repr=False)
    measurement: Measurement | None = field(default=None, compare=False)

    @property
    def changed(self) -> int:
        return len(self.schedules)

    def to_json(self) -> dict[str, Any]:
        """What the manifest and `hwkd estimate` record of the tuning."""
        return {
            "where": self.where,
            "database": self.database,
            "library": self.library,
            "library_ms": self.library_ms,
            "layout": self.layout,
            "kernels_tuned": len(self.kernels),
            "kernels_faster_alone": sum(k.best_us < k.default_us for k in self.kernels),
            "kernels_changed": self.changed,
            "variants_measured_now": sum(k.measured_now for k in self.kernels) + self.measured_other_layouts,
            "kernel_sum_default_us": round(sum(k.default_us for k in self.kernels), 2),
            "kernel_sum_tuned_us": round(sum(k.best_us for k in self.kernels), 2),
            "kernels": [asdict(k) | {"from_database": k.from_database} for k in self.kernels],
        }


def database_dir(profile: DeviceProfile, where: str) -> Path:
    """One database per target, thread count, board and version of hwkd's schedule: a timing holds
    only there, and a variant's label names other code once the schedule changes."""
    key = json.dumps([profile.target, profile.runtime.threads, where, LOWERING_VERSION], sort_keys=True)
    return cache_dir() / "tuning" / hashlib.sha256(key.encode()).hexdigest()[:16]


def tune_student(graph: RelaxGraph, lowered: LoweredGraph, profile: DeviceProfile, plan: TuningPlan = TuningPlan(),
                 on_kernel: Callable[[int, int], None] | None = None) -> TuningResult:
    """Measure the variants of every kernel of `lowered`'s `main` (hwkd's default lowering of `graph`)
    that the database lacks, and with `plan.blocked` those of `graph` in the blocked layout, then time
    the candidate libraries whole and return the schedules of the fastest. `on_kernel(done, total)`
    reports the kernels' progress, one layout after the other."""
    from hwkd.latency.lowering import Lowerer  # imports torch, which `hwkd --help` must not

    layouts = {"NCHW": lowered}
    if plan.blocked:
        registers = register_tile(profile.cpu.simd_bits)
        blocked = Lowerer(registers, blocked=True).lower(graph)
        if blocked.structure_hash != lowered.structure_hash:  # a student with no convolution to block
            layouts[f"NCHW{registers.vector_floats}c"] = blocked
    tuned = {layout: tune_kernels(low, profile, plan, on_kernel) for layout, low in layouts.items()}
    return choose_library(tuned, layouts, graph.params, graph.input_shape, profile, plan)


SIGNIFICANT = 0.9  # a kernel alone at most this fraction of its default time: a "significant" change
# rounds of whole-library timings: every candidate back to back, the order reversed every other round
LIBRARY_ROUNDS = 5


def choose_library(tuned: dict[str, TuningResult], layouts: dict[str, LoweredGraph], params: list[np.ndarray],
                   input_shape: tuple[int, ...], profile: DeviceProfile, plan: TuningPlan) -> TuningResult:
    """Time hwkd's default library and the tuned candidates of each layout whole, where the student
    runs (each compiled and loaded once), in rounds of all candidates back to back; keep the fastest
    by its median ratio to the default within a round, with its runs of every round as its
    measurement. `tuned` and `layouts` by layout name, hwkd's default layout first.

    Ratios within a round, not each candidate's fastest run: a shared machine changes speed in spells
    of seconds (the 2-core VM's pool fork/join went from 0.55 to 1.6 us and back, a 0.21 ms library to
    0.42 ms), and the fastest run favours whichever candidate happened to be timed in a quick spell.
    Candidates timed back to back share their spell. `library_ms`: the default's fastest round times
    each candidate's median ratio."""
    from hwkd.latency.measure import Board, TimingPlan, compile_student

    candidates: dict[str, tuple[str, dict[str, Any]]] = {}  # name -> (layout, kernels' schedules)
    for n, (layout, result) in enumerate(tuned.items()):
        significant = {k.kernel for k in result.kernels if k.best_us <= SIGNIFICANT * k.default_us}
        options = [("default", {}), ("all", result.schedules),
                   ("significant", {k: v for k, v in result.schedules.items() if k in significant})]
        seen: list[dict[str, Any]] = []
        for name, chosen in options:
            if name == "default" or (chosen and chosen not in seen):
                seen.append(chosen)
                label = name if n == 0 else "blocked" if name == "default" else f"blocked {name}"
                candidates[label] = (layout, chosen)
    measured_now = {layout: sum(k.measured_now for k in r.kernels) for layout, r in tuned.items()}

    def shipped(name: str, layout: str, **fields: Any) -> TuningResult:
        others = sum(count for other, count in measured_now.items() if other != layout)
        return replace(tuned[layout], schedules=candidates[name][1], library=name, layout=layout,
                       lowered=layouts[layout], measured_other_layouts=others, **fields)

    if len(candidates) == 1:
        return shipped("default", next(iter(tuned)), library_ms=None)
    timing = TimingPlan(number=plan.number, repeat=plan.repeat, min_repeat_ms=plan.min_repeat_ms)
    with Board(profile) as board:
        compiled = {name: compile_student(layouts[layout], params, profile, chosen)
                    for name, (layout, chosen) in candidates.items()}
        loaded = {name: board.load(student) for name, student in compiled.items()}
        runs: dict[str, list[float]] = {name: [] for name in candidates}
        rounds_ms: dict[str, list[float]] = {name: [] for name in candidates}  # each round's fastest run
        for r in range(LIBRARY_ROUNDS):
            for name in list(candidates)[::-1 if r % 2 else 1]:
                round_ms = board.runs_ms(loaded[name], input_shape, timing)
                runs[name] += round_ms
                rounds_ms[name].append(min(round_ms))
        library_ms = paired_ms(rounds_ms)
        fastest = min(library_ms, key=lambda name: library_ms[name])
        measurement = board.summary(runs[fastest])
    log.info("whole libraries, ms: %s; shipping %s", library_ms, fastest)
    return shipped(fastest, candidates[fastest][0], library_ms=library_ms, compiled=compiled[fastest],
                   measurement=measurement)


def paired_ms(rounds_ms: dict[str, list[float]], reference: str = "default") -> dict[str, float]:
    """Each candidate's figure from rounds timed back to back: `reference`'s fastest round times the
    candidate's median ratio to it within a round (ms, to 0.1 us)."""
    base = rounds_ms[reference]
    return {name: round(min(base) * statistics.median(a / b for a, b in zip(ms, base)), 4)
            for name, ms in rounds_ms.items()}


def tune_kernels(lowered: LoweredGraph, profile: DeviceProfile, plan: TuningPlan = TuningPlan(),
                 on_kernel: Callable[[int, int], None] | None = None) -> TuningResult:
    """Measure the variants of every kernel of `lowered`'s `main` that the database lacks and return
    each kernel's fastest schedule alone (`schedules`: the kernels where it is not the default)."""
    from tvm.s_tir import meta_schedule as ms

    if plan.variants < 1:
        raise MeasureError(f"a tuning plan needs at least 1 variant per kernel, got {plan.variants}")
    where = tuning_site(profile)
    folder = database_dir(profile, where)
    folder.mkdir(parents=True, exist_ok=True)
    target = _target(profile)
    registers = register_tile(profile.cpu.simd_bits)
    kernels = _main_kernels(lowered)
    with file_lock(folder / "lock", "another tuning writes this database"):
        database = ms.database.JSONDatabase(work_dir=str(folder))
        timings = _read_timings(folder)
        asked = _read_asked(folder)
        todo: dict[str, tuple[Any, list[tuple[str, Any]]]] = {}  # workload key -> (workload, variants)
        for workload in kernels.values():
            key = _key(workload)
            stored = timings.get(key, [])
            if key in todo or len(stored) >= plan.variants or asked.get(key, 0) >= plan.variants:
                continue
            # a kernel tuned before with fewer variants than asked now gets only the ones it lacks
            known = {label for label, _ in stored}
            variants = [(label, sch) for label, sch in schedule_variants(workload["main"], plan.variants, registers)
                        if label not in known]
            todo[key] = (workload, variants)
        measure = {key: entry for key, entry in todo.items() if entry[1]}
        if measure:
            _measure_all(measure, timings, folder, database, target, profile, plan, where, on_kernel)
        if todo:
            # a kernel with fewer distinct variants than asked is not scheduled again for the same count
            write_atomic(folder / ASKED, json.dumps({**asked, **{key: max(asked.get(key, 0), plan.variants)
                                                                 for key in todo}}, indent=1, sort_keys=True))
    results, schedules = [], {}
    for name, workload in kernels.items():
        measured = timings.get(_key(workload), [])
        timed = {label: us for label, us in measured if us is not None}
        if not timed or measured[0][1] is None:
            continue  # hwkd has no schedule for it (TVM's default loop nest), or its default did not run
        chosen = min(timed, key=lambda label: timed[label])
        default = measured[0][0]
        if chosen != default:
            sch = database.query_schedule(workload, target=target, workload_name="main")
            if sch is None:
                continue
            schedules[name] = sch.mod["main"]
        now = todo.get(_key(workload))
        results.append(KernelTuning(name, chosen, timed[default], timed[chosen], len(timed),
                                    measured_now=len(now[1]) if now else 0))
    return TuningResult(where, str(folder), tuple(results), schedules)


TIMINGS = "hwkd_variants.json"  # workload key -> [[variant label, mean microseconds or null], ...], default first
ASKED = "hwkd_asked.json"  # workload key -> the most variants a tuning asked of it
Timings = list[tuple[str, float | None]]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MeasureError(f"cannot read the tuning records {path}: {error_line(exc)}; "
                           "delete that folder to tune afresh") from None
    return dict(data)


def _read_timings(folder: Path) -> dict[str, Timings]:
    return {str(k): [(str(label), us) for label, us in v] for k, v in _read_json(folder / TIMINGS).items()}


def _read_asked(folder: Path) -> dict[str, int]:
    return {str(k): int(v) for k, v in _read_json(folder / ASKED).items()}


BATCH = 8  # kernels built per pool of build processes: progress shows, a failure costs little


def _measure_all(todo: dict[str, tuple[Any, list[tuple[str, Any]]]], timings: dict[str, Timings], folder: Path,
                 database: Any, target: Any, profile: DeviceProfile, plan: TuningPlan, where: str,
                 on_kernel: Callable[[int, int], None] | None) -> None:
    """Build and time every variant of every kernel, a batch at a time; commit each timing to the
    database and the labels' mean times to the timings file after each batch."""
    from tvm.s_tir import meta_schedule as ms

    runner = _runner(profile, plan)
    items = list(todo.items())
    log.info("tuning %d kernels (%d schedules) %s", len(items), sum(len(v) for _, (_, v) in items), where)
    for first in range(0, len(items), BATCH):
        batch = items[first:first + BATCH]
        jobs = [(key, workload, i, label, sch) for key, (workload, variants) in batch
                for i, (label, sch) in enumerate(variants)]
        builder = ms.builder.LocalBuilder(f_build=_build, f_export=_exporter(profile),
                                          max_workers=min(len(jobs), os.cpu_count() or 1))
        built = builder.build([ms.builder.BuilderInput(sch.mod, target) for *_, sch in jobs])
        args = {key: ms.arg_info.ArgInfo.from_prim_func(workload["main"]) for key, (workload, _) in batch}
        ok = [n for n, b in enumerate(built) if b.error_msg is None]
        futures = runner.run([ms.runner.RunnerInput(built[n].artifact_path, "cpu", args[jobs[n][0]]) for n in ok])
        secs: dict[int, list[float]] = {}
        errors = [f"{jobs[n][3]}: {error_line(b.error_msg, first=True)}" for n, b in enumerate(built) if b.error_msg]
        for n, future in zip(ok, futures):
            result = future.result()
            if result.error_msg is None:
                secs[n] = [float(t) for t in result.run_secs]
            else:
                errors.append(f"{jobs[n][3]}: {error_line(result.error_msg, first=True)}")
            Path(built[n].artifact_path).unlink(missing_ok=True)
        if not secs:
            raise MeasureError(f"tuning on {where} failed: no schedule ran ({errors[0]})")
        for message in errors:
            log.debug("variant %s", message)
        for key, (workload, _) in batch:
            committed = database.commit_workload(workload)
            mine = [n for n, job in enumerate(jobs) if job[0] == key]
            for n in mine:
                if n in secs:
                    database.commit_tuning_record(ms.database.TuningRecord(
                        trace=jobs[n][4].trace, workload=committed, run_secs=secs[n], target=target,
                        args_info=args[key]))
            timings[key] = timings.get(key, []) + [
                # to 0.1 ns: a no-op kernel (a reshape) runs in a few ns on a fast core, and 0.01 us rounded it to 0
                (jobs[n][3], round(sum(secs[n]) / len(secs[n]) * 1e6, 4) if n in secs else None) for n in mine]
        write_atomic(folder / TIMINGS, json.dumps(timings, indent=1, sort_keys=True))
        if on_kernel is not None:
            on_kernel(first + len(batch), len(items))


def _build(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's default build without importing `tvm.s_tir.tensor_intrin` (30 s per worker)."""
    import tvm

    return tvm.tirx.build(mod, target=target)


def _exporter(profile: DeviceProfile) -> Any:
    """A picklable export function: the builder's default writes a .tar that only this machine can
    load; a board gets a shared library linked by its cross compiler."""
    from hwkd.latency.measure import cross_compiler

    if profile.measure_local:
        return None
    return functools.partial(_export_shared, cross_compiler(profile))


def _export_shared(compiler: str | None, module: Any) -> str:
    import tempfile

    from tvm.support import cc

    path = Path(tempfile.mkdtemp(prefix="hwkd-tune-")) / "kernel.so"
    module.export_library(str(path), fcompile=cc.cross_compiler(compiler) if compiler else None)
    return str(path)


def _runner(profile: DeviceProfile, plan: TuningPlan) -> Any:
    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.EvaluatorConfig(number=plan.number, repeat=plan.repeat, min_repeat_ms=plan.min_repeat_ms,
                                       enable_cpu_cache_flush=False)
    threads = profile.runtime.threads
    if profile.measure_local:
        return ms.runner.LocalRunner(evaluator_config=config, initializer=functools.partial(_pool_size, threads),
                                     f_run_evaluator=functools.partial(_run_pinned, threads))
    spec = profile.rpc
    assert spec is not None  # tuning_site checked it
    rpc = ms.runner.RPCConfig(tracker_host=spec.host, tracker_port=spec.port, tracker_key=spec.key or DIRECT,
                              session_timeout_sec=int(spec.timeout_s * 60))
    return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=config, f_create_session=_session,
                               f_run_evaluator=functools.partial(_run_on_threads, threads), max_workers=1)


def _pool_size(threads: int) -> None:
    os.environ["TVM_NUM_THREADS"] = str(threads)  # before the runner's process starts TVM's pool


def _run_pinned(threads: int, module: Any, device: Any, config: Any, args: Any) -> Any:
    """MetaSchedule's local timing with the pool as hwkd times whole libraries (`pin_tvm_pool`)."""
    from tvm.s_tir.meta_schedule.runner.local_runner import default_run_evaluator

    from hwkd.threads import pin_tvm_pool

    pin_tvm_pool(threads)
    return default_run_evaluator(module, device, config, args)


DIRECT = "hwkd:direct"  # the "tracker key" of a server hwkd connects to directly (MetaSchedule needs a key)


def _session(config: Any) -> Any:
    """A session with the profile's server, directly or through its tracker (MetaSchedule's default
    needs a tracker)."""
    from tvm import rpc

    if config.tracker_key != DIRECT:
        return rpc.connect_tracker(config.tracker_host, config.tracker_port).request(
            config.tracker_key, session_timeout=config.session_timeout_sec)
    return rpc.connect(config.tracker_host, config.tracker_port, session_timeout=config.session_timeout_sec)


def _run_on_threads(threads: int, session: Any, module: Any, device: Any, config: Any, args: Any) -> Any:
    from tvm.s_tir.meta_schedule.runner.rpc_runner import default_run_evaluator

    from hwkd.latency.measure import set_pool_threads

    set_pool_threads(session.get_function("runtime.config_threadpool"), threads)
    return default_run_evaluator(session, module, device, config, args)


def _main_kernels(lowered: LoweredGraph) -> dict[str, Any]:
    """The kernels `main` calls once the weight-only ones are lifted out, each as a workload
    module whose function is named "main", so that a kernel is the same workload in every student."""
    import tvm
    from tvm import relax, tirx

    from hwkd.latency.graph_analysis import main_only

    module = main_only(relax.transform.LiftTransformParams()(lowered.fused_mod))
    return {gv.name_hint: tvm.IRModule({"main": f.with_attr("global_symbol", "main")})
            for gv, f in module.functions.items() if isinstance(f, tirx.PrimFunc)}


def _key(workload: Any) -> str:
    import tvm_ffi

    return str(tvm_ffi.structural_hash(workload, map_free_vars=True))


def _target(profile: DeviceProfile) -> Any:
    """MetaSchedule wants the core count in the target."""
    import tvm

    return tvm.target.Target({**profile.target, "num-cores": profile.runtime.threads})


def tuning_site(profile: DeviceProfile) -> str:
    """Where `profile`'s kernels are timed ("local" or "rpc [KEY@]HOST:PORT"); a one-line error for a
    profile that can only be modeled."""
    if profile.measure_local:
        return "local"
    if profile.rpc is None:
        raise MeasureError(f"device {profile.name} cannot be tuned: it has no rpc section and is not the host "
                           "(add rpc: {host, port} to its profile)")
    spec = profile.rpc
    return f"rpc {spec.key + '@' if spec.key else ''}{spec.host}:{spec.port}"
