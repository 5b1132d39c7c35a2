"""Benchmark of the per-kernel overheads the cost model adds: a TVM Relax VM call, and a thread-pool fork/join.

The `host` profile's `cost_model.kernel_overhead_us` and `parallel_overhead_us` come from this script.
It compiles two Relax functions that chain `--kernels` tiny kernels (64 floats each, too little work
to measure anything but the call): in one every kernel's loop is serial, in the other parallel over
the thread pool. The VM runs each whole chain with TVM's time evaluator; per kernel, the serial chain
is the call overhead and the difference is the fork/join. Run it with nothing else on the machine.

    python benchmarks/overheads.py [--kernels 64] [--threads N] [--rounds 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=3, help="serial and parallel timed this many times, alternating")
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


if __name__ == "__main__":
    main()
