"""Hybrid quantization: chosen layers of an int8 model computed in float.

Keeping tensor ``t`` in float (``custom_quantize_layers: {t: float16}`` in a ``.quantization.cfg``,
``custom_hybrid`` pairs, or ``auto_hybrid``) means:

* ``t`` is not quantized, nor are the tensors that share its parameters (its input or outputs through Reshape,
  Transpose, MaxPool, ...): quantizing any of them would put the same rounding back;
* the layer that computes ``t`` — its nodes since the previous int8 tensors, e.g. a convolution and its fused
  Relu — keeps float weights and biases;
* layers that read ``t`` read it in float: ONNX Runtime runs them in float on their dequantized int8 weights
  and quantizes their outputs as before.

``float16`` and ``float32`` both mean this; the payload computes float layers in float32, like the rest of a
QDQ model outside its integer kernels. A name inside a layer (a convolution output fused with its Relu) stands
for that layer's int8 output. Errors name the cfg line and the tensor.
"""

from __future__ import annotations

import difflib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np
import onnx

from rkfarm.errors import ConfigError
from rkfarm.quant.config_file import QuantConfig
from rkfarm.quant.plan import QuantPlan, constant_names
from rkfarm.quant.scheme import QuantParams, activation_params, weight_params_from_absmax

log = logging.getLogger(__name__)


def tensor_names(model: onnx.ModelProto) -> list[str]:
    """Every non-constant tensor a user can name: model inputs, then node outputs in graph order."""
    consts = constant_names(model)
    names = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output if o]
    return [n for n in dict.fromkeys(names) if n not in consts]


