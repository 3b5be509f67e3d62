"""ONNX <-> graph IR (stage: imported). The SNN form below is this module's format specification.

SNN models are written with ``onnx.helper`` straight from the IR (never torch.onnx.export, which
cannot express a stateful neuron). One IR node becomes one ONNX node with the *same name*, whose
output tensor also carries that name. Default-domain opset ``OPSET`` (17), ``IR_VERSION`` 8.

Graph input: the IR Input's name (``input``), shape [batch, C, H, W] (dynamic batch dim 'batch'),
element type FLOAT (or DOUBLE when some synapse weight is not exactly a float32; neuron
parameters are always DOUBLE). Graph output: an ``Identity`` node named after the IR Output
(``output``), shape [batch, *output_type].

Standard operators (default domain)::

    IR Conv2d      Conv(X, <n>.weight, <n>.bias)  kernel_shape, strides, pads=[ph,pw,ph,pw],
                                                  dilations, group
    IR Affine      Gemm(X, <n>.weight [out,in], <n>.bias)  transB=1 (alpha = beta = 1)
    IR Linear      Gemm(X, <n>.weight)  transB=1
                   (an Affine/Linear on a non-flat input gets a Flatten(axis=1) node named
                   '<n>.flatten' with doc_string 'snnc:implicit-flatten' in front of its Gemm)
    IR AvgPool2d   AveragePool  kernel_shape, strides, pads, count_include_pad=1
    IR Flatten     Flatten(axis=1) for start_dim=0, end_dim=-1; otherwise
                   Reshape(X, <n>.shape) with doc_string 'snnc:flatten start_dim=A end_dim=B'
    IR BatchNorm   BatchNormalization(X, <n>.gamma, <n>.beta, <n>.mean, <n>.var)  epsilon
    IR Add         Add(A, B) for two inputs, Sum(...) for more
    IR Scale       Mul(X, <n>.scale)  (the scale broadcast with a leading batch dim)

Custom operators, domain ``DOMAIN`` = "ai.snnc", version 1 (semantics: compiler/ir/nodes.py)::

    IF(X, v_threshold, v_reset, v_init) -> spikes
    LIF(X, v_threshold, v_reset, v_init, beta) -> spikes
        inputs 2..5: DOUBLE initializers '<n>.v_threshold', '<n>.v_reset', '<n>.v_init',
                     '<n>.beta' of the IR's own shape (scalar, per channel or per neuron);
                     on import a missing/empty input may instead be a float attribute of the
                     same name (defaults: v_reset = v_init = 0; v_threshold and beta required)
        attributes:  reset: string 'soft' | 'hard' | 'none'   (default 'soft')
                     dt: float                                 (default 1.0)
                     neg_floor: float >= 0                     (absent: no floor)
                     leak: string 'shift' | 'mult'             (LIF, optional compiler hint)
    SumPool2d(X)  kernel_shape, strides, pads          (AvgPool2d without the 1/k^2)

Any initializer whose ONNX shape differs from the IR array's shape (Scale, BatchNorm) records the
IR shape in its doc_string as 'snnc.shape=[d0, d1, ...]'. ONNX float attributes are float32; when
one cannot hold the IR's float64 value exactly (epsilon, dt, neg_floor), the node's doc_string

Import (:func:`import_onnx`) reads that form and is table-driven (frontends/onnx/common.py):
:data:`IMPORTERS` maps (domain, op_type) to a function; :func:`register_importer` is the
extension point. Standard ops are imported by frontends/onnx/ops.py, the ANN activations by
frontends/onnx/ann.py. Ops known to be ANN activations raise UnsupportedOpError with a
conversion hint; anything else raises UnsupportedOpError with the node name and op. Besides the
form above, import accepts what other exporters write for the same operators (the idiom table
in docs/frontends.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from compiler.errors import FrontendError
from compiler.ir import IF, LIF, Graph, verify
from compiler.ir.nodes import RESET_MODES
from frontends.onnx import ops as _ops  # noqa: F401  (registers the standard-op importers)
from frontends.onnx.common import DOMAIN, Ctx, _f64, check_file, register_importer, run_import


# --- ai.snnc importers ------------------------------------------------------
def _neuron(ctx: Ctx, node) -> None:
    a = ctx.attrs(node)
    x = ctx.tensor(node.input[0], node)
    names = ["v_threshold", "v_reset", "v_init"] + (["beta"] if node.op_type == "LIF" else [])
    vals = {}
    for i, p in enumerate(names, start=1):
        tname = node.input[i] if i < len(node.input) else ""
        if tname:
            c = ctx.const(tname)
            if c is None:
                raise ctx.unsupported(node, f"{node.op_type} with a computed {p}",
                                      f"{p} must be an initializer")
            vals[p] = _f64(ctx.numeric(node, tname, c, p))
        elif p in a:
            vals[p] = _f64(a[p])
        elif p in ("v_threshold", "beta"):
            raise FrontendError(f"{ctx.source}: {node.op_type} node '{node.name}' has no {p} "
                                f"(input {i} or attribute '{p}')",
                                "see the ai.snnc op convention in frontends/onnx/snn.py")
    reset = a.get("reset", "soft")
    if reset not in RESET_MODES:
        raise FrontendError(f"{ctx.source}: {node.op_type} node '{node.name}' has reset "
                            f"'{reset}', expected one of {RESET_MODES}")
    floor = a.get("neg_floor")
    dt = float(a.get("dt", 1.0))
    where = f"{ctx.source}: {node.op_type} node '{node.name}'"
    if not (math.isfinite(dt) and dt > 0):
        raise FrontendError(f"{where}: attribute dt={dt}, expected a finite time step > 0",
                            "dt is the simulation step in seconds (snnc writes 1.0)")
    if floor is not None and not (math.isfinite(float(floor)) and float(floor) >= 0):
        raise FrontendError(f"{where}: attribute neg_floor={floor}, expected a finite value >= 0")
    for p, v in vals.items():
        if not np.all(np.isfinite(v)):
            raise FrontendError(f"{where}: {p} holds NaN/Inf values",
                                "the model file is corrupt; re-export it")
    if np.any(vals["v_threshold"] <= 0):
        raise FrontendError(f"{where}: v_threshold must be > 0, got min "
                            f"{float(np.min(vals['v_threshold'])):g}")
    kw = dict(reset_mode=reset, neg_floor=None if floor is None else float(floor), dt=dt,
              **vals)
    name = ctx.add(node, LIF(**kw) if node.op_type == "LIF" else IF(**kw), [x])
    if node.op_type == "LIF" and "leak" in a:
        ctx.leak_hints[name] = str(a["leak"])


register_importer("IF", DOMAIN)(_neuron)
register_importer("LIF", DOMAIN)(_neuron)


def import_onnx(path, input_shape=None) -> Graph:
    """Read an ONNX file into an imported-stage graph.

    Args:
        path: the .onnx file.
        input_shape: one sample's shape (C, H, W), needed only when the file leaves
            non-batch input dims symbolic.
    Returns:
        The Graph (verified at stage 'imported'), ``attrs['dt']`` from the metadata (1.0).
    Raises:
        FrontendError: missing, corrupt or invalid file (names the file).
        UnsupportedOpError: an op without an importer (names node and op, with a hint).
    """
    path = Path(path)
    return from_onnx_model(check_file(path), where=path.name, input_shape=input_shape)


def is_snn_model(model) -> bool:
    """True if the ModelProto uses the ai.snnc neuron ops (False: a plain ANN graph)."""
    return any(n.domain == DOMAIN for n in model.graph.node)


def from_onnx_model(model, where: str = "<model>", input_shape=None) -> Graph:
    """Import a loaded ONNX ModelProto in the SNN form (see :func:`import_onnx`)."""
    ctx = run_import(model, where, input_shape)
    verify(ctx.graph, "imported")
    return ctx.graph

