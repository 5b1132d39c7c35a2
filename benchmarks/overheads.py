"""Benchmark of the per-kernel overheads the cost model adds: a TVM Relax VM call, and a thread-pool fork/join.

The `host` profile's `cost_model.kernel_overhead_us` and `parallel_overhead_us` come from this script.
It compiles two Relax functions that chain `--kernels` tiny kernels (64 floats each, too little work
to measure anything but the call): in one every kernel's loop is serial, in the other parallel over
the thread pool. The VM runs each whole chain with TVM's time evaluator; per kernel, the serial chain
is the call overhead and the difference is the fork/join. With `--onnxruntime` it also times ONNX
Runtime's cost per node: chains of `--kernels` tiny nodes (an elementwise Add; a 1x1 convolution over
8 channels of a 4x4 image) minus a chain of 8, per node; and chains of convolutions at the sizes of
students' layers (pointwise and depthwise, 8-192 channels, 8x8-32x32 images, each followed by a
ReLU as in a student), whose time per node is fitted as `a + s * roofline`, `roofline` being the
onnxruntime cost model's time of that node's kernel: `a` is the per-node cost at student sizes
(`cost_model.node_overhead_us`: a tiny node does not reach ONNX Runtime's thread pool, a student's
does) and `s` how far the roofline is from ONNX Runtime's kernels. Run it with nothing else on the
machine.

    python benchmarks/overheads.py [--kernels 64] [--threads N] [--rounds 3] [--onnxruntime]

`--watch SECONDS [--quiet-us US]` only prints the fork/join every second and how many samples were
slow: run it before a benchmark on a shared machine (see `watch`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

MODULE = '''
from tvm.script import ir as I, relax as R, tirx as T


@I.ir_module(check_well_formed=False)  # TVM 0.27's TIR verifier rejects the s_tir blocks it parses
class Chain:
    @T.prim_func
    def inc(a: T.Buffer((64,), "float32"), b: T.Buffer((64,), "float32")):
        with T.sblock("root"):
            for i in T.{kind}(8):
                for j in T.vectorized(8):
                    with T.sblock("b"):
                        vi = T.axis.spatial(64, i * 8 + j)
                        b[vi] = a[vi] + T.float32(1)

    @R.function
    def main(y0: R.Tensor((64,), "float32")) -> R.Tensor((64,), "float32"):
        cls = Chain
        with R.dataflow():
{calls}
            R.output(y{last})
        return y{last}
'''


def chain_us_per_kernel(kind: str, kernels: int, folder: Path, exec_mode: str = "compiled") -> float:
    """Seconds per kernel of a chain of `kernels` calls of a `kind` ("serial" or "parallel") kernel, in us;
    `exec_mode` of the Relax VM: "compiled" (`main` as machine code, as hwkd builds libraries) or "bytecode"."""
    return chain_timer(kind, kernels, folder, exec_mode)()


def chain_timer(kind: str, kernels: int, folder: Path, exec_mode: str = "compiled",
                min_repeat_ms: int = 50) -> Callable[[], float]:
    """`chain_us_per_kernel`'s chain compiled once: a function that times it again (fastest of 7 runs of
    at least `min_repeat_ms`, us per kernel), with TVM's pool pinned as hwkd times libraries."""
    import numpy as np
    import tvm
    from tvm import relax

    from hwkd.threads import size_tvm_pool, tvm_pool_pinned

    size_tvm_pool()  # the pool's size as hwkd sets it, unless main's --threads set it already
    threads = int(os.environ["TVM_NUM_THREADS"])
    calls = "\n".join(f"            y{k + 1} = R.call_tir(cls.inc, (y{k},), out_ty=R.Tensor((64,), 'float32'))"
                      for k in range(kernels))
    path = folder / f"chain_{kind}.py"  # TVMScript reads its source from a file
    path.write_text(MODULE.format(kind=kind, calls=calls, last=kernels))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    executable = relax.build(module.Chain, target=tvm.target.Target({"kind": "llvm"}), exec_mode=exec_mode)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    vm.set_input("main", tvm.runtime.tensor(np.zeros(64, "float32"), tvm.cpu()))
    timer = vm.time_evaluator("invoke_stateful", tvm.cpu(), number=50, repeat=7, min_repeat_ms=min_repeat_ms)

    def time_us() -> float:
        with tvm_pool_pinned(threads):
            return min(timer("main").results) / kernels * 1e6

    return time_us


