"""Lower a Relax graph as TVM's build does and describe each fused kernel for the cost model.

Steps: merge common subexpressions, legalize (cached per operator call signature), fuse
(`AnnotateTIROpPattern`, `FuseOps`, `FuseTIR`), then for every fused PrimFunc: its FLOPs, hwkd's
schedule, and the loop bodies of the scheduled code (`hwkd.latency.tir_analysis`). Kernel
descriptions are cached by the PrimFunc's structural hash: students of one space share most of
their kernels. Kernels that read weights alone (a transposed linear weight) are set apart: a
deployed library computes them once (`LiftTransformParams`), not per inference.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hwkd.errors import CompileError, error_line
from hwkd.latency.blocked_layout import blocked_graph
from hwkd.latency.graph_analysis import (
    all_from,
    bindings,
    main_only,
    planned_memory_bytes,
    relax_macs,
    tensor_bytes,
)
from hwkd.latency.lowered import Kernel, KernelFeatures, LoweredGraph
from hwkd.latency.relax_import import RelaxGraph
from hwkd.latency.schedule import RegisterTile, schedule_primfunc
from hwkd.latency.tir_analysis import kernel_kind, loop_bodies
from hwkd.latency.type_inference import memoize_layout_ops


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while one student is imported and lowered.

    Tracing and importing allocate many objects (torch.fx nodes link to each other in cycles), so
    the collector runs several times per student, and its full collections walk every object of
    torch and TVM: 8-10 ms of a new nb201 student's 0.09 s (benchmarks/estimate.py). Paused, the
    student's garbage is collected once, by the first collection after it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Lowerer:
    """Lowers graphs for CPUs of one register file (`hwkd.latency.schedule.register_tile`); holds
    the caches that make the thousandth student cheap."""

    def __init__(self, registers: RegisterTile | None = None, blocked: bool = False) -> None:
        self.registers = registers or RegisterTile()
        self.blocked = blocked
        self._legalized: dict[tuple[Any, ...], tuple[Any, str, list[int]]] = {}
        self._features: dict[int, KernelFeatures] = {}
        self._legalizers: dict[str, Callable[[Any, Any], Any]] | None = None
        self._added: dict[tuple[Any, ...], Any] = {}  # legalized calls -> their function in the graph being lowered
        self.stats = {"legalize_hits": 0, "legalize_misses": 0, "kernel_hits": 0, "kernel_misses": 0}

    def lower(self, graph: RelaxGraph) -> LoweredGraph:
        import tvm
        import tvm_ffi
        from tvm import relax, tirx

        memoize_layout_ops()  # legalizing infers types again; a graph may come from another importer
        self._added = {}
        try:
            # NB201's edges each apply their own ReLU to a shared node: merged, the one left fuses into
            # the node's producer (nb201 all-3x3: 178 kernels -> 103, 0.95x the library's time)
            mod = relax.transform.EliminateCommonSubexpr()(graph.mod)
            mod = blocked_graph(mod, self.registers.vector_floats) if self.blocked else mod
            mod = relax.transform.LegalizeOps(self._legalize_map())(mod)
            fused = tvm.transform.Sequential(
                [
                    relax.transform.AnnotateTIROpPattern(),
                    relax.transform.FuseOps(),
                    relax.transform.FuseTIR(),  # ends with DeadCodeElimination itself
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
        for binding in bindings(main):
            value = binding.value
            if not (isinstance(value, relax.Call) and value.op.same_as(call_tir)):
                if all_from(value, weight_derived):
                    weight_derived.add(binding.var)
                continue
            gvar, args = value.args[0], list(value.args[1].fields)
            if all(all_from(a, weight_derived) for a in args):
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
                    bytes_read=sum(tensor_bytes(a.ty) for a in args),
                    bytes_written=tensor_bytes(value.ty),
                )
            )
        return LoweredGraph(
            kernels=tuple(kernels),
            weight_only_kernels=weight_only,
            macs=relax_macs(graph.mod),
            params_bytes=graph.params_bytes,
            peak_memory_bytes=planned_memory_bytes(self._without_weight_only(fused)),
            structure_hash=int(tvm_ffi.structural_hash(fused, map_free_vars=True)),
            fused_mod=fused,
        )

    def _without_weight_only(self, fused: Any) -> Any:
        """`fused` for the memory plan: a blocked graph's weight layout transforms are as large as its
        weights, so they are lifted out as the library will have them; an NCHW graph's weight-only
        kernels are a few bias reshapes, and lifting would cost 10 % of lowering a student."""
        from tvm import relax

        return main_only(relax.transform.LiftTransformParams()(fused)) if self.blocked else fused

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
        scheduled = schedule_primfunc(func, self.registers)
        features = KernelFeatures(
            kind=kernel_kind(func),
            flops=flops,
            strategy=scheduled.strategy,
            bodies=tuple(loop_bodies(scheduled.func)),
        )
        self._features[key] = features
        return features

    def _legalize_map(self) -> dict[str, Callable[[Any, Any], Any]]:
        """Per-op legalizers that reuse the PrimFunc made for an identical call before, for every
        Relax operator TVM can legalize (made once: finding the graph's own operators costs more)."""
        import tvm

        if self._legalizers is None:
            self._legalizers = {}
            for name in tvm.ir.Op.list_op_names():
                default = tvm.ir.Op.get(name).get_attr("FLegalize") if name.startswith("relax.") else None
                if default is not None:
                    self._legalizers[name] = self._cached_legalizer(name, default)
        return self._legalizers

    def _cached_legalizer(self, name: str, default: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        import tvm
        import tvm_ffi
        from tvm import relax

        call_tir = tvm.ir.Op.get("relax.call_tir")

        def legalize(bb: Any, call: Any) -> Any:
            key = (
                name,
                tvm_ffi.structural_hash(call.attrs) if call.attrs is not None else 0,
                tuple(_type_key(a.ty) for a in call.args),
                _type_key(call.ty),
            )
            hit = self._legalized.get(key)
            if hit is not None:
                self.stats["legalize_hits"] += 1
                func, hint, order = hit
                # add_func hashes the whole PrimFunc to find an equal one; this graph's own repeats
                # are known here already
                gvar = self._added.get(key)
                if gvar is None:
                    gvar = self._added[key] = bb.add_func(func, hint)
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


def _type_key(ty: Any) -> int:
    """A key equal for equal Relax types: their 64-bit structural hash (symbolic dimensions hash
    by identity, so two graphs never share one), as printing them, the obvious key, costs more
    than the rest of a cache hit."""
    import tvm_ffi

    return int(tvm_ffi.structural_hash(ty))
