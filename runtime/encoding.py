"""Input encodings now live in :mod:`compiler.encoding` (the chip's input semantics, shared by the
compiler, the runtime and the training library); this name is kept for compatibility."""

from compiler.encoding import *  # noqa: F401,F403
from compiler.encoding import INPUT_SCALE, encode, encode_torch  # noqa: F401
