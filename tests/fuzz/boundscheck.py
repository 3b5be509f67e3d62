"""Run under NUMBA_BOUNDSCHECK=1 (see test_images.test_kernels_with_bounds_checking).

Prints one JSON line: how many crafted files were refused, how many ran (bit-exact, with every
kernel index bounds-checked), and how many validator-bypassing runs the bounds checks caught.
"""

from __future__ import annotations

import json
import sys

import numba
import numpy as np
from corpus import CASES, base_sections, case_bytes, to_bytes
from runcheck import load_or_refuse, run_and_check

from compiler.backend import binfmt
from runtime.engines.tick import run_payloads
from runtime.image import ChipImage

FREE = ["xbar", "neu_v_init", "neu_bias", "neu_th_pos", "neu_th_neg", "neu_v_reset", "neu_leak",
        "neu_shift", "neu_mode"]


def unchecked(sec, digest, base):
    """A ChipImage over ``sec`` that skips validation (what main did before issue 10)."""
    cf = binfmt.read_bytes(binfmt.to_bytes(sec, digest))
    img = object.__new__(ChipImage)
    img.path, img.version, img.meta, img.a = "bypass", cf.version, cf.meta, cf.arrays
    img.spec_digest = cf.spec_digest
    img.footprint = base.footprint
    img.__dict__["spec"] = base.spec
    return img


def main(n: int) -> None:
    assert numba.config.BOUNDSCHECK, "run with NUMBA_BOUNDSCHECK=1"
    refused = ran = 0
    for name in CASES:
        img, why = load_or_refuse(case_bytes(name))
        if img is None:
            refused += 1
        else:
            run_and_check(img)
            ran += 1
    rng = np.random.default_rng(1)
    names = [k for k in binfmt.SECTIONS if k != "meta"]
    for _ in range(n):
        sec, _ = base_sections()
        # half the mutations hit the weights and registers, which often stay valid and run
        k = names[rng.integers(len(names))] if rng.random() < 0.5 else str(rng.choice(FREE))
        a = sec[k].reshape(-1).copy()
        if a.size:
            info = np.iinfo(a.dtype)
            v = int(rng.choice([rng.integers(-2, 70), rng.integers(info.min, info.max,
                                                                   endpoint=True)]))
            a[rng.integers(a.size)] = min(max(v, info.min), info.max)
            sec[k] = a
        img, why = load_or_refuse(to_bytes(sec))
        if img is None:
            refused += 1
        else:
            run_and_check(img)
            ran += 1
    # the control: without the validator the same checks fire on the corruptions
    sec, dig = base_sections()
    base, _ = load_or_refuse(binfmt.to_bytes(sec, dig))
    p = np.random.default_rng(0).integers(0, 256, (3, 2, base.n_inputs)).astype(np.uint8)
    caught = cases = 0
    sec1, _ = base_sections()
    sec1["core_layer"][:] = 7
    sec2, _ = base_sections()
    k = int(np.argmax(run_payloads(base, np.full_like(p, 255), workers=1).out_counts.sum(0)))
    gax = base.gaxon.copy()
    gax[np.flatnonzero(gax == -1 - k)[0]] = -1 - 100  # a firing output sent past the 6 outputs
    for s, g in ((sec1, None), (sec2, gax)):
        img = unchecked(s, dig, base)
        img.__dict__["gaxon"] = base.gaxon if g is None else g
        img.__dict__["in_gaxon"] = base.in_gaxon
        cases += 1
        try:
            run_payloads(img, np.full_like(p, 255), workers=1)
        except IndexError:
            caught += 1
    print(json.dumps({"refused": refused, "ran": ran, "bypass_cases": cases,
                      "bypass_caught": caught}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
