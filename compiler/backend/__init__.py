"""Backend: emit sections from a routed graph; binfmt owns the chip.bin byte layout."""
