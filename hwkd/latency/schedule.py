"""hwkd's generic CPU schedule for fused TVM kernels.

TVM 0.27's default CPU pipeline compiles untuned loop nests: one thread, every intermediate
(padding, bias add, ReLU) written to its own buffer. Tuning (MetaSchedule) needs the real board.
This schedule is the middle ground every fused kernel gets, and the cost model is written for it:

- dense and 1x1 convolutions are register-tiled (`_register_tiled`): a tile of output channels x
  rows x columns accumulates in vector registers over the whole reduction; in the channel-blocked
  layout (`Lowerer(blocked=True)`, `hwkd.latency.blocked_layout`) a tile of pixels x blocks of
  channels, a vector each, does (`_blocked_tiled`);
- injective producers are inlined into their consumer, except padding, which gets its own
  parallel loop (see `_is_padding`), or before a depthwise convolution or pooling whose padded
  plane fits in L1, is written one channel at a time inside the kernel's parallel loop
  (`_anchored_per_channel`);
- otherwise the anchor block (the reduction: depthwise conv, matmul, pooling, mean) runs its
  spatial loops but the innermost outside, then the reduction loops, then the innermost spatial
  loop, which is vectorized; the outer spatial loops are fused and run in parallel over the thread pool
  (before a stride-2 one, the padded input keeps its even and odd columns apart, so the vectorized
  row reads contiguous runs: `_deinterleave_padding`);
- elementwise epilogues (bias, ReLU, residual add) are computed inside the same parallel loop,
  right after the anchor produced that slice, and vectorized;
- blocks without a reduction are parallel over their outer loops and vectorized inside.

Each kernel falls back to simpler variants when a step does not apply, and finally to TVM's own
untuned loop nest; `KernelSchedule.strategy` records which one was used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hwkd.errors import error_line

log = logging.getLogger(__name__)

SPATIAL = 0  # tvm IterVar.DataPar
REDUCE = 2  # tvm IterVar.CommReduce


@dataclass(frozen=True)
class KernelSchedule:
    func: Any  # tvm.tirx.PrimFunc
    strategy: str  # "tiled", "anchored", "per-block" or "default"


@dataclass(frozen=True)
class Knobs:
    """The choices a variant of the schedule makes differently; the defaults are hwkd's schedule."""

    tile_rank: int = 0  # which tile of `conv_tiles`' ranking a tiled convolution uses
    lanes: int = 0  # vectorize at most this many elements at a time (0: `_vectorize`'s rule)


@dataclass(frozen=True)
class RegisterTile:
    """How much of the vector register file one tile of accumulators may fill.

    `tile_floats` accumulators in rows of `vector_floats`-float vectors (a row that is not a multiple
    of it is padded to whole vectors in registers). The default, 96 floats in rows of 8, is 12 of
    AVX2's 16 registers and 24 of NEON's 32 (a row of 8 is two NEON registers), which leaves room for
    the loaded inputs and weights on both.
    """

    vector_floats: int = 8
    tile_floats: int = 96
    # vectors of accumulators in a tile of a channel-blocked convolution (`_blocked_tiled`), where
    # each holds a pixel's block of channels and the tile's other operands are one broadcast input
    # and a weight vector per channel block: 12 of AVX2's 16 registers
    blocked_accumulators: int = 12
    vector_registers: int = 16  # the register file, in vectors of `vector_floats`


def register_tile(simd_bits: int) -> RegisterTile:
    """The tile for a CPU whose vector registers hold `simd_bits` (the profile's `cpu.simd_bits`).

    AVX-512's 32 registers of 16 floats take rows of 16 and twice the accumulators: rows of 8 compiled
    to 256-bit instructions, half of the machine, and its 1x1 convolutions ran at ~40 % of its peak.
    On the 2-core AVX-512 VM, whole libraries (benchmarks/runtimes.py's students): 192 floats in rows
    of 16 were 1-21 % faster than 96 in rows of 8; 256 and 384 floats no faster than 192.
    """
    if simd_bits >= 512:
        # 24 of AVX-512's 32 registers (whole blocked libraries against 12: nb201 all 3x3 8 % faster,
        # fbnet k3_e6 2 % faster, k5_e6 3 % slower, one run each; 28: no better)
        return RegisterTile(vector_floats=16, tile_floats=192, blocked_accumulators=24, vector_registers=32)
    return RegisterTile()


def _strategies(knobs: Knobs, registers: RegisterTile) -> list[tuple[str, Callable[[Any], None]]]:
    return [
        ("blocked", lambda sch: _blocked_tiled(sch, knobs, registers)),
        ("tiled", lambda sch: _register_tiled(sch, knobs, registers)),
        ("anchored", lambda sch: _anchored(sch, knobs)),
        ("per-block", lambda sch: _per_block(sch, knobs)),
    ]


