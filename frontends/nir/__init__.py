"""NIR <-> graph IR: read (import with a producer's convention), write (export), conventions.

The module docstring of :mod:`frontends.nir.read` describes what NIR leaves open and how each
producer answers; docs/frontends.md has the producer table with versions.
"""

from frontends.nir.conventions import CONVENTION_NAMES, CONVENTIONS, CUBALIF_MODES, Convention
from frontends.nir.read import from_nir_graph, import_nir
from frontends.nir.write import export_nir, to_nir

__all__ = ["CONVENTIONS", "CONVENTION_NAMES", "CUBALIF_MODES", "Convention", "export_nir",
           "from_nir_graph", "import_nir", "to_nir"]
