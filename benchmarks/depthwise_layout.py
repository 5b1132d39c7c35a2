"""Benchmark of the tensor layout for depthwise convolutions: hwkd's kernels in PyTorch's NCHW layout
against the same convolutions in the channel-blocked layout its library uses (NCHW16c on AVX-512,
as ONNX Runtime runs them on x86), side by side.

In NCHW a depthwise convolution's vectors run along an image row: each filter tap loads the row
shifted by one column (an unaligned load, which on AVX-512 straddles two cache lines) and
broadcasts one weight, and rows of 4 or 8 fill a quarter or half of a 16-float register. In
NCHW16c the vectors run across 16 channels of one pixel: every load is aligned and whole, and a
tile of output pixels shares each weight vector. For fbnet's depthwise shapes it compiles both for
the `host` profile, as hwkd schedules them, and times each kernel alone (the fastest of
`--repeats` interleaved runs):

- `NCHW`: hwkd's NCHW schedule (`hwkd.latency.schedule`; a library still uses it with
  `Lowerer(blocked=False)`);
- `NCHW16c`: `hwkd.latency.blocked_layout.depthwise_conv2d_blocked`, a tile of up to 8 output
  pixels x 16 channels accumulated over the filter window, parallel over bands of output rows of a
  channel block, each band's padded input rows written inside that loop. The layout transforms at
  a library's edges are not counted: a student's convolutions pass blocked tensors to each other.

Run it with nothing else on the machine.

    python benchmarks/depthwise_layout.py [--repeats 15]
"""

from __future__ import annotations

import argparse

import numpy as np

BLOCK = 16  # channels per vector of 512 bits
SHAPES = (  # (channels, image size, kernel, stride) of fbnet's depthwise convolutions
    (144, 32, 5, 1),
    (144, 32, 5, 2),
    (96, 32, 3, 1),
    (192, 16, 5, 1),
    (384, 8, 5, 1),
    (672, 8, 3, 1),
    (1104, 4, 5, 1),
    (1104, 4, 3, 1),
)


def nchw(channels: int, size: int, kernel: int, stride: int) -> object:
    """The convolution as Relax legalizes it, scheduled by hwkd for this machine."""
    from tvm import te, topi

    from hwkd.latency.schedule import register_tile, schedule_primfunc

    x = te.placeholder((1, channels, size, size), name="x")
    w = te.placeholder((channels, 1, kernel, kernel), name="w")
    out = topi.nn.conv(x, w, stride, kernel // 2, 1, channels, "NCHW", "OIHW")
    return schedule_primfunc(te.create_prim_func([x, w, out]), register_tile(512)).func


def blocked(channels: int, size: int, kernel: int, stride: int) -> object:
    """The convolution on NCHW16c tensors as hwkd's library compiles it (`hwkd.latency.blocked_layout`)."""
    from tvm import te

    from hwkd.latency.blocked_layout import depthwise_conv2d_blocked
    from hwkd.latency.schedule import register_tile, schedule_primfunc

    x = te.placeholder((1, channels // BLOCK, size, size, BLOCK), name="x")
    w = te.placeholder((channels // BLOCK, kernel, kernel, BLOCK), name="w")
    pad = kernel // 2
    out = depthwise_conv2d_blocked(x, w, (stride, stride), (pad, pad, pad, pad))
    return schedule_primfunc(te.create_prim_func([x, w, out]), register_tile(512)).func


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import os

    from hwkd.threads import size_tvm_pool, tvm_pool_pinned

    size_tvm_pool()
    import tvm

    from hwkd.profiles import load_profile

    target = load_profile("host").tvm_target()
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    print(f"depthwise convolutions alone, {os.environ['TVM_NUM_THREADS']} threads, fastest of {args.repeats} interleaved runs\n")
    print("| channels x image, kernel, stride | NCHW us | NCHW16c us | NCHW / NCHW16c |")
    print("|---|---:|---:|---:|")
    ratios = []
    for channels, size, kernel, stride in SHAPES:
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        w = rng.standard_normal((channels, 1, kernel, kernel)).astype(np.float32)
        out_size = (size + 2 * (kernel // 2) - kernel) // stride + 1
        x_blocked = x.reshape(1, channels // BLOCK, BLOCK, size, size).transpose(0, 1, 3, 4, 2).copy()
        w_blocked = w.reshape(channels // BLOCK, BLOCK, kernel, kernel).transpose(0, 2, 3, 1).copy()
        runs = {}
        for label, func, arrays in (
            ("nchw", nchw(channels, size, kernel, stride), [x, w, np.zeros((1, channels, out_size, out_size), np.float32)]),
            ("blocked", blocked(channels, size, kernel, stride),
             [x_blocked, w_blocked, np.zeros((1, channels // BLOCK, out_size, out_size, BLOCK), np.float32)]),
        ):
            lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
            tensors = [tvm.runtime.tensor(a, dev) for a in arrays]
            lib["main"](*tensors)
            runs[label] = (lib.mod.time_evaluator("main", dev, number=100, repeat=1), tensors)
        same = runs["blocked"][1][-1].numpy().transpose(0, 1, 4, 2, 3).reshape(1, channels, out_size, out_size)
        np.testing.assert_allclose(same, runs["nchw"][1][-1].numpy(), rtol=1e-4, atol=1e-4)
        best = {label: float("inf") for label in runs}
        with tvm_pool_pinned(int(os.environ["TVM_NUM_THREADS"])):  # as hwkd times libraries
            for _ in range(args.repeats):  # alternating runs, each label's fastest
                for label, (timer, tensors) in runs.items():
                    best[label] = min(best[label], timer(*tensors).mean * 1e6)
        ratios.append(best["nchw"] / best["blocked"])
        print(f"| {channels} x {size}x{size}, {kernel}x{kernel}, {stride} | {best['nchw']:.1f} | {best['blocked']:.1f} "
              f"| {ratios[-1]:.2f} |", flush=True)
    print(f"\nmedian NCHW / NCHW16c: {float(np.median(ratios)):.2f}x (outputs checked equal)")


if __name__ == "__main__":
    main()