def _apply(func: Any, name: str, apply: Callable[[Any], None]) -> Any | None:
    """A traced schedule of `func` with `apply` done, or None when a primitive refused it."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    try:
        apply(sch)
    except Exception as exc:  # noqa: BLE001 - a failed primitive only means: try something else
        log.debug("schedule %s failed: %s", name, error_line(exc, first=True))
        return None
    return sch


def schedule_primfunc(func: Any, registers: RegisterTile = RegisterTile()) -> KernelSchedule:
    """Apply the first strategy that succeeds to one fused PrimFunc, for a CPU of `registers`
    (`register_tile`; the default suits AVX2 and NEON)."""
    for name, apply in _strategies(Knobs(), registers):
        sch = _apply(func, name, apply)
        if sch is not None:
            return KernelSchedule(sch.mod["main"], name)
    return KernelSchedule(func, "default")


# Variants tried by tuning (hwkd.latency.tuning), after the default: the next-ranked tiles, the
# other strategy for a convolution, and shorter vectors (a row of 56 or 112 measured up to 3x
# faster in 8 or 16 lanes on some kernels and slower on others; only a measurement tells).
VARIANT_KNOBS = (Knobs(tile_rank=1), Knobs(tile_rank=2), Knobs(tile_rank=3), Knobs(lanes=8), Knobs(lanes=16),
                 Knobs(tile_rank=1, lanes=8))


def schedule_variants(func: Any, limit: int = 1 + len(VARIANT_KNOBS),
                      registers: RegisterTile = RegisterTile()) -> list[tuple[str, Any]]:
    """Distinct traced schedules of `func` for tuning to measure, hwkd's default first, each with a
    label that says what it changed: at most `limit`."""
    import tvm_ffi

    variants: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def add(label: str, sch: Any | None) -> None:
        if sch is None or len(variants) >= limit:
            return
        key = tvm_ffi.structural_hash(sch.mod["main"], map_free_vars=True)
        if key not in seen:
            seen.add(key)
            variants.append((label, sch))

    default = schedule_primfunc(func, registers).strategy
    for knobs in (Knobs(), *VARIANT_KNOBS):
        for name, apply in _strategies(knobs, registers):
            if name == default or (default == "tiled" and name == "anchored" and knobs == Knobs()):
                add(_label(name, knobs), _apply(func, name, apply))
    return variants


def _label(strategy: str, knobs: Knobs) -> str:
    parts = [strategy] + [f"{k}={v}" for k, v in vars(knobs).items() if v]
    return " ".join(parts)


def schedule_module(mod: Any, tuned: Mapping[str, Any] | None = None, registers: RegisterTile = RegisterTile()) -> Any:
    """A copy of a fused IRModule with every PrimFunc scheduled: by hwkd's schedule for `registers`,
    or for a kernel named in `tuned`, by its tuned PrimFunc (which is renamed back to the kernel's
    symbol)."""
    import tvm
    from tvm import tirx

    tuned = tuned or {}

    def scheduled(name: str, func: Any) -> Any:
        if name in tuned:
            attrs = func.attrs or {}
            if "global_symbol" in attrs:
                return tuned[name].with_attr("global_symbol", attrs["global_symbol"])
            return tuned[name].without_attr("global_symbol")
        return schedule_primfunc(func, registers).func

    funcs = {gv: (scheduled(gv.name_hint, f) if isinstance(f, tirx.PrimFunc) else f) for gv, f in mod.functions.items()}
    return tvm.IRModule(funcs, attrs=mod.attrs)


def _inline_injective(sch: Any) -> None:
    root = sch.get_sblock("root")
    for inline in (sch.compute_inline, sch.reverse_compute_inline):
        progress = True
        while progress:
            progress = False
            for block in sch.get_child_blocks(root):
                if _is_reduction(sch, block) or _is_padding(sch, block):
                    continue
                try:
                    inline(block)
                except Exception:  # noqa: BLE001 - not inlinable: keep the block
                    continue
                progress = True
                break


def _is_padding(sch: Any, block: Any) -> bool:
    """A block that copies its input or writes zero at the border (`if_then_else` on indices).

    Padding stays a block of its own: inlined into a convolution it puts a condition in the
    vectorized loop, which LLVM turns into masked loads for some row widths and into scalar code
    for others (a 13x slowdown measured for 16-wide rows).
    """
    value = getattr(sch.get(block).body, "value", None)
    op = getattr(value, "op", None)
    return str(getattr(op, "name", "")).endswith("if_then_else")


def _is_reduction(sch: Any, block: Any) -> bool:
    return any(int(iv.iter_type) == REDUCE for iv in sch.get(block).iter_vars)


def _split_loops(sch: Any, block: Any) -> tuple[list[Any], list[Any]]:
    """The block's loops as (spatial, reduction); raises if loops and block vars do not match 1:1."""
    loops = sch.get_loops(block)
    kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
    if len(loops) != len(kinds) or any(k not in (SPATIAL, REDUCE) for k in kinds):
        raise ValueError("loops do not map one to one onto block variables")
    spatial = [loop for loop, k in zip(loops, kinds) if k == SPATIAL]
    reduction = [loop for loop, k in zip(loops, kinds) if k == REDUCE]
    return spatial, reduction


