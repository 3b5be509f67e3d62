"""The package version (one home: setup.cfg reads it, chip.bin META records it)."""

__version__ = "0.2.0"