def watch(kernels: int, seconds: float, quiet_us: float | None = None) -> None:
    """Print the pool's fork/join every second for `seconds`: on a shared VM it shows the spells in
    which the cores' working together costs several times more (the 2-core VM: 0.53-0.60 us, and
    1.35-1.61 us for seconds at a time, while a 0.21 ms library read 0.42 ms). A sample is slow above
    1.5x `quiet_us` (a figure of a quiet moment), or else 1.5x the quickest sample of this watch."""
    import time

    with tempfile.TemporaryDirectory() as tmp:
        serial = chain_timer("serial", kernels, Path(tmp))()
        parallel = chain_timer("parallel", kernels, Path(tmp), min_repeat_ms=10)
        samples: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            samples.append(parallel() - serial)
            slow = samples[-1] > 1.5 * (quiet_us or min(samples))
            print(f"{time.perf_counter() - started:6.1f} s  fork/join {samples[-1]:.2f} us"
                  f"{'  slow' if slow else ''}", flush=True)
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - started) % 1.0))
    reference = quiet_us or min(samples)
    slow_count = sum(1 for us in samples if us > 1.5 * reference)
    print(f"{slow_count} of {len(samples)} samples above 1.5x {reference:.2f} us "
          f"({'the quiet figure given' if quiet_us else 'the quickest sample'}); quickest {min(samples):.2f} us")
    if not quiet_us and not slow_count:
        print("no change within the watch: quiet, or one spell longer than it; compare the quickest "
              "sample with a quiet moment's (--quiet-us)")


def onnxruntime_us_per_node(op: str, nodes: int, threads: int) -> float:
    """Microseconds per node of a chain of `nodes` tiny `op` nodes ("Add" or "Conv") run by ONNX Runtime,
    all graph optimizations on, `threads` intra-op threads: the fastest of 7 runs of at least 50 ms."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hwkd.latency.onnxruntime_graph import ONNX_OPSET

    shape = [1, 8, 4, 4]
    initializers = [numpy_helper.from_array(np.full((8, 8, 1, 1), 0.1, np.float32), "w") if op == "Conv"
                    else numpy_helper.from_array(np.full(shape, 0.1, np.float32), "c")]
    graph_nodes = [helper.make_node("Conv", [f"y{k}", "w"], [f"y{k + 1}"]) if op == "Conv"
                   else helper.make_node("Add", [f"y{k}", "c"], [f"y{k + 1}"]) for k in range(nodes)]
    graph = helper.make_graph(graph_nodes, "chain", [helper.make_tensor_value_info("y0", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(f"y{nodes}", TensorProto.FLOAT, shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    onnx.checker.check_model(model)
    return time_onnx_ms(model.SerializeToString(), tuple(shape), threads) * 1e3


# (kind, channels, image side, kernel size): the layers of fbnet, mbconv-small and nb201 students
STUDENT_LAYERS = (
    ("pointwise", 16, 32, 1), ("pointwise", 32, 32, 1), ("pointwise", 32, 16, 1), ("pointwise", 96, 16, 1),
    ("pointwise", 192, 16, 1), ("pointwise", 64, 8, 1), ("pointwise", 192, 8, 1),
    ("depthwise", 32, 32, 3), ("depthwise", 96, 16, 3), ("depthwise", 192, 16, 5), ("depthwise", 64, 8, 3),
    ("depthwise", 192, 8, 5), ("dense", 16, 32, 3), ("dense", 32, 16, 3), ("dense", 64, 8, 3),
)


def layer_chain(kind: str, channels: int, side: int, kernel: int, nodes: int) -> object:
    """`nodes` convolutions (each with a ReLU, which both runtimes fuse into it) of one student layer's shape."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    groups = channels if kind == "depthwise" else 1
    return nn.Sequential(*(m for _ in range(nodes) for m in (
        nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=groups), nn.ReLU()))).eval()


