"""Mapping records attached to a graph by partition, place and route (graph.attrs).

``attrs["cores"]``: list[Core], one per used core, in a deterministic order (layer topo order, then
tile order). ``attrs["routes"]``: :class:`Routes`. Both are plain data, printed by the printer and
turned into chip.bin sections by the backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, eq=False)
class Core:
    """One physical core's content.

    ``neurons``: layer-local indices of the neurons on this core (logical neuron j of the core is
    ``neurons[j]``). Axon a of the core carries element ``axon_idx[a]`` of population
    ``layer.sources[axon_src[a]]``.
    """

    layer: str
    neurons: np.ndarray
    axon_src: np.ndarray
    axon_idx: np.ndarray
    w: int
    lcn: int
    chip: int = -1
    x: int = -1
    y: int = -1

    @property
    def n_neurons(self) -> int:
        return int(self.neurons.size)

    @property
    def n_axons(self) -> int:
        return int(self.axon_idx.size)

    @property
    def placed(self) -> bool:
        return self.chip >= 0

    def at(self, chip: int, x: int, y: int) -> Core:
        return replace(self, chip=int(chip), x=int(x), y=int(y))


@dataclass(frozen=True, eq=False)
class PopRoutes:
    """Route entries of one population (the input or a layer), CSR by source element.

    Entries of element i are ``indptr[i]:indptr[i+1]``; entry e sends to core index ``core[e]``
    (index into attrs['cores'], or -1 = host output) axon ``axon[e]`` with ``delay[e]`` ticks.
    """

    indptr: np.ndarray
    core: np.ndarray
    axon: np.ndarray
    delay: np.ndarray

    @property
    def n_entries(self) -> int:
        return int(self.core.size)


@dataclass(frozen=True, eq=False)
class Routes:
    depth: dict[str, int]                   # population -> pipeline depth (input = 0)
    latency: int                            # L: ticks from input step t to output step t
    pops: dict[str, PopRoutes] = field(default_factory=dict)
