"""IR node types: NIR field names, explicit discrete-time semantics (docs/ir.md).

Stage IMPORTED/BN_FOLDED graphs hold *operator* nodes (Input, Affine, Linear, Conv2d, AvgPool2d,
SumPool2d, Flatten, BatchNorm, Add, Scale, IF, LIF, Output). Shapes exclude batch and time.
From stage LOWERED on, every neuron population is one :class:`Layer` node whose incoming synapses
are sparse matrices (one per source population), so the graph is Input -> Layer* -> Output.

Discrete-time neuron semantics (float), per step t, with input current z_t:
    IF : v <- v + z_t          LIF: v <- beta * v + z_t          (leak, then integrate)
    s_t = v >= v_threshold     (the chip's predicate)
    reset 'soft': v <- v - v_threshold*s ; 'hard': v <- v_reset where s ; 'none': unchanged
    neg_floor (optional, >= 0): v <- max(v, -neg_floor)
Spikes carry the value 1; a producer whose spikes carry a value (converted ANNs) folds it into the
next layer's weights. Node arrays are read-only once built (passes are pure).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import scipy.sparse as sp

RESET_MODES = ("soft", "hard", "none")
RESET_CODE = {"hard": 0, "soft": 1, "none": 2}
LEAK_MODES = ("none", "add", "shift", "mult")
LEAK_CODE = {"none": 0, "add": 1, "shift": 2, "mult": 3}
NEG_CODE = {"none": 0, "saturate": 1}


def _ro(a, dtype=None) -> np.ndarray:
    a = np.array(a, dtype=dtype, copy=True)
    a.setflags(write=False)
    return a


def _tuple(v, n=2) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    return tuple(int(x) for x in v)


@dataclass(eq=False)
class Node:
    """Base class; subclasses are dataclasses whose ndarray fields are frozen after init."""

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray) and v.flags.writeable:
                v = v.copy()
                v.setflags(write=False)
                object.__setattr__(self, f.name, v)

    @property
    def kind(self) -> str:
        return type(self).__name__


# --- operator nodes --------------------------------------------------------------------------
@dataclass(eq=False)
class Input(Node):
    input_type: tuple[int, ...]             # shape without batch/time, e.g. (1, 8, 8)

    def __post_init__(self):
        self.input_type = tuple(int(s) for s in self.input_type)
        super().__post_init__()


@dataclass(eq=False)
class Output(Node):
    output_type: tuple[int, ...] = ()


@dataclass(eq=False)
class Affine(Node):
    weight: np.ndarray                      # [out, in]
    bias: np.ndarray                        # [out]


@dataclass(eq=False)
class Linear(Node):
    weight: np.ndarray                      # [out, in]


@dataclass(eq=False)
class Conv2d(Node):
    weight: np.ndarray                      # [C_out, C_in/groups, kh, kw]
    bias: np.ndarray                        # [C_out]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self):
        self.stride, self.padding = _tuple(self.stride), _tuple(self.padding)
        self.dilation = _tuple(self.dilation)
        super().__post_init__()


@dataclass(eq=False)
class AvgPool2d(Node):
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self):
        self.kernel_size, self.stride = _tuple(self.kernel_size), _tuple(self.stride)
        self.padding = _tuple(self.padding)
        super().__post_init__()


@dataclass(eq=False)
class SumPool2d(AvgPool2d):
    pass


@dataclass(eq=False)
class Flatten(Node):
    start_dim: int = 0                      # over the non-batch dims; 0 flattens everything
    end_dim: int = -1


@dataclass(eq=False)
class BatchNorm(Node):
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = 1e-5


@dataclass(eq=False)
class Scale(Node):
    scale: np.ndarray                       # broadcast over the input


@dataclass(eq=False)
class Add(Node):
    """Element-wise sum of all inputs (residual connections)."""


@dataclass(eq=False)
class IF(Node):
    v_threshold: np.ndarray                 # scalar or broadcastable to the neuron shape
    v_reset: np.ndarray = field(default_factory=lambda: np.zeros(()))
    v_init: np.ndarray = field(default_factory=lambda: np.zeros(()))
    reset_mode: str = "soft"
    neg_floor: float | None = None          # v is floored at -neg_floor (None: no floor)
    dt: float = 1.0

    def __post_init__(self):
        for n in ("v_threshold", "v_reset", "v_init"):
            setattr(self, n, np.asarray(getattr(self, n), dtype=np.float64))
        super().__post_init__()


@dataclass(eq=False)
class LIF(IF):
    beta: np.ndarray = field(default_factory=lambda: np.ones(()))   # decay per step

    def __post_init__(self):
        self.beta = np.asarray(self.beta, dtype=np.float64)
        super().__post_init__()


NEURON_TYPES = (IF, LIF)
SYNAPSE_TYPES = (Affine, Linear, Conv2d, AvgPool2d, SumPool2d, Flatten, BatchNorm, Scale, Add)


# --- lowered nodes ---------------------------------------------------------------------------
@dataclass(eq=False)
class NeuronRegs(Node):
    """Integer neuron registers, one entry per neuron (chip.md 'Neuron')."""

    th_pos: np.ndarray                      # int64, 1 .. 2**threshold_bits-1
    th_neg: np.ndarray                      # int64, floor magnitude (used when neg_mode=1)
    v_reset: np.ndarray                     # int64
    v_init: np.ndarray                      # int64
    bias: np.ndarray                        # int64, added every active tick
    leak: np.ndarray                        # int64: ADD value or MULT decay d
    shift: np.ndarray                       # int64: SHIFT k
    reset_mode: np.ndarray                  # int64 RESET_CODE
    neg_mode: np.ndarray                    # int64 NEG_CODE
    leak_mode: np.ndarray                   # int64 LEAK_CODE

    NAMES = ("th_pos", "th_neg", "v_reset", "v_init", "bias", "leak", "shift",
             "reset_mode", "neg_mode", "leak_mode")

    def __post_init__(self):
        for n in self.NAMES:
            setattr(self, n, np.asarray(getattr(self, n), dtype=np.int64).reshape(-1))
        super().__post_init__()

    @property
    def n(self) -> int:
        return self.th_pos.size

    def take(self, idx: np.ndarray) -> NeuronRegs:
        return NeuronRegs(**{k: getattr(self, k)[idx] for k in self.NAMES})


@dataclass(eq=False)
class Layer(Node):
    """A neuron population with all its incoming synapses composed into sparse matrices.

    ``inputs`` maps each source (the graph input or another Layer) to a CSR matrix of shape
    [n_source, n] (row = source element, column = neuron of this layer). Float stage: float
    weights in *event units* (input payloads for the graph input, 1 per spike otherwise) and a
    float neuron model; after ``quantize`` the matrices are integer, ``bits`` is the layer's
    weight width and ``scale[j]`` is the float value of one integer current unit of neuron j;
    after ``fold_thresholds`` ``regs`` holds the integer registers.
    """

    shape: tuple[int, ...]
    inputs: tuple[tuple[str, sp.csr_matrix], ...]
    bias: np.ndarray                        # float per neuron (current added every step)
    neuron: IF                              # the float neuron model (IF or LIF), per-neuron arrays
    channel: np.ndarray                     # int per neuron: output channel (per-channel scales)
    bits: int | None = None
    scale: np.ndarray | None = None
    regs: NeuronRegs | None = None
    leak_error: float = 0.0                 # max |beta_int - beta| from leak quantization

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        self.inputs = tuple((str(s), m) for s, m in self.inputs)
        super().__post_init__()

    @property
    def n(self) -> int:
        return int(np.prod(self.shape))

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.inputs)

    def matrix(self, source: str) -> sp.csr_matrix:
        for s, m in self.inputs:
            if s == source:
                return m
        raise KeyError(source)
