"""Deprecated: use :mod:`frontends.nir` (read, write, conventions). Kept as a re-export."""

import warnings

from frontends.nir import (  # noqa: F401
    CONVENTION_NAMES,
    CONVENTIONS,
    CUBALIF_MODES,
    Convention,
    export_nir,
    from_nir_graph,
    import_nir,
    to_nir,
)

warnings.warn("frontends.nir_io is deprecated; import from frontends.nir", DeprecationWarning,
              stacklevel=2)

__all__ = ["CONVENTIONS", "CONVENTION_NAMES", "CUBALIF_MODES", "Convention", "export_nir",
           "from_nir_graph", "import_nir", "to_nir"]