MAX_VECTOR = 64  # elements; wider vectors make LLVM's code generation crawl (minutes for 1504)
# A longer loop is split into vectors of at most this many: a 112x112 depthwise convolution ran
# 1.19 ms as 2 x 56 lanes and 0.31 ms as 7 x 16 (fbnet-imagenet, 2 threads, each kernel alone),
# while depthwise rows of 28 or 56 ran 1.2-1.9x slower split into 16 or 8, so shorter loops stay whole.
SPLIT_VECTOR = 16


def _vectorize(sch: Any, loop: Any, lanes: int = 0) -> None:
    """Vectorize `loop` when it has at most MAX_VECTOR elements, else the largest inner part of it
    that divides it and has at most SPLIT_VECTOR (`lanes`, when given, replaces both limits)."""
    extent = int(sch.get(loop).extent)
    if extent <= (lanes or MAX_VECTOR):
        sch.vectorize(loop)
        return
    width = max(d for d in range(1, (lanes or SPLIT_VECTOR) + 1) if extent % d == 0)
    if width < 4:
        return  # nothing worth vectorizing: stays a scalar loop
    _, inner = sch.split(loop, [None, width])
    sch.vectorize(inner)


def _parallel_vector(sch: Any, spatial: list[Any], lanes: int = 0) -> Any | None:
    """Fuse and parallelize all spatial loops but the innermost, vectorize the innermost."""
    outer = None
    if len(spatial) > 1:
        outer = sch.fuse(*spatial[:-1])
        sch.parallel(outer)
    if spatial:
        _vectorize(sch, spatial[-1], lanes)
    return outer


def _anchor(sch: Any, strategy: str) -> tuple[Any, Any]:
    """Inline the injective blocks and return (root, the one reduction block left)."""
    _inline_injective(sch)
    root = sch.get_sblock("root")
    anchors = [b for b in sch.get_child_blocks(root) if _is_reduction(sch, b)]
    if len(anchors) != 1:
        raise ValueError(f"{len(anchors)} reduction blocks; {strategy} needs exactly one")
    return root, anchors[0]


def _parallel_producers(sch: Any, root: Any, anchor_name: str, lanes: int = 0) -> None:
    """The blocks before the anchor (e.g. padding) each get their own parallel, vectorized loop."""
    for block in _blocks_before(sch, root, anchor_name):
        if _is_reduction(sch, block):
            raise ValueError(f"reduction block {sch.get(block).name_hint} runs before the anchor")
        _parallel_vector(sch, _split_loops(sch, block)[0], lanes)


def _deinterleave_padding(sch: Any, root: Any, anchor: Any) -> None:
    """Before a stride-2 convolution, store the padded input's even and odd columns apart.

    Neighbouring output columns of a stride-2 convolution read every other input column, so its
    vectorized row is a gather, one scalar load per lane (a depthwise 3x3 convolution from 96x112x112
    to 56x56 ran 1.29 ms alone, against 0.095 ms in ONNX Runtime). The padding block already copies
    the input; written as (..., column % 2, column // 2), each filter column's reads become one
    contiguous run: the same kernel ran 0.28 ms, and the strided padding copy pays the gather once
    per element instead of once per filter tap.
    """
    if _column_stride(sch, anchor) != 2:
        return
    for block in _blocks_before(sch, root, sch.get(anchor).name_hint):
        written = sch.get(block).writes[0].source
        if not _is_padding(sch, block) or len(written.shape) != 4 or int(written.shape[3]) % 2:
            continue
        sch.transform_layout(block, ("write", 0), _by_parity)
        # the copy then runs in the new layout's order: it writes whole rows of one parity
        sch.transform_block_layout(block, _by_parity)


def _by_parity(n: Any, c: Any, h: Any, w: Any) -> tuple[Any, ...]:
    """A padded input's index with its columns split into even and odd halves."""
    return n, c, h, w % 2, w // 2


