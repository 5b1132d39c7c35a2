"""Lower a Relax graph as TVM's build does and describe each fused kernel for the cost model.

Steps: legalize (cached per operator call signature), fuse (`AnnotateTIROpPattern`, `FuseOps`,
`FuseTIR`), then for every fused PrimFunc: its FLOPs, hwkd's schedule, and the loop bodies of
the scheduled code (how many times each runs, how wide, with which loads and stores). Kernel
descriptions are cached by the PrimFunc's structural hash: students of one space share most of
their kernels. Kernels that read weights alone (a transposed linear weight) are set apart: a
deployed library computes them once (`LiftTransformParams`), not per inference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwkd.errors import CompileError, error_line
from hwkd.latency.relax_import import RelaxGraph
from hwkd.latency.schedule import schedule_primfunc

log = logging.getLogger(__name__)

# Bump when lowering, hwkd's schedule or the kernel descriptions change: it names the on-disk
# cache of lowered students (hwkd.latency.lowered_cache), which then starts afresh.
LOWERING_VERSION = 2


@dataclass(frozen=True)
class LoopBody:
    """One statement of a scheduled kernel, with how often and how wide it runs.

    Counts are per execution of the statement, an execution covering `lanes` elements. They model
    what LLVM makes of hwkd's schedule (checked on its x86 and AArch64 output): index arithmetic
    and padding conditions are hoisted (a padded load becomes a masked load), loads that do not
    vary across lanes become one broadcast, and an accumulator stays in registers across the
    reduction loops, so a reduction step costs no load or store of it but waits for the last one.
    """

    block: str
    iterations: int  # executions: product of every enclosing loop but the vector loop
    parallel_extent: int  # extent of the enclosing parallel loop, 1 if none
    lanes: int  # elements per execution: the vector loop's extent, 1 when scalar
    alu_ops: int  # floating-point arithmetic per element; a multiply feeding an add is one FMA
    vector_loads: int  # lane-varying loads from consecutive elements
    gather_loads: int  # lane-varying loads with another stride: one element load per lane
    invariant_loads: int  # loads the same for every lane: one broadcast per execution
    stores: int  # per element; 0 for a reduction step (its accumulator stays in a register)
    carried: bool  # a reduction step: each execution waits for the previous one's result


@dataclass(frozen=True)
class KernelFeatures:
    """What the cost model needs of one fused PrimFunc, independent of where it is called."""

    kind: str  # conv, depthwise_conv, matmul, pool, reduce, elementwise, layout
    flops: int
    strategy: str  # how hwkd's schedule treated it (see hwkd.latency.schedule)
    bodies: tuple[LoopBody, ...]


@dataclass(frozen=True)
class Kernel:
    name: str
    features: KernelFeatures
    bytes_read: int
    bytes_written: int


@dataclass(frozen=True)
class LoweredGraph:
    kernels: tuple[Kernel, ...]  # per-inference kernels, in execution order
    weight_only_kernels: int  # kernels on weights alone, computed once at load time
    macs: int  # multiply-accumulates of convolutions and matrix products
    params_bytes: int
    peak_memory_bytes: int  # activation storage of TVM's static memory plan
    structure_hash: int  # of the fused graph, for result caches
    fused_mod: Any  # tvm.IRModule after fusion (unscheduled); None when read from the on-disk cache


class Lowerer:
    """Lowers graphs; holds the caches that make the thousandth student cheap."""

    def __init__(self) -> None:
        self._legalized: dict[tuple[Any, ...], tuple[Any, str, list[int]]] = {}
        self._features: dict[int, KernelFeatures] = {}
        self.stats = {"legalize_hits": 0, "legalize_misses": 0, "kernel_hits": 0, "kernel_misses": 0}

    def lower(self, graph: RelaxGraph) -> LoweredGraph:
        import tvm
        import tvm_ffi
        from tvm import relax, tirx

        try:
            mod = relax.transform.LegalizeOps(self._legalize_map(graph.mod))(graph.mod)
            fused = tvm.transform.Sequential(
                [
                    relax.transform.AnnotateTIROpPattern(),
                    relax.transform.FuseOps(),
                    relax.transform.FuseTIR(),
                    relax.transform.DeadCodeElimination(),
                ]
            )(mod)
        except Exception as exc:  # noqa: BLE001 - TVM raises many types
            raise CompileError(f"TVM cannot lower this model: {error_line(exc)}") from None

        main = fused["main"]
        num_input = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else 1
        weights = {p for p in list(main.params)[num_input:]}
        weight_derived: set[Any] = set(weights)
        kernels: list[Kernel] = []
        weight_only = 0
        call_tir = tvm.ir.Op.get("relax.call_tir")
        for binding in _bindings(main):
            value = binding.value
            if not (isinstance(value, relax.Call) and value.op.same_as(call_tir)):
                if _all_from(value, weight_derived):
                    weight_derived.add(binding.var)
                continue
            gvar, args = value.args[0], list(value.args[1].fields)
            if all(_all_from(a, weight_derived) for a in args):
                weight_derived.add(binding.var)
                weight_only += 1
                continue
            func = fused[gvar]
            if not isinstance(func, tirx.PrimFunc):
                continue
            kernels.append(
                Kernel(
                    name=gvar.name_hint,
                    features=self._kernel_features(func),
                    bytes_read=sum(_tensor_bytes(a.ty) for a in args),
                    bytes_written=_tensor_bytes(value.ty),
                )
            )
        return LoweredGraph(
            kernels=tuple(kernels),
            weight_only_kernels=weight_only,
            macs=count_macs(graph.mod),
            params_bytes=graph.params_bytes,
            peak_memory_bytes=planned_memory_bytes(fused),
            structure_hash=int(tvm_ffi.structural_hash(fused, map_free_vars=True)),
            fused_mod=fused,
        )

    def _kernel_features(self, func: Any) -> KernelFeatures:
        import tvm
        import tvm_ffi
        from tvm import s_tir

        key = int(tvm_ffi.structural_hash(func, map_free_vars=True))
        cached = self._features.get(key)
        if cached is not None:
            self.stats["kernel_hits"] += 1
            return cached
        self.stats["kernel_misses"] += 1
        try:
            flops = int(s_tir.analysis.estimate_tir_flops(tvm.IRModule({"main": func})))
        except Exception:  # noqa: BLE001 - FLOPs are informative only
            flops = 0
        scheduled = schedule_primfunc(func)
        features = KernelFeatures(
            kind=kernel_kind(func),
            flops=flops,
            strategy=scheduled.strategy,
            bodies=tuple(loop_bodies(scheduled.func)),
        )
        self._features[key] = features
        return features

    def _legalize_map(self, mod: Any) -> dict[str, Callable[[Any, Any], Any]]:
        """Per-op legalizers that reuse the PrimFunc made for an identical call before."""
        import tvm
        from tvm import relax

        names: set[str] = set()
        for func in mod.functions.values():
            if isinstance(func, relax.Function):
                relax.analysis.post_order_visit(
                    func.body,
                    lambda e: names.add(e.op.name)
                    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op)
                    else None,
                )
        legalizers = {}
        for name in names:
            default = tvm.ir.Op.get(name).get_attr("FLegalize")
            if default is not None:
                legalizers[name] = self._cached_legalizer(name, default)
        return legalizers

    def _cached_legalizer(self, name: str, default: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        import tvm
        import tvm_ffi
        from tvm import relax

        call_tir = tvm.ir.Op.get("relax.call_tir")

        def legalize(bb: Any, call: Any) -> Any:
            key = (
                name,
                tvm_ffi.structural_hash(call.attrs) if call.attrs is not None else 0,
                tuple(str(a.ty) for a in call.args),
                str(call.ty),
            )
            hit = self._legalized.get(key)
            if hit is not None:
                self.stats["legalize_hits"] += 1
                func, hint, order = hit
                gvar = bb.add_func(func, hint)
                out_ty = list(call.ty.fields) if isinstance(call.ty, relax.TupleType) else call.ty
                return relax.call_tir(gvar, [call.args[i] for i in order], out_ty=out_ty)
            self.stats["legalize_misses"] += 1
            out = default(bb, call)
            # Cache only the plain form: call_tir(gvar, (args of the call, reordered)).
            if isinstance(out, relax.Call) and out.op.same_as(call_tir) and len(out.args) == 2:
                order = []
                for arg in out.args[1].fields:
                    where = [i for i, a in enumerate(call.args) if a.same_as(arg)]
                    if not where:
                        return out
                    order.append(where[0])
                gvar = out.args[0]
                self._legalized[key] = (bb.get()[gvar], gvar.name_hint, order)
            return out

        return legalize


def count_macs(mod: Any) -> int:
    """Multiply-accumulates of every conv2d and matmul in `main` (before legalization)."""
    import tvm
    from tvm import relax

    conv = tvm.ir.Op.get("relax.nn.conv2d")
    matmul = tvm.ir.Op.get("relax.matmul")
    total = 0

    def visit(expr: Any) -> None:
        nonlocal total
        if not isinstance(expr, relax.Call):
            return
        if expr.op.same_as(conv):
            out = _shape(expr.ty)
            weight = _shape(expr.args[1].ty)  # OIHW: I is channels per group
            total += math.prod(out) * math.prod(weight[1:])
        elif expr.op.same_as(matmul):
            out = _shape(expr.ty)
            reduce_dim = _shape(expr.args[0].ty)[-1]
            total += math.prod(out) * reduce_dim

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return int(total)


def planned_memory_bytes(fused: Any) -> int:
    """Bytes of activation storage in TVM's static memory plan of `main`."""
    import tvm
    from tvm import relax

    planned = tvm.transform.Sequential(
        [
            relax.transform.RewriteDataflowReshape(),
            relax.transform.ToNonDataflow(),
            relax.transform.RemovePurityChecking(),
            relax.transform.CallTIRRewrite(),
            relax.transform.StaticPlanBlockMemory(),
        ]
    )(fused)
    alloc_storage = tvm.ir.Op.get("relax.memory.alloc_storage")
    total = 0

    def visit(expr: Any) -> None:
        nonlocal total
        if isinstance(expr, relax.Call) and expr.op.same_as(alloc_storage):
            total += int(expr.args[0].values[0])

    relax.analysis.post_order_visit(planned["main"].body, visit)
    return total


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
_PARALLEL, _VECTORIZED = 1, 2


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
    counts = {"alu": 0, "vector": 0, "gather": 0, "invariant": 0}
    accumulates = False

    def varies(expr: Any) -> bool:
        return lane_var is None or env.depends_on(expr, lane_var)

    def visit(expr: Any, under_add: bool = False) -> None:
        nonlocal accumulates
        if _is_load(expr):
            if expr.source.same_as(store.buffer):
                accumulates = True  # the accumulator: kept in a register by LLVM
            elif not varies(expr):
                counts["invariant"] += 1
            elif lane_var is not None and abs(env.stride(expr, lane_var)) > 1:
                counts["gather"] += 1
            else:
                counts["vector"] += 1
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
    reduction_inside = any(kind not in (_VECTORIZED, _PARALLEL) for _, _, kind in loops)
    carried = accumulates and reduction_inside
    return LoopBody(
        block=block,
        iterations=int(iterations),
        parallel_extent=int(parallel),
        lanes=int(lanes),
        alu_ops=counts["alu"],
        vector_loads=counts["vector"],
        gather_loads=counts["gather"],
        invariant_loads=counts["invariant"],
        stores=0 if carried else 1,
        carried=carried,
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
                reduce = [_const(iv.dom.extent) for iv in node.block.iter_vars if int(iv.iter_type) == _REDUCE]
                return math.prod(reduce[1:]) if len(reduce) > 1 else 1
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


def _bindings(func: Any) -> list[Any]:
    from tvm import relax

    body = func.body
    out = []
    if isinstance(body, relax.SeqExpr):
        for block in body.blocks:
            out.extend(block.bindings)
    return out


def _all_from(expr: Any, known: set[Any]) -> bool:
    """Whether `expr` is built only from vars in `known` and constants."""
    import tvm
    from tvm import relax

    if isinstance(expr, relax.Var):
        return expr in known
    if isinstance(expr, (tvm.ir.Constant, tvm.ir.GenericConst)):
        return True
    if isinstance(expr, relax.Tuple):
        return all(_all_from(f, known) for f in expr.fields)
    if isinstance(expr, relax.TupleGetItem):
        return _all_from(expr.tuple_value, known)
    if isinstance(expr, relax.Call):
        return all(_all_from(a, known) for a in expr.args if not isinstance(a, (relax.ShapeExpr, relax.PrimValue)))
    return False


def _shape(ty: Any) -> list[int]:
    return [int(v) for v in ty.shape.values]


def _tensor_bytes(ty: Any) -> int:
    from tvm import relax

    if isinstance(ty, relax.TupleType):
        return sum(_tensor_bytes(f) for f in ty.fields)
    if isinstance(ty, relax.TensorType) and ty.shape is not None:
        bits = _dtype_bits(str(ty.dtype))
        return math.prod(int(v) for v in ty.shape.values) * bits // 8
    return 0


def _dtype_bits(dtype: str) -> int:
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return int(digits) if digits else 32


def _const(value: Any) -> int:
    return int(value.value) if hasattr(value, "value") else int(value)
