"""Rewrite a student's Relax graph into a channel-blocked layout (NCHW[b]c) before it is lowered.

In PyTorch's NCHW layout a depthwise convolution's vectors run along image rows: every filter tap
is an unaligned load (on AVX-512 it straddles two cache lines) and rows of 4 or 8 pixels fill a
quarter or half of a register. In NCHW16c the vectors run across 16 channels of one pixel: loads
are aligned and whole, and a tile of pixels shares each weight vector (`benchmarks/depthwise_layout.py`).
ONNX Runtime runs its x86 convolutions the same way. `Lowerer(blocked=True)` uses it; it is not the
default yet, as the schedule cost model does not follow its libraries (README, "Channel-blocked
layout").

Dense convolutions (any window) become `conv2d_blocked` kernels that write a blocked output and
read their input in whatever layout it comes (a broadcast input is as cheap from NCHW), depthwise
ones become `depthwise_conv2d_blocked` when their input is blocked; elementwise operators, pooling
and the global mean follow the layout. Anything else gets its NCHW input back (`layout_transform`,
then a slice when channels were padded), and stays there: a depthwise convolution or a residual add
beside NCHW operators (fbnet's grouped blocks, with their channel shuffle) runs in NCHW rather than
pay a transform in and another out. A channel count that is not a multiple of the block is padded
with channels whose weights are zero: what those channels hold (finite: no division follows the
layout) never reaches a real one, since only convolutions mix channels. Weight layout transforms
depend on weights alone, so `LiftTransformParams` moves them out of the library as for any
weight-only kernel.
"""

from __future__ import annotations

from typing import Any

# Elementwise operators that follow the layout: they keep padded channels finite (no division: 0 / 0 in
# a padded channel would reach real ones, as a NaN times a zero weight is NaN).
UNARY = ("relax.nn.relu", "relax.sigmoid", "relax.nn.silu", "relax.nn.gelu", "relax.clip", "relax.tanh")
BINARY = ("relax.add", "relax.multiply", "relax.subtract", "relax.maximum", "relax.minimum")
POOLS = ("relax.nn.avg_pool2d", "relax.nn.max_pool2d")