def _anchored(sch: Any, knobs: Knobs = Knobs()) -> None:
    root, anchor = _anchor(sch, "anchored")
    _deinterleave_padding(sch, root, anchor)
    spatial, reduction = _split_loops(sch, anchor)
    if len(spatial) < 2:
        raise ValueError("no outer spatial loop to parallelize")
    if _pads_per_channel(sch, root, anchor, spatial, reduction):
        _anchored_per_channel(sch, root, anchor, spatial, reduction, knobs)
        return
    sch.reorder(*spatial[:-1], *reduction, spatial[-1])
    outer = sch.fuse(*spatial[:-1])
    sch.parallel(outer)
    _vectorize(sch, spatial[-1], knobs.lanes)
    anchor_name = sch.get(anchor).name_hint
    _parallel_producers(sch, root, anchor_name, knobs.lanes)
    for block in _blocks_after(sch, root, anchor_name):
        sch.reverse_compute_at(block, outer)
        _vectorize(sch, sch.get_loops(block)[-1], knobs.lanes)
    # The accumulator's zeroing moves out of the reduction loops, so no branch runs per step.
    sch.decompose_reduction(anchor, reduction[0])


# A padded input plane of at most this many bytes is padded one channel at a time (half of the
# smallest L1 data cache of the profiles, the Cortex-A72's 32 KiB).
CHANNEL_PAD_BYTES = 16 * 1024


def _pads_per_channel(sch: Any, root: Any, anchor: Any, spatial: list[Any], reduction: list[Any]) -> bool:
    """Whether the anchor reads one input channel per output channel (a depthwise convolution,
    pooling) and every block before it is padding of a plane within CHANNEL_PAD_BYTES."""
    if len(spatial) != 4 or len(reduction) not in (2, 3) or len(reduction) == 3 and int(
            sch.get(reduction[0]).extent) != 1:
        return False
    before = _blocks_before(sch, root, sch.get(anchor).name_hint)
    for block in before:
        if not _is_padding(sch, block):
            return False
        shape = [int(d) for d in sch.get(block).writes[0].source.shape]
        if len(shape) < 4 or 4 * math.prod(shape[2:]) > CHANNEL_PAD_BYTES:
            return False
    return bool(before)


def _anchored_per_channel(sch: Any, root: Any, anchor: Any, spatial: list[Any], reduction: list[Any],
                          knobs: Knobs) -> None:
    """The anchored schedule, parallel over (batch, channel), each channel's padded plane written
    just before its rows are computed.

    Padded whole, a depthwise convolution's input went to a buffer the size of the image, written
    in one parallel loop and read back in the next: in a student, that buffer has left the caches
    since the last inference, and each core read half of it from the other's. One channel's plane
    stays in L1 between its copy and its reads. Alone, on the 2-core AVX-512 VM, 13 of fbnet's and
    fbnet-imagenet's depthwise kernels ran 1.02-2.1x faster, median 1.35x (3x3 and 5x5, stride 1
    and 2, 4x4 to 56x56 images); 112x112 planes (52 KB, beyond L1) ran 1.1-1.2x slower and keep
    the whole copy. With a channel multiplier, a plane is written once per output channel reading it.
    """
    batch, channel, row, column = spatial
    sch.reorder(batch, channel, row, *reduction, column)
    outer = sch.fuse(batch, channel)
    sch.parallel(outer)
    _vectorize(sch, column, knobs.lanes)
    anchor_name = sch.get(anchor).name_hint
    for block in _blocks_before(sch, root, anchor_name):
        sch.compute_at(block, outer)
        _vectorize(sch, sch.get_loops(block)[-1], knobs.lanes)
    for block in _blocks_after(sch, root, anchor_name):
        sch.reverse_compute_at(block, row)
        _vectorize(sch, sch.get_loops(block)[-1], knobs.lanes)
    sch.decompose_reduction(anchor, reduction[0])


def _per_block(sch: Any, knobs: Knobs = Knobs()) -> None:
    _inline_injective(sch)
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        spatial, reduction = _split_loops(sch, block)
        spatial = _writing_rows_last(sch, block, spatial)
        if reduction and spatial:
            sch.reorder(*spatial[:-1], *reduction, spatial[-1])
        _parallel_vector(sch, spatial, knobs.lanes)


def _writing_rows_last(sch: Any, block: Any, spatial: list[Any]) -> list[Any]:
    """For a layout transform, `spatial` reordered so that the loop over the written buffer's last
    axis is innermost (the vectorized one), when another loop was.

    TVM's layout transforms loop over their input's axes, so into or out of the channel-blocked
    layout the vectorized loop wrote every 16th element: a scatter, one store per lane. Written row
    by row instead, the reads are the strided ones (a gather, which the cost model counts).
    """
    from tvm import tirx

    stmt = sch.get(block)
    if not stmt.name_hint.startswith("te_layout_transform"):
        return spatial
    last = stmt.writes[0].region[-1].min if stmt.writes else None
    lanes = 0
    if isinstance(last, tirx.FloorMod) and isinstance(last.b, tirx.IntImm):  # into blocks: (c % 16)
        last, lanes = last.a, int(last.b.value)
    variables = [iv.var for iv in stmt.iter_vars]
    where = [i for i, v in enumerate(variables) if last is not None and last.same_as(v)]
    if not where or len(spatial) != len(variables) or where[0] == len(spatial) - 1 and not lanes:
        return spatial
    loop = spatial[where[0]]
    rest = [other for i, other in enumerate(spatial) if i != where[0]]
    if lanes:
        if int(sch.get(loop).extent) % lanes:
            return spatial
        outer, loop = sch.split(loop, [None, lanes])
        rest.insert(where[0], outer)
    sch.reorder(*rest, loop)
    return [*rest, loop]