def _unknown(name: str, known: Sequence[str], where: str, what: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "; `rkfarm hybrid step1` lists the model's tensors in the cfg"
    return ConfigError(f"{where}: {what} {name!r} is not a tensor of this model{hint}")


def layer_nodes(model: onnx.ModelProto, int8: set[str], tensor: str) -> set[int]:
    """Indices of the nodes that compute ``tensor`` from int8 tensors, model inputs and constants."""
    g = model.graph
    stops = int8 | constant_names(model) | {i.name for i in g.input}
    producer = {o: i for i, node in enumerate(g.node) for o in node.output}
    seen: set[int] = set()
    stack = [producer[tensor]] if tensor in producer else []
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(producer[t] for t in g.node[i].input if t and t not in stops and t in producer)
    return seen


def layer_outputs(model: onnx.ModelProto, plan: QuantPlan, name: str) -> list[str]:
    """The int8 tensors ``name`` stands for: itself, or the int8 outputs of the layer it lies inside."""
    int8 = set(plan.activations)
    if name in int8:
        return [name]
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for t in node.input:
            consumers[t].append(node)
    found: list[str] = []
    seen = {name}
    stack = [name]
    while stack:
        for node in consumers[stack.pop()]:
            for out in node.output:
                if out in int8:
                    found.append(out)
                elif out and out not in seen:
                    seen.add(out)
                    stack.append(out)
    return list(dict.fromkeys(found))


def resolve_layers(
    model: onnx.ModelProto, plan: QuantPlan, names: Iterable[str], where: Callable[[str], str], what: str
) -> list[str]:
    """The int8 tensors for user-given names; ConfigError (naming ``where(name)``) for a name the model lacks."""
    known = tensor_names(model)
    known_set = set(known)
    out: list[str] = []
    for name in names:
        if name not in known_set:
            raise _unknown(name, known, where(name), what)
        tensors = layer_outputs(model, plan, name)
        if not tensors:
            log.info("%s: %r is not quantized in any case (it stays float)", where(name), name)
        elif tensors != [name]:
            log.info("%s: %r lies inside the layer of %s: keeping that layer in float", where(name), name, tensors)
        out.extend(tensors)
    return list(dict.fromkeys(out))


def expand_groups(plan: QuantPlan, tensors: Iterable[str]) -> list[str]:
    """``tensors`` with every tensor that shares quantization parameters with one of them."""
    out: list[str] = []
    for t in tensors:
        rep = plan.group_of.get(t)
        out.extend([t, *(plan.groups[rep] if rep is not None else [])])
    return list(dict.fromkeys(out))


def float_plan(model: onnx.ModelProto, plan: QuantPlan, tensors: Iterable[str]) -> QuantPlan:
    """``plan`` with ``tensors`` kept in float as the module docstring describes."""
    floats = set(expand_groups(plan, tensors)) & set(plan.activations)
    if not floats:
        return plan
    int8 = set(plan.activations)
    nodes: set[int] = set()
    for t in floats:
        nodes |= layer_nodes(model, int8, t)
    weights = []
    for use in plan.weights:
        if use.node in nodes:
            continue  # the float layer keeps its float weights
        float_input = use.activation in floats  # then the bias is no longer at s_in * s_w: it stays float
        weights.append(replace(use, activation=None, bias=None, bias_key=None) if float_input else use)
    activations = [t for t in plan.activations if t not in floats]
    groups = {rep: [t for t in ts if t not in floats] for rep, ts in plan.groups.items()}
    groups = {rep: ts for rep, ts in groups.items() if ts}
    group_of = {t: rep for rep, ts in groups.items() for t in ts}
    kept = [*plan.kept_float, *[t for t in plan.activations if t in floats]]
    return QuantPlan(activations, groups, group_of, weights, plan.fused, plan.concats, kept, plan.single_use - floats)


def subgraph_layers(model: onnx.ModelProto, plan: QuantPlan, pairs: Sequence[Sequence[str]]) -> list[str]:
    """``custom_hybrid``: the int8 tensors computed on the paths from each pair's input to its output."""
    g = model.graph
    known = tensor_names(model)
    known_set = set(known)
    consumers: dict[str, list[int]] = defaultdict(list)
    producer = {o: i for i, node in enumerate(g.node) for o in node.output}
    for i, node in enumerate(g.node):
        for t in node.input:
            consumers[t].append(i)
    out: list[str] = []
    for k, pair in enumerate(pairs):
        if isinstance(pair, str) or len(pair) != 2:
            raise ConfigError(f"custom_hybrid[{k}] must be an [input_tensor, output_tensor] pair, got {pair!r}")
        start, end = str(pair[0]), str(pair[1])
        for name in (start, end):
            if name not in known_set:
                raise _unknown(name, known, f"custom_hybrid[{k}]", "tensor")
        after = _reach([start], lambda t: [o for i in consumers[t] for o in g.node[i].output])
        before = _reach([end], lambda t: [i for i in g.node[producer[t]].input if i] if t in producer else [])
        inside = (after & before) | {end}
        if end not in after:
            raise ConfigError(f"custom_hybrid[{k}]: no path from {start!r} to {end!r}; give [input, output] in order")
        int8 = set(plan.activations)
        out.extend(name for name in tensor_names(model) if name in inside and name in int8)
        out.extend(layer_outputs(model, plan, end))  # an output inside a layer stands for the layer's
    return list(dict.fromkeys(out))


def _reach(starts: Iterable[str], step: Callable[[str], Iterable[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        for t in step(stack.pop()):
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return seen


def cfg_parameters(config: QuantConfig, plan: QuantPlan) -> tuple[dict[str, QuantParams], list[str]]:
    """The parameters a cfg gives for ``plan``'s tensors, and the names whose range was edited by hand.

    min/max are the range: where they no longer match scale and zero point (the user edited the range), new
    parameters are derived from them by the scheme's formulas. Bias entries are ignored: a bias always takes
    ``s_in * s_w``. A name that is not one of the plan's tensors is an error naming its line."""
    activations = set(plan.activations) | set(plan.kept_float)
    weights = {use.weight_key: use for use in plan.weights}
    biases = {use.bias_key for use in plan.weights if use.bias_key}
    given: dict[str, QuantParams] = {}
    edited: list[str] = []
    for name, written in config.parameters.items():
        where = config.where("quantize_parameters", name)
        lo, hi = config.ranges[name]
        if name in activations:
            if lo.size != 1:
                raise ConfigError(f"{where}: tensor {name!r} is an activation: give one min and one max")
            params, derived = written, activation_params(float(lo[0]), float(hi[0]))
        elif name in weights:
            axis = weights[name].axis
            if written.axis not in (axis, None):
                raise ConfigError(f"{where}: weight {name!r} is per channel along axis {axis}, not {written.axis}")
            params = weight_params_from_absmax(written.scale.astype(np.float64) * 127, written.axis)
            derived = weight_params_from_absmax(np.maximum(np.abs(lo), np.abs(hi)), written.axis)
        elif name in biases:
            continue
        else:
            raise _unknown(name, sorted(activations | set(weights)), where, "quantize_parameters: tensor")
        if derived != params:
            edited.append(name)
        given[name] = derived
    if edited:
        log.info("%s: parameters derived from the edited min/max of %s", config.source, ", ".join(edited[:5]))
    return given, edited
