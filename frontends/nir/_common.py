"""Small helpers shared by the NIR reader and writer."""

from __future__ import annotations

import re

import numpy as np

from compiler.errors import FrontendError

FORMAT = "1"
PRODUCER = "snnc"


def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - nir is a dependency
        raise FrontendError("the 'nir' package is needed for .nir files", "pip install nir") from e
    return nir


def _sanitize(name: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", str(name)).strip("_")
    return s or "node"


def _a(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _compact(a: np.ndarray) -> np.ndarray:
    """A uniform array as a scalar (keeps IR/ONNX parameters small), else flat."""
    a = _a(a).reshape(-1)
    if a.size and np.all(a == a[0]):
        return np.asarray(a[0])
    return a


def _meta_str(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO" and v.size == 1:
        return _meta_str(v.reshape(-1)[0])
    return str(v)