def time_onnx_ms(model: bytes, shape: tuple[int, ...], threads: int) -> float:
    """The fastest of 7 runs of at least 50 ms of an ONNX file, all graph optimizations on."""
    import time

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros(shape, np.float32)}
    for _ in range(10):
        session.run(None, feed)
    runs = []
    for _ in range(7):
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < 0.05:
            session.run(None, feed)
            calls += 1
        runs.append((time.perf_counter() - start) / calls)
    return min(runs) * 1e3


def node_parts_us(model: bytes, threads: int) -> tuple[int, float, int, float]:
    """(compute nodes, their roofline us, light nodes, their bytes' time us at 1 byte per cycle per core)
    of an ONNX file as ONNX Runtime runs it on x86, by the host profile's onnxruntime model."""
    from dataclasses import replace

    from hwkd.latency.cost_model import ALIAS_OPS, COMPUTE_OPS, node_cost
    from hwkd.latency.onnxruntime_graph import runtime_nodes
    from hwkd.profiles import load_profile

    host = load_profile("host").with_threads(threads)
    bare = replace(host, cost=replace(host.cost, model="onnxruntime", node_overhead_us=0.0))
    nodes = runtime_nodes(model, blocked_layout=True)
    compute = [n for n in nodes if n.op in COMPUTE_OPS]
    light = [n for n in nodes if n.op not in COMPUTE_OPS]
    roofline_us = sum(max(c.compute_ms, c.memory_ms) for c in (node_cost(n, bare) for n in compute)) * 1e3
    byte_us = sum(n.bytes_read + n.bytes_written for n in light if n.op not in ALIAS_OPS) / (
        host.cpu.clock_ghz * 1e3 * threads)
    return len(compute), roofline_us, len(light), byte_us


