"""Facts of a Relax graph as a whole: its multiply-accumulates, its static memory plan, and the
helpers that read its bindings and tensor types."""

from __future__ import annotations

import math
from typing import Any


def relax_macs(mod: Any) -> int:
    """Multiply-accumulates of every conv2d and matmul in `main` (before legalization)."""
    import tvm
    from tvm import relax

    conv = tvm.ir.Op.get("relax.nn.conv2d")
    matmul = tvm.ir.Op.get("relax.matmul")
    total = 0
    # the importers emit one operator call per binding: reading the bindings is enough, and much
    # cheaper than visiting every expression through Python callbacks
    for binding in bindings(mod["main"]):
        expr = binding.value
        if not isinstance(expr, relax.Call):
            continue
        if expr.op.same_as(conv):
            out = _shape(expr.ty)
            weight = _shape(expr.args[1].ty)  # OIHW: I is channels per group
            total += math.prod(out) * math.prod(weight[1:])
        elif expr.op.same_as(matmul):
            out = _shape(expr.ty)
            reduce_dim = _shape(expr.args[0].ty)[-1]
            total += math.prod(out) * reduce_dim
    return int(total)


def planned_memory_bytes(fused: Any) -> int:
    """Bytes of activation storage in TVM's static memory plan of `main` (as given: the outputs of
    weight-only kernels count unless `main_only(LiftTransformParams()(...))` took them out)."""
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
    return sum(int(b.value.args[0].values[0]) for b in bindings(planned["main"])
               if isinstance(b.value, relax.Call) and b.value.op.same_as(alloc_storage))


def main_only(lifted: Any) -> Any:
    """`main` of a module after `LiftTransformParams`, and what it calls, without the lifted
    weight-only function."""
    import tvm
    from tvm import relax

    return relax.transform.DeadCodeElimination(entry_functions=["main"])(
        tvm.IRModule({gv: f for gv, f in lifted.functions.items() if gv.name_hint != "main_transform_params"},
                     attrs=lifted.attrs))


def bindings(func: Any) -> list[Any]:
    from tvm import relax

    body = func.body
    out = []
    if isinstance(body, relax.SeqExpr):
        for block in body.blocks:
            out.extend(block.bindings)
    return out


def all_from(expr: Any, known: set[Any]) -> bool:
    """Whether `expr` is built only from vars in `known` and constants."""
    import tvm
    from tvm import relax

    if isinstance(expr, relax.Var):
        return expr in known
    if isinstance(expr, (tvm.ir.Constant, tvm.ir.GenericConst)):
        return True
    if isinstance(expr, relax.Tuple):
        return all(all_from(f, known) for f in expr.fields)
    if isinstance(expr, relax.TupleGetItem):
        return all_from(expr.tuple_value, known)
    if isinstance(expr, relax.Call):
        return all(all_from(a, known) for a in expr.args if not isinstance(a, (relax.ShapeExpr, relax.PrimValue)))
    return False


def _shape(ty: Any) -> list[int]:
    return [int(v) for v in ty.shape.values]


_TENSOR_BYTES: dict[int, int] = {}  # by the type's structural hash: hashing is cheaper than reading a shape


def tensor_bytes(ty: Any) -> int:
    import tvm_ffi

    key = int(tvm_ffi.structural_hash(ty))
    size = _TENSOR_BYTES.get(key)
    if size is None:
        size = _TENSOR_BYTES[key] = _tensor_bytes(ty)
    return size


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
