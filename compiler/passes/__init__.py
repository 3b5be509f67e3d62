"""The pipeline: the only place where pass order is set.

fold-bn -> lower -> quantize -> fold-thresholds -> calibrate -> partition -> place -> route
"""

from compiler.passes.calibrate import calibrate
from compiler.passes.fold_bn import fold_bn
from compiler.passes.fold_thresholds import fold_thresholds
from compiler.passes.lower import lower
from compiler.passes.manager import Pass, run_pipeline
from compiler.passes.partition import partition
from compiler.passes.place import place
from compiler.passes.quantize import quantize
from compiler.passes.route import route

PIPELINE = (
    Pass("fold-bn", fold_bn, "bn_folded"),
    Pass("lower", lower, "lowered"),
    Pass("quantize", quantize, "quantized"),
    Pass("fold-thresholds", fold_thresholds, "folded"),
    Pass("calibrate", calibrate, "folded"),
    Pass("partition", partition, "partitioned"),
    Pass("place", place, "placed"),
    Pass("route", route, "routed"),
)
PASS_NAMES = tuple(p.name for p in PIPELINE)

__all__ = ["PIPELINE", "PASS_NAMES", "Pass", "run_pipeline", "calibrate", "fold_bn",
           "fold_thresholds", "lower", "partition", "place", "quantize", "route"]