def student_layer_costs(nodes: int, threads: int, rounds: int) -> None:
    """Per-node time of chains of student-sized layers against the onnxruntime model's roofline of them."""
    import numpy as np

    from hwkd.latency.onnxruntime_graph import student_onnx
    from hwkd.profiles import load_profile

    host = load_profile("host").with_threads(threads)
    short = 8
    rows = []
    for kind, channels, side, kernel in STUDENT_LAYERS:
        shape = (1, channels, side, side)
        files = {length: student_onnx(layer_chain(kind, channels, side, kernel, length), shape)
                 for length in (short, nodes)}
        parts = {length: node_parts_us(files[length], threads) for length in (short, nodes)}
        counted = parts[nodes][0] - parts[short][0]
        roofline_us = parts[nodes][1] - parts[short][1]
        measured = min(time_onnx_ms(files[nodes], shape, threads) - time_onnx_ms(files[short], shape, threads)
                       for _ in range(rounds))
        rows.append((kind, channels, side, kernel, counted, 1e3 * measured / counted, roofline_us / counted))
    cycles_per_us = host.cpu.clock_ghz * 1e3 * threads  # of all threads, at the profile's clock
    print(f"\n## Student-sized layers: chains of {nodes} minus chains of {short} (convolution + ReLU), fastest of "
          f"{rounds} rounds\n")
    print("| layer | channels | image | ONNX Runtime nodes more | measured us per node | roofline us per node | "
          "flops per cycle per core |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, channels, side, kernel, counted, per_node, per_roofline in rows:
        flops = 2 * channels * (1 if kind == "depthwise" else channels) * kernel**2 * side**2
        print(f"| {kind} {kernel}x{kernel} | {channels} | {side}x{side} | {counted} | {per_node:.2f} | "
              f"{per_roofline:.2f} | {flops / (per_node * cycles_per_us):.1f} |")
    print(f"\n(flops per cycle at the host profile's {host.cpu.clock_ghz:g} GHz; its peak: "
          f"{2 * host.cpu.fma_per_cycle * host.cpu.fp32_lanes:g}, from {host.sources.get('cpu.fma_per_cycle', '?')})")
    measured_us = np.array([r[5] for r in rows])
    roofline_us = np.array([r[6] for r in rows])
    # measured per node = a + s * roofline per node, least squares on relative errors
    design = np.stack([np.ones(len(rows)), roofline_us], axis=1) / measured_us[:, None]
    (a, s), *_ = np.linalg.lstsq(design, np.ones(len(rows)), rcond=None)
    fitted = a + s * roofline_us
    error = 100 * float(np.median(np.abs(fitted - measured_us) / measured_us))
    print(f"\nfit over the {len(rows)} layers: per node {a:.2f} us + {s:.2f} x roofline "
          f"(median error {error:.1f} %); profile value: node_overhead_us {a:.2f}")


def light_link(extra: str, channels: int) -> object:
    """One link of a light-node chain: a pointwise convolution + ReLU, then `extra` ("shuffle", "avgpool"
    or "none")."""
    import torch
    from torch import nn

    class Shuffle(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            return x.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

    parts: list[nn.Module] = [nn.Conv2d(channels, channels, 1), nn.ReLU()]
    if extra == "shuffle":
        parts.append(Shuffle())
    elif extra == "avgpool":
        parts.append(nn.AvgPool2d(3, 1, 1, count_include_pad=False))
    return nn.Sequential(*parts)


# (channels, image side) of the light-node chains: students' activation sizes, 16 KiB to 384 KiB
LIGHT_SHAPES = ((16, 32), (48, 32), (32, 16), (96, 16), (192, 16), (64, 8), (192, 8))


def light_node_costs(nodes: int, threads: int, rounds: int) -> None:
    """Per-link time of the nodes ONNX Runtime adds for a channel shuffle (a reorder out of its blocked
    layout, reshape, transpose, reshape, a reorder back) or a 3x3 average pooling between pointwise
    convolutions, fitted as `a * nodes + bytes / (b * cycles)`: `a` is light_node_overhead_us, `b`
    light_node_bytes_per_cycle (bytes read and written per cycle per core)."""
    import numpy as np
    import torch
    from torch import nn

    from hwkd.latency.onnxruntime_graph import student_onnx

    short = 8
    rows = []
    for channels, side in LIGHT_SHAPES:
        shape = (1, channels, side, side)
        per_link = {}
        for extra in ("none", "shuffle", "avgpool"):
            torch.manual_seed(0)
            files = {n: student_onnx(nn.Sequential(*(light_link(extra, channels) for _ in range(n))).eval(), shape)
                     for n in (short, nodes)}
            parts = {n: node_parts_us(files[n], threads) for n in (short, nodes)}
            measured = min(time_onnx_ms(files[nodes], shape, threads) - time_onnx_ms(files[short], shape, threads)
                           for _ in range(rounds))
            links = nodes - short
            per_link[extra] = (1e3 * measured / links, (parts[nodes][2] - parts[short][2]) / links,
                               (parts[nodes][3] - parts[short][3]) / links)
        for extra in ("shuffle", "avgpool"):
            time_us = per_link[extra][0] - per_link["none"][0]
            light = per_link[extra][1] - per_link["none"][1]
            byte_us = per_link[extra][2] - per_link["none"][2]
            rows.append((extra, channels, side, light, byte_us, time_us))
    print(f"\n## Light nodes: chains of {nodes} minus chains of {short} links (pointwise convolution + ReLU + "
          f"the op), minus the same chains without the op, fastest of {rounds} rounds\n")
    print("| op | channels | image | light nodes per link | KiB moved per link | measured us per link |")
    print("|---|---:|---:|---:|---:|---:|")
    cycles_per_us = load_host_clock_ghz() * 1e3 * threads
    for extra, channels, side, light, byte_us, time_us in rows:
        print(f"| {extra} | {channels} | {side}x{side} | {light:.1f} | {byte_us * cycles_per_us / 1024:.0f} | "
              f"{time_us:.2f} |")
    measured_us = np.array([r[5] for r in rows])
    design = np.array([[r[3], r[4]] for r in rows]) / measured_us[:, None]
    (a, inverse_rate), *_ = np.linalg.lstsq(design, np.ones(len(rows)), rcond=None)
    fitted = np.array([a * r[3] + inverse_rate * r[4] for r in rows])
    error = 100 * float(np.median(np.abs(fitted - measured_us) / measured_us))
    print(f"\nfit over the {len(rows)} chains: per light node {a:.2f} us + its bytes at {1 / inverse_rate:.1f} bytes "
          f"per cycle per core (median error {error:.1f} %); profile values: light_node_overhead_us {a:.2f}, "
          f"light_node_bytes_per_cycle {1 / inverse_rate:.1f}")


def load_host_clock_ghz() -> float:
    from hwkd.profiles import load_profile

    return load_profile("host").cpu.clock_ghz


def onnxruntime_overheads(nodes: int, threads: int, rounds: int) -> None:
    import onnxruntime as ort

    print(f"\n## Per-node cost, ONNX Runtime {ort.__version__} (CPU provider, all graph optimizations), "
          f"{threads} threads, chains of {nodes} nodes minus chains of 8\n")
    print("| round | Add us per node | 1x1 Conv us per node |")
    print("|---:|---:|---:|")
    best = {"Add": float("inf"), "Conv": float("inf")}
    for n in range(1, rounds + 1):
        row = {}
        for op in ("Add", "Conv"):
            long, short = onnxruntime_us_per_node(op, nodes, threads), onnxruntime_us_per_node(op, 8, threads)
            row[op] = (long - short) / (nodes - 8)
            best[op] = min(best[op], row[op])
        print(f"| {n} | {row['Add']:.2f} | {row['Conv']:.2f} |")
    print(f"\nfastest round: Add {best['Add']:.2f} us, Conv {best['Conv']:.2f} us per node")
    student_layer_costs(nodes, threads, rounds)
    light_node_costs(nodes, threads, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=3, help="serial and parallel timed this many times, alternating")
    parser.add_argument("--onnxruntime", action="store_true", help="also ONNX Runtime's cost per node")
    parser.add_argument("--watch", type=float, metavar="SECONDS",
                        help="only print the fork/join every second for this long (is the machine quiet?)")
    parser.add_argument("--quiet-us", type=float, help="with --watch: the fork/join of a quiet moment, us")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's pool starts (see hwkd.threads)
    import tvm

    if args.watch:
        watch(args.kernels, args.watch, args.quiet_us)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            serial = chain_us_per_kernel("serial", args.kernels, Path(tmp))
            parallel = chain_us_per_kernel("parallel", args.kernels, Path(tmp))
            bytecode = chain_us_per_kernel("serial", args.kernels, Path(tmp), "bytecode")
            rows.append((serial, parallel, bytecode))
    print(f"\n## Per-kernel overheads, TVM {tvm.__version__} Relax VM (compiled mode, as hwkd builds; the "
          f"bytecode VM beside it), {args.threads} threads, chains of {args.kernels} kernels\n")
    print("| round | call (serial kernel) us | parallel kernel us | fork/join us | parallel / serial | "
          "call, bytecode VM us |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, (serial, parallel, bytecode) in enumerate(rows, start=1):
        print(f"| {n} | {serial:.2f} | {parallel:.2f} | {parallel - serial:.2f} | {parallel / serial:.1f}x "
              f"| {bytecode:.2f} |")
    best_serial = min(r[0] for r in rows)
    best_fork = min(r[1] - r[0] for r in rows)
    print(f"\nprofile values: kernel_overhead_us {best_serial:.2f}, parallel_overhead_us {best_fork:.2f}")
    if args.onnxruntime:
        onnxruntime_overheads(args.kernels, args.threads, args.rounds)


if __name__ == "__main__":
    main()
