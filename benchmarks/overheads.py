"""Benchmark of the per-kernel overheads the cost model adds: a TVM Relax VM call, and a thread-pool fork/join.

The `host` profile's `cost_model.kernel_overhead_us` and `parallel_overhead_us` come from this script.
It compiles two Relax functions that chain `--kernels` tiny kernels (64 floats each, too little work
to measure anything but the call): in one every kernel's loop is serial, in the other parallel over
the thread pool. The VM runs each whole chain with TVM's time evaluator; per kernel, the serial chain
is the call overhead and the difference is the fork/join. With `--onnxruntime` it also times ONNX
Runtime's cost per node (`cost_model.node_overhead_us`): chains of `--kernels` tiny nodes (an
elementwise Add; a 1x1 convolution over 8 channels of a 4x4 image) minus a chain of 8, per node.
Run it with nothing else on the machine.

    python benchmarks/overheads.py [--kernels 64] [--threads N] [--rounds 3] [--onnxruntime]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
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


def chain_us_per_kernel(kind: str, kernels: int, folder: Path) -> float:
    """Seconds per kernel of a chain of `kernels` calls of a `kind` ("serial" or "parallel") kernel, in us."""
    import numpy as np
    import tvm
    from tvm import relax

    calls = "\n".join(f"            y{k + 1} = R.call_tir(cls.inc, (y{k},), out_ty=R.Tensor((64,), 'float32'))"
                      for k in range(kernels))
    path = folder / f"chain_{kind}.py"  # TVMScript reads its source from a file
    path.write_text(MODULE.format(kind=kind, calls=calls, last=kernels))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    vm = relax.VirtualMachine(tvm.compile(module.Chain, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    vm.set_input("main", tvm.runtime.tensor(np.zeros(64, "float32"), tvm.cpu()))
    timer = vm.time_evaluator("invoke_stateful", tvm.cpu(), number=50, repeat=7, min_repeat_ms=50)
    return min(timer("main").results) / kernels * 1e6


def onnxruntime_us_per_node(op: str, nodes: int, threads: int) -> float:
    """Microseconds per node of a chain of `nodes` tiny `op` nodes ("Add" or "Conv") run by ONNX Runtime,
    all graph optimizations on, `threads` intra-op threads: the fastest of 7 runs of at least 50 ms."""
    import time

    import numpy as np
    import onnx
    import onnxruntime as ort
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
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"y0": np.zeros(shape, np.float32)}
    for _ in range(20):
        session.run(None, feed)
    runs = []
    for _ in range(7):
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < 0.05:
            session.run(None, feed)
            calls += 1
        runs.append((time.perf_counter() - start) / calls)
    return min(runs) * 1e6


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=3, help="serial and parallel timed this many times, alternating")
    parser.add_argument("--onnxruntime", action="store_true", help="also ONNX Runtime's cost per node")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's pool starts (see hwkd.threads)
    import tvm

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            serial = chain_us_per_kernel("serial", args.kernels, Path(tmp))
            parallel = chain_us_per_kernel("parallel", args.kernels, Path(tmp))
            rows.append((serial, parallel))
    print(f"\n## Per-kernel overheads, TVM {tvm.__version__} Relax VM, {args.threads} threads, "
          f"chains of {args.kernels} kernels\n")
    print("| round | call (serial kernel) us | parallel kernel us | fork/join us | parallel / serial |")
    print("|---:|---:|---:|---:|---:|")
    for n, (serial, parallel) in enumerate(rows, start=1):
        print(f"| {n} | {serial:.2f} | {parallel:.2f} | {parallel - serial:.2f} | {parallel / serial:.1f}x |")
    best_serial = min(r[0] for r in rows)
    best_fork = min(r[1] - r[0] for r in rows)
    print(f"\nprofile values: kernel_overhead_us {best_serial:.2f}, parallel_overhead_us {best_fork:.2f}")
    if args.onnxruntime:
        onnxruntime_overheads(args.kernels, args.threads, args.rounds)


if __name__ == "__main__":
    main()