# --- register-tiled convolutions ------------------------------------------------------------------

MAX_ROW = 32  # floats of one output row in a tile
# A 1x1 convolution's image rows shorter than this are flattened into one row (a matrix product);
# wider ones measured up to 6x slower flattened (14-float tiles on 14x14 and 28x28 images; 12
# channels x 8 floats at 56x56). Rows that divide a vector are flattened too (`_flattens`).
FLATTEN_BELOW = 8


def _flattens(width: int, registers: RegisterTile) -> bool:
    """Whether a unit-stride 1x1 convolution on images `width` floats wide runs as a matrix product
    over the flattened image: rows below FLATTEN_BELOW, and rows that pack whole into a vector (8-wide
    images in AVX-512's 16 lanes: 1.5-1.6x faster alone on fbnet-imagenet-sized 8x8 kernels than a
    half-empty vector per row)."""
    lanes = registers.vector_floats
    return width < FLATTEN_BELOW or width < lanes and lanes % width == 0


@dataclass(frozen=True)
class ConvTile:
    channels: int  # output channels per tile
    rows: int  # output rows per tile
    row_floats: int  # output columns per tile row (the vectorized loop)


def conv_tile(channels: int, height: int, width: int, column_stride: int = 1, image_width: int = 0,
              registers: RegisterTile = RegisterTile()) -> ConvTile:
    """The tile that does the most multiply-adds per load within `registers.tile_floats` accumulators."""
    return conv_tiles(channels, height, width, column_stride, image_width, registers)[0]


def conv_tiles(channels: int, height: int, width: int, column_stride: int = 1, image_width: int = 0,
               registers: RegisterTile = RegisterTile()) -> list[ConvTile]:
    """Every tile within `registers.tile_floats` accumulators, the most multiply-adds per load first.

    Per reduction step a tile of c channels x r rows x w columns loads r * ceil(w / v) input
    vectors (v: `registers.vector_floats`) and c weights (broadcast), and does c * r * ceil(w / v)
    vector multiply-adds, of which w / (v * ceil(w / v)) is useful work. A strided convolution's
    input row is not contiguous: it is gathered, w element loads per row, so its tiles favor
    channels, which share those loads. Only divisors are tried: a partial tile would put a
    condition in the vectorized loop.
    `image_width`: the row is a flattened image of that width, and a tile covers whole image rows
    or a part of one, so that what it computes is a rectangle of the image (the epilogue's region),
    in whole vectors or at most one: accumulators of 28 or 49 floats (16 + 12, 3 x 16 + 1 lanes)
    compiled to element-by-element inserts and stack spills, 25x and 17x slower than 14- and
    7-float tiles.
    """
    ranked: list[tuple[float, int, ConvTile]] = []
    lanes, budget = registers.vector_floats, registers.tile_floats
    for w in _divisors(width, MAX_ROW):
        if image_width and (w % image_width and image_width % w or w > lanes and w % lanes):
            continue
        vectors = -(-w // lanes)
        row_loads = vectors if column_stride == 1 else w
        for r in _divisors(height, budget // (vectors * lanes)):
            for c in _divisors(channels, budget // (r * vectors * lanes)):
                fmas = c * r * vectors
                useful = fmas * w / (vectors * lanes)
                score = useful / max(fmas, r * row_loads + c)  # two FMAs and two loads issue per cycle
                ranked.append((score, c * r * w, ConvTile(c, r, w)))
    # stable: among equals the first found (fewest columns, rows, channels) stays first
    return [tile for *_, tile in sorted(ranked, key=lambda k: (-k[0], -k[1]))]


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, max(limit, 1)) + 1) if n % d == 0]


_CONV_BLOCKS = ("conv2d_nchw", "group_conv2d_nchw", "depthwise_conv2d_nchw", "DepthwiseConv2d")


