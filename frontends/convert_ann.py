"""Deprecated: ANN -> SNN conversion moved to ``frontends.onnx.ann`` (import from frontends.onnx).

This shim re-exports the old names and warns once on import.
"""

import warnings

from frontends.onnx.ann import *  # noqa: F401,F403
from frontends.onnx.ann import __all__, lower_snn, run_snn_float  # noqa: F401

warnings.warn("frontends.convert_ann is deprecated: import from frontends.onnx",
              DeprecationWarning, stacklevel=2)
