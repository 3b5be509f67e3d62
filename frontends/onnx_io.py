"""Deprecated: the ONNX frontend moved to the package ``frontends.onnx`` (snn, ann, export, common).

This shim re-exports the old names and warns once on import.
"""

import warnings

from frontends.onnx import *  # noqa: F401,F403
from frontends.onnx import __all__  # noqa: F401
from frontends.onnx.common import check_file as _check_file  # noqa: F401

warnings.warn("frontends.onnx_io is deprecated: import from frontends.onnx",
              DeprecationWarning, stacklevel=2)
