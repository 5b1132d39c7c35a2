"""hwkd's generic CPU schedule for fused TVM kernels.

TVM 0.27's default CPU pipeline compiles untuned loop nests: one thread, every intermediate
(padding, bias add, ReLU) written to its own buffer. Tuning (MetaSchedule) needs the real board.
This schedule is the middle ground every fused kernel gets, and the cost model is written for it:

- injective producers are inlined into their consumer, except padding, which gets its own
  parallel loop (see `_is_padding`);
- the anchor block (the reduction: conv, matmul, pooling, mean) runs its spatial loops but the
  innermost outside, then the reduction loops, then the innermost spatial loop, which is
  vectorized; the outer spatial loops are fused and run in parallel over the thread pool;
- elementwise epilogues (bias, ReLU, residual add) are computed inside the same parallel loop,
  right after the anchor produced that slice, and vectorized;
- blocks without a reduction are parallel over their outer loops and vectorized inside.

Each kernel falls back to simpler variants when a step does not apply, and finally to TVM's own
untuned loop nest; `KernelSchedule.strategy` records which one was used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwkd.errors import error_line

log = logging.getLogger(__name__)

SPATIAL = 0  # tvm IterVar.DataPar
REDUCE = 2  # tvm IterVar.CommReduce


@dataclass(frozen=True)
class KernelSchedule:
    func: Any  # tvm.tirx.PrimFunc
    strategy: str  # "anchored", "per-block" or "default"


def schedule_primfunc(func: Any) -> KernelSchedule:
    """Apply the first strategy that succeeds to one fused PrimFunc."""
    from tvm import s_tir

    strategies: list[tuple[str, Callable[[Any], None]]] = [
        ("anchored", _anchored),
        ("per-block", _per_block),
    ]
    for name, apply in strategies:
        sch = s_tir.Schedule(func)
        try:
            apply(sch)
        except Exception as exc:  # noqa: BLE001 - a failed primitive only means: try the next strategy
            log.debug("schedule %s failed: %s", name, error_line(exc, first=True))
            continue
        return KernelSchedule(sch.mod["main"], name)
    return KernelSchedule(func, "default")


def schedule_module(mod: Any) -> Any:
    """A copy of a fused IRModule with every PrimFunc scheduled."""
    import tvm
    from tvm import tirx

    funcs = {
        gv: (schedule_primfunc(f).func if isinstance(f, tirx.PrimFunc) else f) for gv, f in mod.functions.items()
    }
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


def _vectorize(sch: Any, loop: Any) -> None:
    """Vectorize `loop`, or the largest inner part of it that divides it and has <= MAX_VECTOR."""
    extent = int(sch.get(loop).extent)
    if extent <= MAX_VECTOR:
        sch.vectorize(loop)
        return
    width = max(d for d in range(1, MAX_VECTOR + 1) if extent % d == 0)
    if width < 4:
        return  # nothing worth vectorizing: stays a scalar loop
    _, inner = sch.split(loop, [None, width])
    sch.vectorize(inner)


def _parallel_vector(sch: Any, spatial: list[Any]) -> Any | None:
    """Fuse and parallelize all spatial loops but the innermost, vectorize the innermost."""
    outer = None
    if len(spatial) > 1:
        outer = sch.fuse(*spatial[:-1])
        sch.parallel(outer)
    if spatial:
        _vectorize(sch, spatial[-1])
    return outer


def _anchored(sch: Any) -> None:
    _inline_injective(sch)
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    anchors = [b for b in blocks if _is_reduction(sch, b)]
    if len(anchors) != 1:
        raise ValueError(f"{len(anchors)} reduction blocks; anchored needs exactly one")
    anchor = anchors[0]
    spatial, reduction = _split_loops(sch, anchor)
    if len(spatial) < 2:
        raise ValueError("no outer spatial loop to parallelize")
    sch.reorder(*spatial[:-1], *reduction, spatial[-1])
    outer = sch.fuse(*spatial[:-1])
    sch.parallel(outer)
    _vectorize(sch, spatial[-1])
    anchor_name = sch.get(anchor).name_hint
    after = False
    for block in sch.get_child_blocks(root):
        name = sch.get(block).name_hint
        if name == anchor_name:
            after = True
            continue
        if not after:
            if _is_reduction(sch, block):
                raise ValueError(f"reduction block {name} runs before the anchor")
            _parallel_vector(sch, _split_loops(sch, block)[0])  # e.g. padding: its own parallel loop
            continue
        sch.reverse_compute_at(block, outer)
        _vectorize(sch, sch.get_loops(block)[-1])
    # The accumulator's zeroing moves out of the reduction loops, so no branch runs per step.
    sch.decompose_reduction(anchor, reduction[0])


def _per_block(sch: Any) -> None:
    _inline_injective(sch)
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        spatial, reduction = _split_loops(sch, block)
        if reduction and spatial:
            sch.reorder(*spatial[:-1], *reduction, spatial[-1])
        _parallel_vector(sch, spatial)