def _register_tiled(sch: Any, knobs: Knobs = Knobs(), registers: RegisterTile = RegisterTile()) -> None:
    """Convolutions: a tile of output channels x rows x columns accumulates in registers over the
    whole reduction, then the epilogue (bias, ReLU, residual add) runs on it before it is stored.

    Loop order: parallel(batch, row tiles, channel tiles), column tiles, reduction (channels,
    kernel rows, kernel columns), then the tile: channels and rows unrolled, columns vectorized.
    Rows before channels: the thread pool splits the parallel loop into contiguous ranges, so each
    thread computes a band of rows with all their channels, the band the next tiled convolution
    reads from it (a 1x1 convolution reads every channel of its pixels): activations stay in the
    core that wrote them. Channels first, a thread read half of its input from the other core's
    cache; on the 2-core AVX-512 VM, whole libraries ran 5-19 % faster with rows first.
    """
    root, anchor = _anchor(sch, "tiled")
    name = sch.get(anchor).name_hint
    if not name.startswith(_CONV_BLOCKS):
        raise ValueError(f"{name} is not a 2-d convolution")
    spatial, reduction = _split_loops(sch, anchor)
    if len(spatial) != 4 or len(reduction) not in (2, 3):
        raise ValueError("not an NCHW convolution")
    if len(reduction) == 2 or int(sch.get(reduction[0]).extent) == 1 and "group" in name:
        # Depthwise: no input is shared between output channels, so a tile only adds the overhead
        # of its accumulator copy; the anchored schedule measured 1.1-1.6x faster on fbnet's
        # (one thread, each kernel alone).
        raise ValueError("a depthwise convolution: anchored is faster")
    batch, channel, row, column = spatial
    column_stride = _column_stride(sch, anchor)  # read off the block's own axes, before flattening them
    image_width = 0
    width = int(sch.get(column).extent)
    if _flattens(width, registers) and _is_unit_stride_pointwise(sch, anchor, reduction):
        # a matrix product over the channels: the image is one row, so short rows fill vectors. The
        # block itself gets one pixel axis, so its indices are linear in it (fused row and column
        # loops leave (p // width, p % width) in them; alone, with the same tile, both compiled to
        # equally fast code on 8x8 images)
        image_width = width
        sch.transform_block_layout(anchor, lambda n, c, h, w, rc, ry, rx: (n, c, h * width + w, rc, ry, rx))
        batch, channel, column, *reduction = sch.get_loops(anchor)
        row = sch.add_unit_loop(column)
    channels, rows, columns = (int(sch.get(loop).extent) for loop in (channel, row, column))
    tiles = conv_tiles(channels, rows, columns, column_stride, image_width, registers)
    if knobs.tile_rank >= len(tiles):
        raise ValueError(f"no tile of rank {knobs.tile_rank}: {len(tiles)} tiles fit")
    tile = tiles[knobs.tile_rank]
    c_outer, c_inner = sch.split(channel, [None, tile.channels])
    r_outer, r_inner = sch.split(row, [None, tile.rows])
    w_outer, w_inner = sch.split(column, [None, tile.row_floats])
    sch.reorder(batch, r_outer, c_outer, w_outer, *reduction, c_inner, r_inner, w_inner)
    accumulator = sch.cache_write(anchor, 0, "local")
    epilogue = _blocks_after(sch, root, sch.get(accumulator).name_hint)
    if epilogue:
        sch.compute_inline(accumulator)  # the epilogue reads the registers directly
    else:
        epilogue = [accumulator]
    _parallel_producers(sch, root, name, knobs.lanes)
    for block in epilogue:
        sch.reverse_compute_at(block, w_outer)
        _vectorize(sch, sch.get_loops(block)[-1], knobs.lanes)
    sch.parallel(sch.fuse(batch, r_outer, c_outer))
    sch.unroll(c_inner)
    sch.unroll(r_inner)
    sch.vectorize(w_inner)
    init = sch.decompose_reduction(anchor, reduction[0])
    sch.vectorize(sch.get_loops(init)[-1])


def _is_unit_stride_pointwise(sch: Any, block: Any, reduction: list[Any]) -> bool:
    """A 1x1 convolution, stride 1, no padding: output pixel (y, x) reads input pixel (y, x), so the
    image can be flattened into one row."""
    if len(reduction) != 3 or any(int(sch.get(loop).extent) != 1 for loop in reduction[1:]):
        return False
    stmt = sch.get(block)
    written = stmt.writes[0].source
    data = _data_reads(stmt)
    return bool(data) and all(
        [int(d) for d in read.source.shape[2:]] == [int(d) for d in written.shape[2:]]
        and _input_stride(stmt, read, 2) == 1 and _input_stride(stmt, read, 3) == 1 for read in data)


def _data_reads(stmt: Any) -> list[Any]:
    """A convolution block's reads of its input image: not the weights (indexed by the output
    channel first), not its own accumulator."""
    written = stmt.writes[0].source
    out_channel = stmt.iter_vars[1].var
    return [r for r in stmt.reads if not r.source.same_as(written) and len(r.region) == 4
            and not r.region[0].min.same_as(out_channel)]


