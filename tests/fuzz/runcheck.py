"""Shared by the fuzz tests and the bounds-check subprocess: a crafted file must end clean."""

from __future__ import annotations

import numpy as np

from compiler import reference
from compiler.backend import binfmt
from compiler.errors import BinaryFormatError
from runtime.engines.tick import run_payloads
from runtime.image import ChipImage


def load_or_refuse(buf: bytes):
    """-> (image, None) if the validator accepts ``buf``, else (None, the one-line cause)."""
    try:
        return ChipImage(binfmt.read_bytes(buf, "crafted.bin"), "crafted.bin"), None
    except BinaryFormatError as e:
        msg = str(e).splitlines()[0]
        assert msg.startswith("crafted.bin"), msg
        return None, msg


def run_and_check(img, T: int = 3, B: int = 3, seed: int = 0) -> None:
    """Run ``img`` on random graded inputs; the runtime must equal the reference bit for bit."""
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 256, (T, B, img.n_inputs)).astype(np.uint8)
    p[:, :, ::3] = 0
    r = run_payloads(img, p, record=True, workers=1)
    ref = reference.run_int(img.unmap(), p, membrane_bits=img.spec.membrane_bits)
    for li, L in enumerate(img.layers):
        glob = img.layer_neurons(li)
        np.testing.assert_array_equal(r.counts_all[:, glob], ref.counts[L["name"]], L["name"])
        np.testing.assert_array_equal(r.v_all[:, glob], ref.v_final[L["name"]], L["name"])
    np.testing.assert_array_equal(r.out_counts, ref.counts[img.meta["output"]["layer"]])
