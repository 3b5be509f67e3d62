"""The one exception hierarchy of snnc, used by frontends, compiler and runtime.

Every user-facing failure is an :class:`SnnError` with *what* failed, *where* (file, layer, core,
section), *expected vs got* and a *hint*. The CLIs print ``str(err)`` without a traceback (unless
``--debug``) and exit with ``err.exit_code``.
"""

from __future__ import annotations


class SnnError(Exception):
    """Base class. ``message`` says what/where/expected/got, ``hint`` what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class FrontendError(SnnError):
    """A model file or module could not be imported."""


class UnsupportedOpError(FrontendError):
    def __init__(self, op: str, node_name: str, source: str, hint: str | None = None):
        self.op, self.node_name, self.source = op, node_name, source
        super().__init__(
            f"{source}: node '{node_name}' uses unsupported op '{op}'",
            hint or "replace it with a supported op (see docs/frontends.md) or remove it",
        )


class DatasetError(SnnError):
    """A dataset could not be found or parsed."""


class SpecError(SnnError):
    """A chip spec file is invalid."""


class IRVerificationError(SnnError):
    def __init__(self, stage: str, node: str, invariant: str, hint: str | None = None):
        self.stage, self.node, self.invariant = stage, node, invariant
        super().__init__(f"IR check failed at stage {stage}: node '{node}': {invariant}", hint)


class PassError(SnnError):
    """A compiler pass failed."""


class CapacityError(PassError):
    def __init__(self, message: str, resource: str, needed: int, available: int,
                 hint: str | None = None):
        self.resource, self.needed, self.available = resource, needed, available
        super().__init__(message, hint)


class QuantizationError(PassError):
    """Quantization produced a value the chip cannot hold, or a layer went silent (strict)."""


class BinaryFormatError(SnnError):
    """chip.bin is malformed."""


class BadMagicError(BinaryFormatError):
    pass


class FormatVersionError(BinaryFormatError):
    pass


class ChecksumError(BinaryFormatError):
    def __init__(self, message: str, section: str, hint: str | None = None):
        self.section = section
        super().__init__(message, hint)


class SimulationError(SnnError):
    """The runtime was given inputs or an image it cannot run."""


class FixedPointOverflowError(SimulationError):
    pass
