"""Read a scheduled PrimFunc: what kind of kernel it is and each loop body with its context
(how many times it runs, how wide, with which loads and stores), as `LoopBody` records."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hwkd.latency.lowered import LoopBody


def kernel_kind(func: Any) -> str:
    names = " ".join(_block_names(func.body))
    if "depthwise" in names:
        return "depthwise_conv"
    if "group_conv2d" in names:
        return "group_conv"
    if "conv2d" in names:
        return "pointwise_conv" if _conv_window(func.body) == 1 else "conv"
    if "matmul" in names or "dense" in names:
        return "matmul"
    if "pool" in names:
        return "pool"
    if any(n in names for n in ("T_reshape", "T_transpose", "T_strided_slice", "T_concat")):
        return "layout"
    if any(n in names for n in ("_red", "mean", "sum", "max")):
        return "reduce"
    return "elementwise"


def loop_bodies(func: Any) -> list[LoopBody]:
    """Every buffer store of a scheduled PrimFunc with its loop context."""
    bodies: list[LoopBody] = []
    _walk(func.body, [], {}, "", bodies)
    return bodies


# --- walking scheduled TIR ----------------------------------------------------------------

_Loop = tuple[Any, int, int]  # (loop var, extent, ForKind)
_PARALLEL, _VECTORIZED, _UNROLLED = 1, 2, 3


def _walk(stmt: Any, loops: list[_Loop], bindings: dict[Any, Any], block: str, out: list[LoopBody]) -> None:
    from tvm import tirx
    from tvm.s_tir.stmt import SBlockRealize

    if isinstance(stmt, tirx.For):
        extent = _const(stmt.extent)
        _walk(stmt.body, loops + [(stmt.loop_var, extent, int(stmt.kind))], bindings, block, out)
    elif isinstance(stmt, tirx.SeqStmt):
        for child in stmt.seq:
            _walk(child, loops, bindings, block, out)
    elif isinstance(stmt, SBlockRealize):
        inner = dict(bindings)
        for iv, value in zip(stmt.block.iter_vars, stmt.iter_values):
            inner[iv.var] = value
        name = stmt.block.name_hint
        if stmt.block.init is not None:
            _walk(stmt.block.init, loops, inner, name, out)
        _walk(stmt.block.body, loops, inner, name, out)
    elif isinstance(stmt, tirx.BufferStore):
        out.append(_body(stmt, loops, bindings, block))
    elif isinstance(stmt, tirx.IfThenElse):
        _walk(stmt.then_case, loops, bindings, block, out)
        if stmt.else_case is not None:
            _walk(stmt.else_case, loops, bindings, block, out)
    elif hasattr(stmt, "body") and stmt.body is not None:
        _walk(stmt.body, loops, bindings, block, out)


def _body(store: Any, loops: list[_Loop], bindings: dict[Any, Any], block: str) -> LoopBody:
    vector = [(var, ext) for var, ext, kind in loops if kind == _VECTORIZED]
    lane_var, lanes = vector[-1] if vector else (None, 1)
    iterations = math.prod(ext for var, ext, kind in loops if var is not lane_var)
    parallel = math.prod(ext for _, ext, kind in loops if kind == _PARALLEL)
    env = _Env(loops, bindings)
    unrolled = [(var, ext) for var, ext, kind in loops if kind == _UNROLLED]
    counts = {"alu": 0.0, "vector": 0.0, "gather": 0.0, "invariant": 0.0}
    accumulates = False

    def varies(expr: Any) -> bool:
        return lane_var is None or env.depends_on(expr, lane_var)

    def share(load: Any) -> float:
        """One load serves every iteration of the unrolled loops its address does not depend on."""
        return 1.0 / math.prod(ext for var, ext in unrolled if not env.depends_on(load, var))

    def visit(expr: Any, under_add: bool = False) -> None:
        nonlocal accumulates
        if _is_load(expr):
            if expr.source.same_as(store.buffer):
                accumulates = True  # the accumulator: kept in a register by LLVM
            elif not varies(expr):
                counts["invariant"] += share(expr)
            elif lane_var is not None and abs(env.stride(expr, lane_var)) > 1:
                counts["gather"] += share(expr)
            else:
                counts["vector"] += share(expr)
            return
        kind = type(expr).__name__
        if kind == "Call" and _call_name(expr).endswith("if_then_else"):
            # Conditions on indices alone (padding) are hoisted: the select becomes a masked load.
            for child in list(expr.args)[1:]:
                visit(child, under_add)
            if _reads_data(expr.args[0]):
                counts["alu"] += 1
                visit(expr.args[0])
            return
        if kind in _ARITH and _is_float(expr) and varies(expr):
            fused_mul = kind == "Mul" and under_add
            if not fused_mul:
                counts["alu"] += 1
        for child in _children(expr):
            visit(child, under_add=kind in ("Add", "Sub"))

    visit(store.value)
    reduction_inside = any(kind not in (_VECTORIZED, _PARALLEL, _UNROLLED) for _, _, kind in loops)
    carried = accumulates and reduction_inside
    chains = math.prod(ext for var, ext in unrolled if any(env.depends_on(i, var) for i in store.indices))
    steps = math.prod(ext for var, ext, _ in loops
                      if var is not lane_var and not any(env.depends_on(i, var) for i in store.indices))
    return LoopBody(
        block=block,
        iterations=int(iterations),
        parallel_extent=int(parallel),
        lanes=int(lanes),
        alu_ops=int(counts["alu"]),
        vector_loads=counts["vector"],
        gather_loads=counts["gather"],
        invariant_loads=counts["invariant"],
        stores=0 if carried else 1,
        carried=carried,
        unrolled=math.prod(ext for _, ext in unrolled),
        chains=chains,
        chain_steps=int(steps) if carried else 1,
    )


def _call_name(expr: Any) -> str:
    op = getattr(expr, "op", None)
    return str(getattr(op, "name", ""))


def _is_float(expr: Any) -> bool:
    return str(getattr(expr, "ty", "")).startswith(("float", "bfloat"))


def _reads_data(expr: Any) -> bool:
    """Whether `expr` loads from a buffer (a data-dependent condition, not an index check)."""
    if _is_load(expr):
        return True
    return any(_reads_data(c) for c in _children(expr))


_ARITH = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Select", "Cast", "Call"}


def _is_load(expr: Any) -> bool:
    import tvm

    return isinstance(expr, tvm.ir.TensorLoad)  # a TIR BufferLoad; `.source` is the buffer


def _children(expr: Any) -> list[Any]:
    if _is_load(expr):
        return []
    kind = type(expr).__name__
    if kind == "Call":
        return list(expr.args)
    if kind == "Select":
        return [expr.condition, expr.true_value, expr.false_value]
    if kind in ("Cast", "Not", "Broadcast"):
        return [expr.value] if hasattr(expr, "value") else [expr.a]
    if hasattr(expr, "a") and hasattr(expr, "b"):
        return [expr.a, expr.b]
    return []


class _Env:
    """Evaluates index expressions of one statement to find strides along the vector lane."""

    def __init__(self, loops: list[_Loop], bindings: dict[Any, Any]) -> None:
        self.loops = loops
        self.bindings = bindings

    def depends_on(self, expr: Any, var: Any) -> bool:
        from tvm import tirx

        if isinstance(expr, tirx.Var):
            if expr.same_as(var):
                return True
            bound = self._binding(expr)
            return bound is not None and self.depends_on(bound, var)
        if _is_load(expr):
            return any(self.depends_on(i, var) for i in expr.indices)
        return any(self.depends_on(c, var) for c in _children(expr))

    def _binding(self, var: Any) -> Any:
        for key, value in self.bindings.items():
            if key.same_as(var):
                return value
        return None

    def stride(self, load: Any, lane_var: Any) -> int:
        """Elements between lane 0 and lane 1 of `load` (outer loops at their middle)."""
        shape = [_const(s) for s in load.source.shape]
        strides = [math.prod(shape[k + 1 :]) for k in range(len(shape))]

        def address(lane: int) -> int:
            values = {}
            for var, ext, _ in self.loops:
                values[var] = lane if var.same_as(lane_var) else ext // 2
            return sum(self._eval(i, values) * s for i, s in zip(load.indices, strides))

        try:
            return address(1) - address(0)
        except (TypeError, ValueError, ZeroDivisionError):
            return 2  # not affine in a way we can read: treat as a gather

    def _eval(self, expr: Any, values: dict[Any, int]) -> int:
        from tvm import tirx

        kind = type(expr).__name__
        if kind == "IntImm":
            return int(expr.value)
        if isinstance(expr, tirx.Var):
            for var, value in values.items():
                if var.same_as(expr):
                    return value
            bound = self._binding(expr)
            if bound is None:
                raise ValueError(f"unbound {expr}")
            return self._eval(bound, values)
        if kind == "Cast":
            return self._eval(expr.value, values)
        a, b = self._eval(expr.a, values), self._eval(expr.b, values)
        ops: dict[str, Callable[[int, int], int]] = {
            "Add": lambda x, y: x + y,
            "Sub": lambda x, y: x - y,
            "Mul": lambda x, y: x * y,
            "FloorDiv": lambda x, y: x // y,
            "FloorMod": lambda x, y: x % y,
            "Min": min,
            "Max": max,
        }
        if kind not in ops:
            raise ValueError(kind)
        return ops[kind](a, b)


def _conv_window(stmt: Any) -> int:
    """Kernel height x width of the first convolution block: its reduction extents but the channels'."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlockRealize

    stack = [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, SBlockRealize):
            if "conv2d" in node.block.name_hint:
                reduce = [iv for iv in node.block.iter_vars if int(iv.iter_type) == _REDUCE]
                if "blocked" in node.block.name_hint:  # channel blocks and lanes are reduced too
                    return math.prod(_const(iv.dom.extent) for iv in reduce if str(iv.var.name).endswith(("kh", "kw")))
                return math.prod(_const(iv.dom.extent) for iv in reduce[1:]) if len(reduce) > 1 else 1
            stack.append(node.block.body)
        elif isinstance(node, tirx.SeqStmt):
            stack.extend(node.seq)
        elif hasattr(node, "body") and node.body is not None:
            stack.append(node.body)
    return 0


_REDUCE = 2  # tirx.IterVar.CommReduce


def _block_names(stmt: Any) -> list[str]:
    from tvm import tirx
    from tvm.s_tir.stmt import SBlockRealize

    names: list[str] = []
    stack = [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, SBlockRealize):
            names.append(node.block.name_hint)
            stack.append(node.block.body)
        elif isinstance(node, tirx.SeqStmt):
            stack.extend(node.seq)
        elif hasattr(node, "body") and node.body is not None:
            stack.append(node.body)
    return names


def _const(value: Any) -> int:
    return int(value.value) if hasattr(value, "value") else int(value)
