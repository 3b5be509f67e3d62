"""The graph IR container: named nodes on a networkx.DiGraph plus graph-level attributes.

Edges carry data flow (source -> consumer). ``attrs`` holds graph-wide facts that passes add:
``stage``, ``input_scale`` (payload units per 1.0 of input), ``timesteps``, ``encoding``, ``dt``,
``calibration`` (per-layer report and spike rates), and the mapping results of partition/place/
route (``cores``, ``routes``). Passes never mutate a graph: they build a new one with
:meth:`Graph.derive`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import networkx as nx

from compiler.ir.nodes import Input, Layer, Node, Output


class Graph:
    """A named DAG of IR nodes."""

    def __init__(self, attrs: dict | None = None):
        self._g = nx.DiGraph()
        self.attrs: dict = dict(attrs or {})

    # --- construction --------------------------------------------------------------------
    def add(self, name: str, node: Node, inputs: Iterable[str] = ()) -> str:
        if name in self._g:
            raise ValueError(f"duplicate node name '{name}'")
        inputs = list(inputs)
        if len(set(inputs)) != len(inputs):
            # a DiGraph holds one edge per pair: x + x must be expressed as Scale(2)
            raise ValueError(f"node '{name}': repeated input in {inputs} (use a Scale node)")
        self._g.add_node(name, node=node, order=self._g.number_of_nodes())
        for i, src in enumerate(inputs):
            if src not in self._g:
                raise ValueError(f"node '{name}': unknown input '{src}'")
            self._g.add_edge(src, name, port=i)
        return name

    def derive(self) -> Graph:
        """An empty graph with a deep copy of this graph's attributes (for pure passes)."""
        return Graph(copy.deepcopy(self.attrs))

    def copy(self) -> Graph:
        g = self.derive()
        for name in self.topo_order():
            g.add(name, self.node(name), self.inputs(name))
        return g

    # --- queries --------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def node(self, name: str) -> Node:
        return self._g.nodes[name]["node"]

    def items(self) -> Iterator[tuple[str, Node]]:
        for n in self.topo_order():
            yield n, self.node(n)

    def inputs(self, name: str) -> list[str]:
        """Predecessors in port order."""
        preds = list(self._g.in_edges(name, data="port"))
        return [s for s, _, _ in sorted(preds, key=lambda e: e[2])]

    def consumers(self, name: str) -> list[str]:
        return sorted(self._g.successors(name), key=lambda n: self._g.nodes[n]["order"])

    def topo_order(self) -> list[str]:
        """Deterministic topological order (ties broken by insertion order)."""
        order = self._g.nodes
        return list(nx.lexicographical_topological_sort(self._g, key=lambda n: order[n]["order"]))

    def is_dag(self) -> bool:
        return nx.is_directed_acyclic_graph(self._g)

    def of_type(self, cls) -> list[str]:
        return [n for n in self.topo_order() if isinstance(self.node(n), cls)]

    @property
    def input_name(self) -> str:
        names = self.of_type(Input)
        if len(names) != 1:
            raise ValueError(f"graph must have exactly one Input node, has {len(names)}")
        return names[0]

    @property
    def output_name(self) -> str:
        names = self.of_type(Output)
        if len(names) != 1:
            raise ValueError(f"graph must have exactly one Output node, has {len(names)}")
        return names[0]

    @property
    def layers(self) -> list[str]:
        return self.of_type(Layer)

    @property
    def output_layer(self) -> str:
        (src,) = self.inputs(self.output_name)
        return src

    @property
    def stage(self) -> str:
        return self.attrs.get("stage", "imported")

    def nx(self) -> nx.DiGraph:
        """A read-only view of the underlying networkx graph."""
        return self._g.copy(as_view=True)
