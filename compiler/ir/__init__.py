"""Graph IR: nodes (NIR field names, explicit discrete time), Graph, verify, printer."""

from compiler.ir.graph import Graph
from compiler.ir.nodes import (
    IF,
    LIF,
    Add,
    Affine,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Flatten,
    Input,
    Layer,
    Linear,
    NeuronRegs,
    Output,
    Scale,
    SumPool2d,
)
from compiler.ir.printer import dump
from compiler.ir.verify import STAGES, verify

__all__ = ["Graph", "IF", "LIF", "Add", "Affine", "AvgPool2d", "BatchNorm", "Conv2d", "Flatten",
           "Input", "Layer", "Linear", "NeuronRegs", "Output", "Scale", "SumPool2d", "dump",
           "STAGES", "verify"]