def blocked_graph(mod: Any, block: int) -> Any:
    """`mod` with `main`'s convolutions and the elementwise operators between them in NCHW{block}c."""
    import tvm
    from tvm import relax

    main = mod["main"]
    if not all(isinstance(b, relax.DataflowBlock) for b in main.body.blocks):
        return mod  # the importers emit one dataflow block; anything else is left as it is
    bb = relax.BlockBuilder(tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"}))
    rewriter = _Rewriter(bb, block)
    with bb.function("main", list(main.params), attrs=dict(main.attrs) if main.attrs else None):
        with bb.dataflow():
            for binding_block in main.body.blocks:
                for binding in binding_block.bindings:
                    rewriter.visit(binding)
            out = bb.emit_output(rewriter.plain(main.body.body))
        bb.emit_func_output(out)
    return tvm.IRModule(dict(bb.get().functions.items()), attrs=mod.attrs)


class _Rewriter:
    def __init__(self, bb: Any, block: int) -> None:
        self.bb = bb
        self.block = block
        self.plain_of: dict[Any, Any] = {}  # original var -> its NCHW expression in the new graph
        self.blocked_of: dict[Any, tuple[Any, int]] = {}  # original var -> (blocked expression, channels)

    # --- the two layouts of a value ---------------------------------------------------------

    def plain(self, expr: Any) -> Any:
        """`expr` of the original graph, in its original layout, in the new one."""
        from tvm import relax

        if isinstance(expr, relax.Var) and expr in self.plain_of:
            return self.plain_of[expr]
        if isinstance(expr, relax.Var) and expr in self.blocked_of:
            blocked, channels = self.blocked_of[expr]
            b = self.block
            out = self.bb.emit(relax.op.layout_transform(blocked, lambda n, cb, h, w, c: (n, cb * b + c, h, w)))
            if _padded(channels, b) != channels:
                out = self.bb.emit(relax.op.strided_slice(out, axes=[1], begin=[0], end=[channels]))
            self.plain_of[expr] = out
            return out
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self.plain(f) for f in expr.fields])
        return expr  # a parameter or constant

    def to_blocked(self, expr: Any) -> Any | None:
        """`expr` in NCHW{block}c (channels padded with zeros), or None when it is not 4-d."""
        from tvm import relax

        if isinstance(expr, relax.Var) and expr in self.blocked_of:
            return self.blocked_of[expr][0]
        plain = self.plain(expr)
        shape = _shape(plain)
        if shape is None or len(shape) != 4:
            return None
        b = self.block
        return self.bb.emit(
            relax.op.layout_transform(plain, lambda n, c, h, w: (n, c // b, h, w, c % b), pad_value=0.0))

    # --- bindings ---------------------------------------------------------------------------

    def visit(self, binding: Any) -> None:
        import tvm
        from tvm import relax

        value = binding.value
        op = value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else ""
        handled: tuple[Any, int | None] | None = None
        if op == "relax.nn.conv2d":
            handled = self._conv(value)
        elif op in UNARY and self._is_blocked(value.args[0]):
            handled = self._same_layout(value, [self.to_blocked(value.args[0])], self._channels(value.args[0]))
        elif op in BINARY and any(self._is_blocked(a) for a in value.args):
            handled = self._binary(value)
        elif op in POOLS and self._is_blocked(value.args[0]):
            handled = self._pool(value)
        elif op == "relax.mean" and self._is_blocked(value.args[0]):
            handled = self._mean(value)
        if handled is not None:
            self._bind(binding.var, handled)
            return
        # anything else, in NCHW, on the new graph's values
        if isinstance(value, relax.Call):
            value = relax.Call(value.op, [self.plain(a) for a in value.args], value.attrs, value.ty_args)
        elif isinstance(value, relax.TupleGetItem):
            value = relax.TupleGetItem(self.plain(value.tuple_value), value.index)
        elif isinstance(value, (relax.Tuple, relax.Var)):
            value = self.plain(value)
        self.plain_of[binding.var] = self.bb.emit(value)

    def _bind(self, var: Any, handled: tuple[Any, int | None]) -> None:
        expr, channels = handled
        if channels is None:
            self.plain_of[var] = expr
        else:
            self.blocked_of[var] = (expr, channels)

    def _is_blocked(self, expr: Any) -> bool:
        from tvm import relax

        return isinstance(expr, relax.Var) and expr in self.blocked_of

    def _channels(self, expr: Any) -> int:
        return self.blocked_of[expr][1]

    def _same_layout(self, call: Any, args: list[Any], channels: int) -> tuple[Any, int]:
        from tvm import relax

        return self.bb.emit(relax.Call(call.op, args, call.attrs, call.ty_args)), channels

    def _binary(self, call: Any) -> tuple[Any, int] | None:
        blocked = [a for a in call.args if self._is_blocked(a)]
        channels = self._channels(blocked[0])
        plain_shapes = {i: _shape(self.plain(a)) for i, a in enumerate(call.args) if not self._is_blocked(a)}
        images = [s for s in plain_shapes.values() if s is not None and len(s) == 4 and s[2:] != [1, 1]]
        if images and all(a in self.plain_of for a in blocked):
            return None  # a residual add beside NCHW operators: both operands are NCHW already
        args = []
        for i, arg in enumerate(call.args):
            shape = plain_shapes.get(i, [])
            if i not in plain_shapes or shape is not None and len(shape) == 4 and shape[1] == channels:
                args.append(self.to_blocked(arg))
            elif shape == []:
                args.append(self.plain(arg))  # a scalar broadcasts in either layout
            else:
                return None
        return self._same_layout(call, args, channels)

    def _pool(self, call: Any) -> tuple[Any, int] | None:
        from tvm import relax

        a = call.attrs
        if str(a.layout) != "NCHW":
            return None
        layout = f"NCHW{self.block}c"
        make = relax.op.nn.avg_pool2d if call.op.name.endswith("avg_pool2d") else relax.op.nn.max_pool2d
        kwargs = {"count_include_pad": bool(a.count_include_pad)} if call.op.name.endswith("avg_pool2d") else {}
        out = self.bb.emit(make(self.to_blocked(call.args[0]), pool_size=[int(v) for v in a.pool_size],
                                strides=[int(v) for v in a.strides], padding=[int(v) for v in a.padding],
                                dilation=[int(v) for v in a.dilation], ceil_mode=bool(a.ceil_mode),
                                layout=layout, out_layout=layout, **kwargs))
        return out, self._channels(call.args[0])

    def _mean(self, call: Any) -> tuple[Any, None] | None:
        from tvm import relax

        axes = sorted(int(v) for v in call.attrs.axis) if call.attrs.axis is not None else []
        if axes != [2, 3]:
            return None
        channels = self._channels(call.args[0])
        b = self.block
        out = self.bb.emit(relax.op.mean(self.to_blocked(call.args[0]), axis=[2, 3], keepdims=False))
        out = self.bb.emit(relax.op.reshape(out, [1, _padded(channels, b)]))
        if _padded(channels, b) != channels:
            out = self.bb.emit(relax.op.strided_slice(out, axes=[1], begin=[0], end=[channels]))
        shape = _shape(call)
        return self.bb.emit(relax.op.reshape(out, shape)), None

    def _conv(self, call: Any) -> tuple[Any, int] | None:
        from tvm import relax

        a = call.attrs
        x_shape, w_shape = _shape(self.plain(call.args[0])), _shape(self.plain(call.args[1]))
        layouts = (str(a.data_layout), str(a.kernel_layout), str(a.out_layout))
        if layouts != ("NCHW", "OIHW", "NCHW") or any(int(d) != 1 for d in a.dilation) or not x_shape or not w_shape:
            return None
        groups, channels_in, channels_out = int(a.groups), x_shape[1], w_shape[0]
        depthwise = groups > 1 and groups == channels_in == channels_out and w_shape[1] == 1
        if groups != 1 and not depthwise:
            return None
        b = self.block
        strides = tuple(int(s) for s in a.strides)
        padding = tuple(int(p) for p in a.padding)
        weight = self.plain(call.args[1])
        if depthwise:
            if not self._is_blocked(call.args[0]):
                return None  # into the blocked layout and back costs more than it saves here
            x = self.to_blocked(call.args[0])
            w = self.bb.emit(
                relax.op.layout_transform(weight, lambda o, i, h, w_: (o // b, h, w_, o % b), pad_value=0.0))
            out = self.bb.call_te(depthwise_conv2d_blocked, x, w, strides, padding,
                                  primfunc_name_hint="depthwise_conv2d_blocked")
            return self.bb.emit(out), channels_out
        if self._is_blocked(call.args[0]):
            x = self.to_blocked(call.args[0])
            w = self.bb.emit(relax.op.layout_transform(
                weight, lambda o, i, h, w_: (o // b, i // b, h, w_, i % b, o % b), pad_value=0.0))
        else:  # an NCHW input (the image, a grouped convolution's output) is read as it is
            x = self.plain(call.args[0])
            w = self.bb.emit(relax.op.layout_transform(weight, lambda o, i, h, w_: (o // b, i, h, w_, o % b),
                                                       pad_value=0.0))
        out = self.bb.call_te(conv2d_blocked, x, w, strides, padding, primfunc_name_hint="conv2d_blocked")
        return self.bb.emit(out), channels_out


def _padded(channels: int, block: int) -> int:
    return -(-channels // block) * block


def _shape(expr: Any) -> list[int] | None:
    from tvm import relax

    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    try:
        return [int(d) for d in ty.shape.values]
    except (TypeError, ValueError):
        return None


# --- the blocked kernels (TE) ------------------------------------------------------------------


def _pad(x: Any, padding: tuple[int, ...], spatial: tuple[int, int]) -> Any:
    from tvm import topi

    top, left, bottom, right = padding
    if not any(padding):
        return x
    before = [0] * len(x.shape)
    after = [0] * len(x.shape)
    before[spatial[0]], before[spatial[1]] = top, left
    after[spatial[0]], after[spatial[1]] = bottom, right
    return topi.nn.pad(x, before, after, name="pad")


def conv2d_blocked(x: Any, w: Any, strides: tuple[int, int], padding: tuple[int, ...]) -> Any:
    """A dense convolution into NCHW[b]c: x is NCHW[b]c with w (O/b, I/b, KH, KW, b_in, b_out), or
    NCHW with w (O/b, I, KH, KW, b_out)."""
    from tvm import te

    blocked_in = len(x.shape) == 5
    sy, sx = strides
    top, left, bottom, right = padding
    height, width = int(x.shape[2]), int(x.shape[3])
    kh_size, kw_size = int(w.shape[2]), int(w.shape[3])
    out_h = (height + top + bottom - kh_size) // sy + 1
    out_w = (width + left + right - kw_size) // sx + 1
    block = int(w.shape[-1])
    xp = _pad(x, padding, (2, 3))
    kh, kw = te.reduce_axis((0, kh_size), "kh"), te.reduce_axis((0, kw_size), "kw")
    if blocked_in:
        cb, ci = te.reduce_axis((0, int(w.shape[1])), "cb"), te.reduce_axis((0, int(w.shape[4])), "ci")
        return te.compute(
            (1, int(w.shape[0]), out_h, out_w, block),
            lambda n, ob, y, x_, o: te.sum(xp[n, cb, y * sy + kh, x_ * sx + kw, ci] * w[ob, cb, kh, kw, ci, o],
                                           axis=[cb, kh, kw, ci]),
            name="conv2d_blocked")
    ci = te.reduce_axis((0, int(w.shape[1])), "ci")
    return te.compute(
        (1, int(w.shape[0]), out_h, out_w, block),
        lambda n, ob, y, x_, o: te.sum(xp[n, ci, y * sy + kh, x_ * sx + kw] * w[ob, ci, kh, kw, o], axis=[ci, kh, kw]),
        name="conv2d_blocked")


def depthwise_conv2d_blocked(x: Any, w: Any, strides: tuple[int, int], padding: tuple[int, ...]) -> Any:
    """A depthwise convolution of NCHW[b]c x with w (C/b, KH, KW, b)."""
    from tvm import te

    sy, sx = strides
    top, left, bottom, right = padding
    kh_size, kw_size = int(w.shape[1]), int(w.shape[2])
    out_h = (int(x.shape[2]) + top + bottom - kh_size) // sy + 1
    out_w = (int(x.shape[3]) + left + right - kw_size) // sx + 1
    xp = _pad(x, padding, (2, 3))
    kh, kw = te.reduce_axis((0, kh_size), "kh"), te.reduce_axis((0, kw_size), "kw")
    return te.compute(
        (1, int(x.shape[1]), out_h, out_w, int(x.shape[4])),
        lambda n, b, y, x_, c: te.sum(xp[n, b, y * sy + kh, x_ * sx + kw, c] * w[b, kh, kw, c], axis=[kh, kw]),
        name="depthwise_conv2d_blocked")
