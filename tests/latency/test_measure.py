from __future__ import annotations

import os
import socket
import time

import pytest

from hwkd.errors import MeasureError
from hwkd.latency.lowering import Lowerer
from hwkd.latency.measure import TimingPlan, cross_compiler, measure_local, measure_rpc
from hwkd.latency.relax_import import torch_to_relax
from hwkd.profiles import load_profile
from hwkd.spaces import load_space

SMALL = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
BIG = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
FAST = TimingPlan(number=3, repeat=5, min_repeat_ms=5)


def lowered(arch: str):
    graph = torch_to_relax(load_space("nb201").build(arch, 10), (1, 3, 32, 32))
    return graph, Lowerer().lower(graph)


@pytest.mark.slow
def test_local_measurement_tells_a_big_student_from_a_small_one() -> None:
    host = load_profile("host")
    small = measure_local(*_args(SMALL), host, FAST)
    big = measure_local(*_args(BIG), host, FAST)
    assert small.where == "local" and small.runs == 5
    assert 0 < small.latency_ms and small.spread_ms >= 0
    assert big.latency_ms > 3 * small.latency_ms  # 220 M MACs against 18 M


@pytest.mark.slow
def test_measuring_here_leaves_this_process_on_all_its_cores() -> None:
    cores = os.sched_getaffinity(0)
    measure_local(*_args(SMALL), load_profile("host"), FAST)
    assert os.sched_getaffinity(0) == cores  # TVM's pool pins the caller; torch threads would inherit it


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_a_two_thread_library_runs_on_two_cores() -> None:
    """TVM would size its pool to half the x86 hardware threads (one on a 2-core VM) and never grow
    it; a fresh process that measures must get a worker per core and spend more than one core-second
    per second while it runs."""
    script = (
        "import os, resource, time\n"
        "import tvm\n"
        "from tvm import relax\n"
        "from hwkd.latency.lowering import Lowerer\n"
        "from hwkd.latency.measure import compile_student, measure_compiled\n"
        "from hwkd.latency.relax_import import torch_to_relax\n"
        "from hwkd.profiles import load_profile\n"
        "from hwkd.spaces import load_space\n"
        f"arch = {BIG!r}\n"
        "graph = torch_to_relax(load_space('nb201').build(arch, 10), (1, 3, 32, 32))\n"
        "host = load_profile('host').with_threads(2)\n"
        "student = compile_student(Lowerer().lower(graph), graph.params, host)\n"
        "measure_compiled(student, (1, 3, 32, 32), host)\n"
        "vm = relax.VirtualMachine(student.executable, tvm.cpu())\n"
        "import numpy as np\n"
        "args = [tvm.runtime.tensor(a) for a in [np.zeros((1, 3, 32, 32), 'float32'), *student.weights]]\n"
        "start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime\n"
        "for _ in range(20): vm['main'](*args)\n"
        "wall = time.perf_counter() - start\n"
        "print(tvm.get_global_func('runtime.NumThreads')(), (resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu) / wall)\n"
    )
    pool, cores_busy = _fresh_process(script, timeout_s=600).split()
    assert int(pool) == len(os.sched_getaffinity(0))
    assert float(cores_busy) > 1.3


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_the_calling_thread_gets_a_core_no_tvm_worker_is_pinned_to() -> None:
    """TVM runs task 0 of each parallel loop on the calling thread but leaves it free to share a
    worker's core, where the two take turns (a 0.21 ms library read 0.54 ms): hwkd pins it apart."""
    script = (
        "import os, threading, tvm\n"
        "from hwkd.threads import pin_tvm_pool, size_tvm_pool\n"
        "size_tvm_pool()\n"
        "pin_tvm_pool(2)\n"
        "me = threading.get_native_id()\n"
        "def cores(task):\n"
        "    line = [l for l in open(f'/proc/self/task/{task}/status') if l.startswith('Cpus_allowed_list')][0]\n"
        "    return line.split()[1]\n"
        "print(tvm.get_global_func('runtime.NumThreads')(), cores(me), "
        "' '.join(cores(t) for t in os.listdir('/proc/self/task') if int(t) != me))\n"
    )
    threads, mine, *others = _fresh_process(script, timeout_s=120).split()
    workers = [c for c in others if c.isdigit()]  # TVM's workers are pinned to one core each
    assert int(threads) == 2
    assert mine.isdigit() and int(mine) in os.sched_getaffinity(0)
    assert workers and mine not in workers


def _fresh_process(script: str, timeout_s: float) -> str:
    """What `script` prints in a new Python process whose TVM pool is sized by hwkd, not the environment."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout_s)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _args(arch: str):
    graph, low = lowered(arch)
    return low, graph.params, graph.input_shape


@pytest.mark.slow
def test_rpc_measurement_through_a_local_server(rpc_server: int, board_file) -> None:
    board = load_profile(board_file(rpc_server))
    assert cross_compiler(board) is None  # same architecture: the native compiler links it
    low, params, shape = _args(SMALL)
    remote = measure_rpc(low, params, shape, board, FAST)
    local = measure_local(low, params, shape, load_profile("host"), FAST)
    assert remote.where == f"rpc 127.0.0.1:{rpc_server}"
    # the same library on the same machine: timings through RPC match local ones
    assert 0.3 < remote.latency_ms / local.latency_ms < 3


def test_unreachable_rpc_server_fails_fast_with_one_line(board_file) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    board = load_profile(board_file(port))
    start = time.monotonic()
    with pytest.raises(MeasureError) as info:
        measure_rpc(*_args(SMALL), board, FAST)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "tvm.exec.rpc_server" in message and "\n" not in message


def test_arm_boards_are_linked_with_the_cross_compiler() -> None:
    assert cross_compiler(load_profile("rpi4")) == "aarch64-linux-gnu-gcc"
    assert cross_compiler(load_profile("host")) is None
