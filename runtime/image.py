"""ChipImage: chip.bin as read-only typed arrays, plus ``unmap()`` back to the layer graph.

``load(path)`` reads through ``compiler.backend.binfmt.read`` (magic, version, CRCs, bounds) and
then ``runtime.validate.validate`` checks everything the byte format cannot: the embedded
ChipSpec, META, every index, count, range and cross-table invariant the kernels rely on, and a
memory budget (docs/binfmt.md, "What a valid image guarantees to the kernels").
``unmap()`` rebuilds the logical integer layer graph (stage 'folded') from the crossbar bits,
registers and routes alone, so the runtime can be checked against ``compiler.reference.run_int``
without the source model.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from compiler.backend import binfmt, layerdesc
from compiler.backend.emit import unpack_crossbar
from compiler.chip import ChipSpec, spec_from_dict
from compiler.errors import BinaryFormatError
from compiler.ir.graph import Graph
from compiler.ir.linear import channels
from compiler.ir.nodes import IF, Input, Layer, NeuronRegs, Output
from runtime import kernels
from runtime.validate import resolve, validate


class ChipImage:
    """A loaded chip image. Arrays are read-only; derived tables are computed once."""

    def __init__(self, chipfile, path: str = "<memory>"):
        self.path = str(path)
        self.version = chipfile.version
        self.meta: dict = chipfile.meta
        self.a: dict[str, np.ndarray] = chipfile.arrays
        self.spec_digest = chipfile.spec_digest
        #: memory footprint of the kernel tables and of one worker's workspace (validate)
        self.footprint: dict = validate(self)
        if "op_table" in self.a:
            self._check_ops()

    # --- basic facts ------------------------------------------------------------------------
    def _bad(self, what: str, hint: str | None = None) -> BinaryFormatError:
        return BinaryFormatError(f"{self.path}: {what}", hint or
                                 "the file is inconsistent; recompile it with snnc compile")

    @cached_property
    def spec(self) -> ChipSpec:
        return spec_from_dict(self.meta["spec"], f"{self.path}: META spec", complete=True)

    @property
    def n_cores(self) -> int:
        return int(self.a["core_w"].size)

    @property
    def n_neurons(self) -> int:
        return int(self.a["neu_th_pos"].size)

    @property
    def n_axons(self) -> int:
        return int(self.a["core_axon_base"][-1])

    @property
    def n_inputs(self) -> int:
        return int(self.meta["input"]["size"])

    @property
    def latency(self) -> int:
        return int(self.meta["latency"])

    @property
    def layers(self) -> list[dict]:
        return self.meta["layers"]

    @property
    def chips(self) -> int:
        return int(self.meta["board"]["chips"])

    # --- logical-layer descriptors (op_* sections, compiler/backend/layerdesc.py) -----------
    def _check_ops(self) -> None:
        """Decode the descriptors and check that they reproduce every crossbar cell: a stale or
        hostile descriptor must never change a result, so the image is refused otherwise."""
        hint = ("the layer descriptors (op_* sections) disagree with the crossbars: the file "
                "was edited or is damaged; recompile it with snnc compile")
        try:
            ops = layerdesc.from_sections(self.a, len(self.layers))
        except layerdesc.DescriptorError as e:
            raise self._bad(f"layer descriptors: {e}", hint) from e
        inp = self.meta["input"]
        names = [L["name"] for L in self.layers]
        shape = {-1: tuple(inp["shape"])}
        shape.update({li: tuple(L["shape"]) for li, L in enumerate(self.layers)})
        seen = {}
        for k, op in enumerate(ops):
            L = self.layers[op.layer]
            src = inp["name"] if op.source < 0 else names[op.source]
            if (op.layer, op.source) in seen or src not in L["sources"]:
                raise self._bad(f"layer descriptors: op {k} describes layer '{L['name']}' from "
                                f"'{src}', which is not one of its (remaining) sources", hint)
            seen[(op.layer, op.source)] = k
            if (op.in_shape != layerdesc._shape3(shape[op.source])
                    or op.out_shape != layerdesc._shape3(shape[op.layer])):
                raise self._bad(f"layer descriptors: op {k} shapes {op.in_shape} -> "
                                f"{op.out_shape} do not match layer '{L['name']}'", hint)
        for li, L in enumerate(self.layers):
            for src in L["sources"]:
                si = -1 if src == inp["name"] else names.index(src)
                if (li, si) not in seen:
                    raise self._bad(f"layer descriptors: no op for layer '{L['name']}' from "
                                    f"'{src}'", hint)
        self._op_lookup = seen
        self._ops = ops
        rows = np.ascontiguousarray(self.a["op_table"], dtype=np.int64)
        index = np.ascontiguousarray(self.a["op_index"], dtype=np.int64)
        wts = np.ascontiguousarray(self.a["op_weights"], dtype=np.int64)
        for c in range(self.n_cores):
            ax_op, elem, nidx = self._core_op_args(c)
            bad = kernels.op_cells_mismatch(rows, index, wts, ax_op, elem, nidx, self.weights(c))
            if bad:
                raise self._bad(f"layer descriptors: {bad} crossbar cells of core {c} (layer "
                                f"'{self.layers[int(self.a['core_layer'][c])]['name']}') differ "
                                "from what the descriptors say", hint)

    def _core_op_args(self, c: int):
        a = self.a
        pop, elem = self._axon_src
        a0, a1 = int(a["core_axon_base"][c]), int(a["core_axon_base"][c + 1])
        n0, n1 = int(a["core_neuron_base"][c]), int(a["core_neuron_base"][c + 1])
        li = int(a["core_layer"][c])
        look = self._op_lookup
        ax_op = np.array([look.get((li, int(p)), -1) for p in pop[a0:a1]], np.int64)
        return (ax_op, np.ascontiguousarray(elem[a0:a1]),
                a["neu_index"][n0:n1].astype(np.int64))

    @cached_property
    def _axon_src(self):
        return self.axon_sources()

    @property
    def has_ops(self) -> bool:
        """Whether the image carries (checked) logical-layer descriptors."""
        return getattr(self, "_ops", None) is not None

    @property
    def layer_ops(self) -> list:
        """The checked descriptors (``compiler.backend.layerdesc.LayerOp``), one per (layer,
        source) in table order; [] for an image without them."""
        return list(getattr(self, "_ops", None) or [])

    def ops_of_layer(self, li: int) -> list:
        return [op for op in self.layer_ops if op.layer == li]

    @property
    def n_params(self) -> int:
        """Number of parameters (integers of all descriptors; parameter id = index)."""
        return int(self.a["op_weights"].size) if self.has_ops else 0

    def param_values(self) -> np.ndarray:
        """The integer value of every parameter id (int8 [n_params])."""
        self._need_ops()
        return self.a["op_weights"]

    def param_layer(self) -> np.ndarray:
        """The layer index of every parameter id (int64 [n_params])."""
        self._need_ops()
        out = np.empty(self.n_params, np.int64)
        for op in self.layer_ops:
            out[op.param_base:op.param_base + op.weights.size] = op.layer
        return out

    def cell_params(self, c: int) -> np.ndarray:
        """Which parameter each crossbar cell of core ``c`` holds: int64 [axons, neurons], the
        parameter id (index into :meth:`param_values`) or -1 where no synapse is mapped. Cells
        with equal ids hold the same trained integer (a conv kernel element is shared by every
        output position and by the inputs of its sum-pool window)."""
        self._need_ops()
        ax_op, elem, nidx = self._core_op_args(c)
        out = np.empty((ax_op.size, nidx.size), np.int64)
        kernels.op_cell_params(np.ascontiguousarray(self.a["op_table"], dtype=np.int64),
                               np.ascontiguousarray(self.a["op_index"], dtype=np.int64),
                               ax_op, elem, nidx, out)
        return out

    def _need_ops(self) -> None:
        if not self.has_ops:
            raise self._bad("the image has no layer descriptors (op_* sections)",
                            "recompile it with this snnc (`snnc compile`)")

    @cached_property
    def gaxon(self) -> np.ndarray:
        """Per neuron route entry: global destination axon, or -1-k for host output k."""
        return resolve(self, "rt_", self._bad)

    @cached_property
    def in_gaxon(self) -> np.ndarray:
        return resolve(self, "in_rt_", self._bad)

    @cached_property
    def core_of_neuron(self) -> np.ndarray:
        nb = self.a["core_neuron_base"].astype(np.int64)
        return np.repeat(np.arange(self.n_cores), np.diff(nb))

    @cached_property
    def core_of_axon(self) -> np.ndarray:
        ab = self.a["core_axon_base"].astype(np.int64)
        return np.repeat(np.arange(self.n_cores), np.diff(ab))

    def weights(self, c: int) -> np.ndarray:
        """Decoded integer weights of core ``c``: [axons, neurons]."""
        a = self.a
        n_n = int(a["core_neuron_base"][c + 1] - a["core_neuron_base"][c])
        n_a = int(a["core_axon_base"][c + 1] - a["core_axon_base"][c])
        lo, hi = int(a["core_xbar_base"][c]), int(a["core_xbar_base"][c + 1])
        packed = a["xbar"][lo:hi].reshape(-1, self.spec.xbar_cols // 8)
        return unpack_crossbar(packed, n_a, n_n, int(a["core_w"][c]), int(a["core_lcn"][c]),
                               self.spec)

    @cached_property
    def axon_table(self):
        """Global CSR by axon: (ptr [A+1], neuron [nnz] global, weight [nnz]) int64."""
        ptrs, nrns, ws = [np.zeros(1, np.int64)], [], []
        nb = self.a["core_neuron_base"].astype(np.int64)
        total = 0
        for c in range(self.n_cores):
            w = self.weights(c)
            r, j = np.nonzero(w)
            cnt = np.bincount(r, minlength=w.shape[0])
            ptrs.append(total + np.cumsum(cnt))
            total += int(cnt.sum())
            nrns.append(nb[c] + j)
            ws.append(w[r, j])
        def cat(parts):
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        return np.concatenate(ptrs).astype(np.int64), cat(nrns), cat(ws)

    def axon_sources(self):
        """(population index per axon: -1 input, else layer index; element index)."""
        pop = np.full(self.n_axons, -2, np.int64)
        elem = np.zeros(self.n_axons, np.int64)
        rb = self.a["neu_route_base"].astype(np.int64)
        src_neuron = np.repeat(np.arange(self.n_neurons), np.diff(rb))
        lay = self.a["core_layer"].astype(np.int64)[self.core_of_neuron]
        g = self.gaxon
        ok = g >= 0
        pop[g[ok]] = lay[src_neuron[ok]]
        elem[g[ok]] = self.a["neu_index"].astype(np.int64)[src_neuron[ok]]
        ib = self.a["in_route_base"].astype(np.int64)
        src_in = np.repeat(np.arange(self.n_inputs), np.diff(ib))
        pop[self.in_gaxon] = -1
        elem[self.in_gaxon] = src_in
        return pop, elem

    def regs(self, sel: np.ndarray) -> NeuronRegs:
        a = self.a
        mode = a["neu_mode"][sel].astype(np.int64)
        return NeuronRegs(
            th_pos=a["neu_th_pos"][sel], th_neg=a["neu_th_neg"][sel],
            v_reset=a["neu_v_reset"][sel], v_init=a["neu_v_init"][sel], bias=a["neu_bias"][sel],
            leak=a["neu_leak"][sel], shift=a["neu_shift"][sel],
            reset_mode=mode & 3, neg_mode=(mode >> 2) & 1, leak_mode=(mode >> 3) & 3)

    def layer_neurons(self, li: int) -> np.ndarray:
        """Global neuron ids of layer ``li`` in layer-local order."""
        L = self.layers[li]
        glob = np.flatnonzero(self.a["core_layer"][self.core_of_neuron] == li)
        local = self.a["neu_index"][glob].astype(np.int64)
        out = np.full(L["neurons"], -1, np.int64)
        out[local] = glob
        if np.any(out < 0):
            raise self._bad(f"layer '{L['name']}' has neurons missing from every core")
        return out

    def unmap(self) -> Graph:
        """Rebuild the logical integer layer graph from the image alone (stage 'folded')."""
        m = self.meta
        names = [L["name"] for L in self.layers]
        g = Graph({"stage": "folded", "input_scale": m["input"]["scale"],
                   "timesteps": m["timesteps"], "encoding": m["encoding"]})
        inp = m["input"]["name"]
        g.add(inp, Input(tuple(m["input"]["shape"])))
        pop, elem = self.axon_sources()
        ptr, nrn, wts = self.axon_table
        nidx = self.a["neu_index"].astype(np.int64)
        ax_of_entry = np.repeat(np.arange(self.n_axons), np.diff(ptr))
        nlayer = self.a["core_layer"].astype(np.int64)[self.core_of_neuron]
        sizes = {inp: self.n_inputs}
        for L in self.layers:
            sizes[L["name"]] = L["neurons"]
        for li, L in enumerate(self.layers):
            sel = nlayer[nrn] == li
            inputs = []
            for s in L["sources"]:
                si = -1 if s == inp else names.index(s)
                e = sel & (pop[ax_of_entry] == si)
                mat = sp.csr_matrix(
                    (wts[e].astype(np.int8), (elem[ax_of_entry[e]], nidx[nrn[e]])),
                    shape=(sizes[s], L["neurons"]))
                mat.sum_duplicates()
                inputs.append((s, mat))
            glob = self.layer_neurons(li)
            regs = self.regs(glob)
            is_out = L["name"] == m["output"]["layer"]
            scale = (np.asarray(m["output"]["scale"], np.float64) if is_out
                     else np.ones(L["neurons"]))
            shape = tuple(L["shape"])
            g.add(L["name"], Layer(shape=shape, inputs=tuple(inputs), bias=np.zeros(L["neurons"]),
                                   neuron=IF(v_threshold=regs.th_pos.astype(np.float64)),
                                   channel=channels(shape), bits=L["bits"], scale=scale,
                                   regs=regs), L["sources"])
        g.add("output", Output((m["output"]["neurons"],)), [m["output"]["layer"]])
        return g


def load(path: str | Path) -> ChipImage:
    """Read and validate chip.bin."""
    return ChipImage(binfmt.read(path), path)


def from_sections(sections: dict, spec_digest: str) -> ChipImage:
    """An image straight from ``emit`` output, through the byte format in memory."""
    return ChipImage(binfmt.read_bytes(binfmt.to_bytes(sections, spec_digest)), "<memory>")


__all__ = ["ChipImage", "load", "from_sections"]