def _input_stride(stmt: Any, read: Any, axis: int) -> int:
    """How many input rows (axis 2) or columns (axis 3) apart neighbouring outputs read."""
    from tvm.sym import detect_linear_equation

    coefficients = detect_linear_equation(read.region[axis].min, [stmt.iter_vars[axis].var])
    return abs(int(coefficients[0])) if coefficients else 0


def _column_stride(sch: Any, block: Any) -> int:
    """How many input columns apart two neighbouring output columns read (a convolution's stride)."""
    stmt = sch.get(block)
    return max((_input_stride(stmt, read, 3) for read in _data_reads(stmt)), default=1)


def _blocks_after(sch: Any, root: Any, name: str) -> list[Any]:
    blocks = sch.get_child_blocks(root)
    names = [sch.get(b).name_hint for b in blocks]
    return blocks[names.index(name) + 1:]


def _blocks_before(sch: Any, root: Any, name: str) -> list[Any]:
    blocks = sch.get_child_blocks(root)
    names = [sch.get(b).name_hint for b in blocks]
    return blocks[:names.index(name)]


# --- convolutions in the channel-blocked layout (hwkd.latency.blocked_layout) ---------------------

_BLOCKED_CONVS = ("conv2d_blocked", "depthwise_conv2d_blocked")  # hwkd.latency.blocked_layout's blocks
MAX_BLOCKED_PIXELS = 8  # output pixels of one row in a tile
# A depthwise convolution computes a band of up to this many output rows per parallel step, as long
# as the parallel loop keeps PARALLEL_STEPS steps for the threads to share.
DEPTHWISE_BAND_ROWS = 8
PARALLEL_STEPS = 16


