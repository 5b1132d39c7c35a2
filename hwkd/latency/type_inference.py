"""Memoized type inference for TVM's convolution and pooling operators.

TVM 0.27 infers the output type of a Relax convolution or pooling call through its layout
machinery, about half a millisecond a call: the largest single cost of importing a student, which
has dozens of them, nearly all with shapes and attributes seen in earlier students of its space.
`memoize_layout_ops` wraps those operators' `FInferType` with a cache keyed by the operator, its
attributes and its argument types. Only calls whose arguments are all tensors of static shape are
cached (the result is then a function of the key alone); anything symbolic goes to TVM's own
inference. The wrapper is registered process-wide, once; it returns what TVM would.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()
_INSTALLED = False
_RESULTS: dict[tuple[Any, ...], Any] = {}


def memoize_layout_ops() -> None:
    """Install the cache on every Relax convolution and pooling operator (idempotent)."""
    global _INSTALLED
    with _LOCK:
        if _INSTALLED:
            return
        import tvm

        for name in tvm.ir.Op.list_op_names():
            if name.startswith("relax.nn.") and ("conv" in name or "pool" in name):
                original = tvm.ir.Op.get(name).get_attr("FInferType")
                if original is not None:
                    tvm.ir.register_op_attr(name, "FInferType", _memoized(name, original), level=11)
        _INSTALLED = True


def _memoized(name: str, original: Any) -> Any:
    import tvm_ffi

    def infer(call: Any, ctx: Any) -> Any:
        args = tuple(static_tensor(arg.ty) for arg in call.args)
        if any(a is None for a in args):
            return original(call, ctx)
        key = (name, int(tvm_ffi.structural_hash(call.attrs)) if call.attrs is not None else 0, args)
        result = _RESULTS.get(key)
        if result is None:
            result = _RESULTS[key] = original(call, ctx)
        return result

    return infer


def static_tensor(ty: Any) -> tuple[tuple[int, ...], str] | None:
    """(shape, dtype) of a tensor type with a static shape, else None."""
    import tvm
    from tvm import relax

    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    dims = list(ty.shape.values)
    if not all(isinstance(v, tvm.tirx.IntImm) for v in dims):
        return None
    return tuple(int(v) for v in dims), str(ty.dtype)
