"""snnc compiler: a model -> graph IR -> passes -> chip.bin for a PIcore-like chip.

The compiler never imports the frontends (nor the runtime): :func:`compile_model` takes a Graph.
Loading a module or a file is the caller's job (``frontends.compile_model`` and the ``snnc``
CLI do both steps). The whole pipeline, readable in one function::

    graph = frontends.load_model(model)                      # float operator graph (caller)
    graph, history = run_pipeline(graph, spec, PIPELINE)     # fold-bn .. route
    sections = backend.emit(graph, spec)                     # named arrays + META
    binfmt.write(path, sections, spec.digest())              # versioned, checksummed, atomic
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.chip import PICORE64, ChipSpec, load_spec
from compiler.errors import SnnError
from compiler.ir.graph import Graph

__all__ = ["compile_model", "Program", "ChipSpec", "PICORE64", "load_spec", "SnnError"]


@dataclass
class Program:
    """The result of compiling: the routed graph, every intermediate graph, and the options."""

    graph: Graph
    history: dict[str, Graph]
    spec: ChipSpec
    options: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    @property
    def float_graph(self) -> Graph:
        """The lowered float model (what ``verify`` calls the trained model); recomputed when
        the compile released it (``keep_float=False``)."""
        if self.history.get("lower") is None:
            from compiler.passes import lower
            g = self.history["fold-bn"]
            self.history["lower"] = lower(g, self.spec, input_scale=self.graph.attrs.get(
                "input_scale", 255.0))
        return self.history["lower"]

    @property
    def complete(self) -> bool:
        return self.graph.stage == "routed"

    def sections(self) -> dict:
        from compiler.backend.emit import emit
        return emit(self.graph, self.spec, self.source, self.options)

    def write(self, path: str | Path) -> None:
        from compiler.backend import binfmt
        binfmt.write(path, self.sections(), self.spec.digest())

    def summary(self) -> dict:
        """Resource estimate (``snnc compile --estimate``)."""
        g = self.graph
        cores = g.attrs.get("cores") or []
        per_layer: dict[str, int] = {}
        for c in cores:
            per_layer[c.layer] = per_layer.get(c.layer, 0) + 1
        routes = g.attrs.get("routes")
        n = len(cores)
        return {
            "stage": g.stage,
            "cores_used": n,
            "chips_needed": int(np.ceil(n / self.spec.cores_per_chip)) if n else 0,
            "cores_per_layer": per_layer,
            "partition": g.attrs.get("partition", {}),
            "neurons": int(sum(c.n_neurons for c in cores)),
            "latency_ticks": int(routes.latency) if routes else None,
        }


def compile_model(model, spec: ChipSpec = PICORE64, *, bits: int | str = 8,
                  per_channel: bool = False, clip: str = "max", chips: int = 1,
                  calib: np.ndarray | None = None, timesteps: int = 8, encoding: str = "direct",
                  seed: int = 0, strict: bool = False, leak: str = "auto",
                  auto_sqnr: float = 30.0, effort: float = 1.0, source: dict | None = None,
                  dump_after: set[str] | None = None, stop_after: str | None = None,
                  dump=None, passes=None, progress=None, keep_float: bool = True) -> Program:
    """Compile the operator graph ``model`` (stage 'imported') for ``spec``.

    Modules and files are loaded by the caller: ``frontends.load_model(...)`` gives the Graph,
    ``frontends.compile_model(module_or_path, ...)`` does both steps.

    Args:
        bits: weight width (1, 2, 4, 8) or 'auto' (smallest width with SQNR >= auto_sqnr dB).
        per_channel: one scale per output channel instead of per layer.
        clip: 'max' or a percentile like 'p99.9' for the weight range.
        chips: chips on the board (multi-chip boards for large networks), or 'auto' for the
            smallest board that holds the network.
        calib: calibration images [N, C, H, W] in [0, 1]: per-layer report + placement rates.
        timesteps, encoding: defaults written into the image (the runtime may override).
        seed: placement seed. strict: fail instead of warning on a silent layer.
        source: where the graph came from ({'path', 'sha256'}), written into the image.
        progress: True for a progress bar over the passes on stderr (compiler/progress.py:
            tqdm on a terminal, periodic lines elsewhere, silent when quiet), or a callback
            ``(name, i, n, seconds, graph)`` after each pass (the CLI's lines).
        keep_float: keep the lowered float graph in ``history`` (False frees it after
            calibrate, the peak-memory saving for seed-size networks; Program.float_graph
            recomputes it on demand).
    Raises:
        SnnError subclasses with what/where/limit/hint.
    """
    from compiler.passes import PIPELINE, run_pipeline

    if not isinstance(model, Graph):
        raise SnnError(f"compile_model takes an operator Graph, got a {type(model).__name__}",
                       "load the model first: frontends.load_model(model, input_shape), or "
                       "call frontends.compile_model(model, ...) which loads and compiles")
    source = dict(source or {})
    graph = model.copy()
    graph.attrs["timesteps"] = int(timesteps)
    graph.attrs["encoding"] = str(encoding)
    options = dict(bits=bits, per_channel=per_channel, clip=clip, chips=chips, calib=calib,
                   timesteps=timesteps, seed=seed, strict=strict, leak=leak,
                   auto_sqnr=auto_sqnr, effort=effort)
    final, history = run_pipeline(graph, spec, passes or PIPELINE, options,
                                  dump_after=dump_after, stop_after=stop_after, dump=dump,
                                  progress=progress,
                                  release=None if keep_float else {"lower": "calibrate"})
    opts = {k: v for k, v in options.items() if k != "calib"}
    opts["encoding"] = encoding
    return Program(final, history, spec, opts, source)
