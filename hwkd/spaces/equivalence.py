"""Students that compute the same function, whatever their ids say.

Different ids can build the same network: an NB-201 edge whose result never reaches the cell
output is not built, so its op does not matter, and when two intermediate nodes take the same
inputs and feed the same node, swapping them changes the id but not the function. The search
reuses a student's result for any student with the same `function_key`.

The key is a hash of the traced torch.fx graph in which each value is named by what computes it,
never by its node name or its place in the code: a layer by its type and hyper-parameters
(weights are not part of it), the sum of several values by the multiset of its terms (addition
is commutative and associative), `nn.Identity` by its input.
"""

from __future__ import annotations

import hashlib
import operator
from typing import Any

import torch
from torch import fx, nn

_ADDS = {operator.add, torch.add, "add"}


def function_key(module: nn.Module) -> str:
    """A 16-hex-digit hash equal for two modules whose graphs compute the same function."""
    graph = fx.symbolic_trace(module).graph
    modules = dict(module.named_modules())
    users = {node: len(node.users) for node in graph.nodes}
    names: dict[fx.Node, str] = {}

    def terms(node: fx.Node) -> list[str]:
        """The names of the values an add-tree rooted at `node` sums (one-use adds are flattened)."""
        if _is_add(node) and users[node] <= 1:
            return [name for arg in node.args for name in terms(arg)]  # type: ignore[arg-type]
        return [names[node]]

    for node in graph.nodes:
        if node.op == "placeholder":
            names[node] = _digest(f"input:{node.target}")
        elif node.op == "output":
            return _digest("output:" + _describe_args(node.args, names))[:16]
        elif _is_add(node):
            names[node] = _digest("sum:" + ",".join(sorted(t for a in node.args for t in terms(a))))  # type: ignore[arg-type]
        elif node.op == "call_module":
            layer = modules[str(node.target)]
            if isinstance(layer, nn.Identity):
                names[node] = names[node.args[0]]  # type: ignore[index]
            else:
                names[node] = _digest(f"module:{layer!r}:" + _describe_args((node.args, node.kwargs), names))
        elif node.op == "get_attr":
            value = _attr(module, str(node.target))
            names[node] = _digest(f"attr:{tuple(value.shape) if hasattr(value, 'shape') else value!r}")
        else:  # call_function, call_method
            target = getattr(node.target, "__name__", str(node.target))
            names[node] = _digest(f"{node.op}:{target}:" + _describe_args((node.args, node.kwargs), names))
    raise ValueError("the traced graph has no output")


def _is_add(node: Any) -> bool:
    return (isinstance(node, fx.Node) and node.op in ("call_function", "call_method") and node.target in _ADDS
            and not node.kwargs and len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args))


def _describe_args(value: Any, names: dict[fx.Node, str]) -> str:
    """Arguments with every node replaced by the name of the value it holds."""
    if isinstance(value, fx.Node):
        return names[value]
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_describe_args(v, names) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_describe_args(v, names)}" for k, v in sorted(value.items())) + "}"
    return repr(value)


def _attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()