def blocked_tiles(blocks: int, rows: int, columns: int, accumulators: int,
                  vector_registers: int = RegisterTile.vector_registers) -> list[tuple[int, int, int]]:
    """(channel blocks, rows, columns) tiles of a blocked convolution within `accumulators` vectors.

    A tile's accumulators, its weight vectors and its broadcast inputs must fit in the register file
    together: LLVM loads a reduction step's operands ahead of its multiply-adds, and a tile that
    needs more registers kept its accumulators on the stack, storing and reloading every one of
    them each step (3 blocks x 8 pixels on AVX-512: 24 + 3 + 8 = 35 of 32 registers). Dropping
    those tiles took the blocked 1x1 convolutions of runtimes.py's students from 602 vector stores
    to the stack to none (AVX2: 366 to 112), and their whole blocked libraries to 0.88x (fbnet k3_e6),
    0.87x (k5_e6) and 0.92x (fbnet-imagenet) the time; nb201's and fbnet k3_e1's 0.99-1.01x (2
    threads, AVX-512 VM, old and new alternating in one process, nothing else running).

    A reduction step loads one weight vector per channel block and broadcasts one input per pixel,
    and a core issues two loads and two multiply-adds per cycle: tiles whose loads do not outnumber
    their multiply-adds come first, then those that use each weight for the most pixels (weights
    are the larger operand of a convolution of many channels on a small image), then the largest,
    then the widest (neighbouring pixels share cache lines).
    """
    ranked = []
    for w in _divisors(columns, MAX_BLOCKED_PIXELS):
        for r in _divisors(rows, accumulators // w):
            for k in _divisors(blocks, accumulators // (w * r)):
                fmas = k * r * w
                if fmas + k + r * w > vector_registers:
                    continue
                ranked.append((fmas / max(fmas, k + r * w), r * w, fmas, w, (k, r, w)))
    return [tile for *_, tile in sorted(ranked, key=lambda t: (-t[0], -t[1], -t[2], -t[3]))]


def _weights_outweigh_input(sch: Any, spatial: list[Any], reduction: list[Any]) -> bool:
    """Whether a blocked 1x1 convolution reads at least twice as much weight as input: both scale
    with its input channels, the weights with the output channels, the input with the output
    pixels (strides aside). Loops as `_split_loops` gives them: (batch, block, row, column, lane)
    and (input block, kernel row, kernel column, input lane).

    Its threads then take channel-block tiles first, each reading its own share of the weights,
    which stay in L1 across a tile's rows (as ONNX Runtime's NCHWc convolution splits its work):
    fbnet k3_e6, k5_e6, k3_e1, a mixed one and fbnet-imagenet k3_e6 ran 0.957, 0.961, 0.984, 0.966
    and 0.970x as long (whole blocked libraries, 2 threads, AVX-512 VM, alternating, quiet). At
    equal weights and input, nb201's 64-channel 1x1 cells at 8x8 ran 1.05x as long, and with its
    3x3 convolutions blocks first nb201's all-3x3 student 1.02-1.03x: those keep rows first."""
    _, blocks, rows, columns, lanes = (int(sch.get(loop).extent) for loop in spatial)
    pointwise = int(sch.get(reduction[1]).extent) * int(sch.get(reduction[2]).extent) == 1
    return pointwise and blocks * lanes >= 2 * rows * columns


def _blocked_tiled(sch: Any, knobs: Knobs = Knobs(), registers: RegisterTile = RegisterTile()) -> None:
    """A convolution of NCHW[b]c tensors: a tile of pixels (x channel blocks, for a dense one)
    accumulates in vector registers of b channels over the whole reduction, then the epilogue runs
    on it, inside the same parallel loop.

    Dense: parallel over (row tiles, channel-block tiles), rows first as in `_register_tiled`, or
    channel-block tiles first for a 1x1 one whose weights are twice its input or more
    (`_weights_outweigh_input`: fbnet's expansions at 8x8 and its 4x4 stage); the padding, if any,
    gets its own parallel loop. Depthwise: parallel over bands of rows of a channel block, each
    band's padded input rows written inside that step, where it reads them. Padded for
    each output row instead, a 3x3 kernel writes every input row three times: in fbnet k3_e6's
    library (2 threads, AVX-512 VM) its depthwise kernels on 8x8 and 4x4 images took 1.6-1.9x as
    long that way, on 32x32 1.05x.
    """
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    if not any(n.startswith(_BLOCKED_CONVS) for n in names):  # before any work: every kernel comes here first
        raise ValueError("no blocked convolution")
    root, anchor = _anchor(sch, "blocked")
    name = sch.get(anchor).name_hint
    if not name.startswith(_BLOCKED_CONVS):
        raise ValueError(f"{name} is not a blocked convolution")
    spatial, reduction = _split_loops(sch, anchor)
    batch, block, row, column, lane = spatial
    accumulators = registers.blocked_accumulators
    if name.startswith("depthwise"):
        # tuning's tile ranks try narrower pixel tiles
        widths = sorted(_divisors(int(sch.get(column).extent), MAX_BLOCKED_PIXELS), reverse=True)
        if knobs.tile_rank >= len(widths):
            raise ValueError(f"no tile of rank {knobs.tile_rank}: {len(widths)} tiles fit")
        c_outer, c_inner = sch.split(column, [None, widths[knobs.tile_rank]])
        # a band of rows per parallel step: its padded input rows are written once for all of them
        blocks, rows = int(sch.get(block).extent), int(sch.get(row).extent)
        band = max(d for d in _divisors(rows, DEPTHWISE_BAND_ROWS) if blocks * rows // d >= PARALLEL_STEPS or d == 1)
        r_outer, r_inner = sch.split(row, [None, band])
        sch.reorder(batch, block, r_outer, r_inner, c_outer, *reduction, c_inner, lane)
        outer = sch.fuse(batch, block, r_outer)
        inner = [c_inner]
        producers_at = outer
    else:
        tiles = blocked_tiles(int(sch.get(block).extent), int(sch.get(row).extent), int(sch.get(column).extent),
                              accumulators, registers.vector_registers)
        if knobs.tile_rank >= len(tiles):
            raise ValueError(f"no tile of rank {knobs.tile_rank}: {len(tiles)} tiles fit")
        k, r, w = tiles[knobs.tile_rank]
        by_blocks = _weights_outweigh_input(sch, spatial, reduction)
        b_outer, b_inner = sch.split(block, [None, k])
        r_outer, r_inner = sch.split(row, [None, r])
        c_outer, c_inner = sch.split(column, [None, w])
        if by_blocks:
            sch.reorder(batch, b_outer, r_outer, c_outer, *reduction, b_inner, r_inner, c_inner, lane)
            outer = sch.fuse(batch, b_outer, r_outer)
        else:
            sch.reorder(batch, r_outer, b_outer, c_outer, *reduction, b_inner, r_inner, c_inner, lane)
            outer = sch.fuse(batch, r_outer, b_outer)
        inner = [b_inner, r_inner, c_inner]
        producers_at = None
    accumulator = sch.cache_write(anchor, 0, "local")
    epilogue = _blocks_after(sch, root, sch.get(accumulator).name_hint)
    if epilogue:
        sch.compute_inline(accumulator)
    else:
        epilogue = [accumulator]
    if producers_at is not None:
        for producer in _blocks_before(sch, root, name):
            sch.compute_at(producer, producers_at)
            _vectorize(sch, sch.get_loops(producer)[-1], knobs.lanes)
    else:
        _parallel_producers(sch, root, name, knobs.lanes)
    for block_ in epilogue:
        sch.reverse_compute_at(block_, c_outer)
        _vectorize(sch, sch.get_loops(block_)[-1], knobs.lanes)
    sch.parallel(outer)
    for loop in inner:
        sch.unroll(loop)
    sch.vectorize(lane)
    init = sch.decompose_reduction(anchor, reduction[0])
    sch.vectorize(sch.get_loops(init)[-1])
