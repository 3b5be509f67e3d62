"""Input encodings: images in [0, 1] -> integer input payloads for the chip (runtime stage 0).

In:  ``x`` float array of shape ``[B, ...]`` with every value in ``[0, 1]`` (B samples).
Out: ``uint8`` payloads of shape ``[T, B, n_in]`` with ``n_in = prod(x.shape[1:])``.

A payload ``p`` on input axon ``j`` at step ``t`` is a graded event: the chip integrates ``p * w``
(chip.md, "graded 8-bit input events"); ``p == 0`` means no event. The compiler's float model
reads payload ``p`` as the input value ``p / INPUT_SCALE`` with ``INPUT_SCALE = 255``, so a
"full" event (a binary spike) is ``255``.

Encodings (design: algorithms.md section 5; SpikingJelly ``activation_based/encoding.py`` is the
public reference they follow):

``direct``
    ``p_t = rint(255 * x)`` at every step (round half to even, as ``np.rint``/``torch.round``).
``rate``
    Bernoulli: ``p_t = 255 * 1[u_t < x]`` with ``u_t ~ U[0, 1)`` i.i.d. from
    ``numpy.random.Generator(PCG64(seed))``. Strict ``<`` (SpikingJelly uses ``<=``) so that
    ``x == 0`` never fires and ``x == 1`` always fires. The draws are taken sample by sample:
    sample ``b`` uses the ``T * n_in`` consecutive doubles after those of samples ``0..b-1``
    (laid out ``[T, n_in]``), so ``rate(x[:k], T, s) == rate(x, T, s)[:, :k]`` (batch-prefix
    consistency) and samples get independent draws.
``phase``
    Weighted phase coding (Kim et al., Neurocomputing 2018), K phases (1 <= K <= 8):
    ``r_0 = x``, ``bit_i = 1[r_i >= 2^-(i+1)]``, ``r_{i+1} = r_i - 2^-(i+1) bit_i``; phase ``i``
    carries the weight ``2^-(i+1)`` of the standard definition on the 8-bit payload scale, i.e.
    payload ``2^(7-i) * bit_i`` (256 * 2^-(i+1)), whatever K. Equivalently ``q = floor(2^K x)``
    and phase ``i`` carries ``(q & 2^(K-1-i)) * 2^(8-K)`` (how it is computed; equal to the
    recursion for binary floats). One period delivers ``sum_i p_i = 2^(8-K) q ~ 256 x``: the same
    magnitude for every K (the payload of ``x`` quantised to K bits), ``x`` up to 1/255 as
    direct coding. Step ``t`` uses phase ``t mod K`` (period K; if T < K only the first T phases
    are sent). Inputs above ``1 - 2^-K`` (which the recursion cannot represent; SpikingJelly
    asserts) are **clipped** to ``1 - 2^-K``, i.e. ``q <= 2^K - 1``. (Earlier versions: phase ``i``
    carried ``2^(K-1-i)``, so a period delivered only ``2^K/255`` of the magnitude for K < 8.)
``latency`` (``mode='linear'``) / ``latency-log`` (``mode='log'``)
    Time to first spike, one event of payload 255 per input at step
    linear: ``t_f = rint((T-1)(1-x))``; log: ``t_f = rint((T-1) - ln(alpha x + 1))`` with
    ``alpha = e^(T-1) - 1`` (so ``t_f(1) = 0``, ``t_f(0) = T-1``), clipped to ``[0, T-1]``,
    computed in float64. **Inputs with ``x == 0`` never fire.** This deviates from
    SpikingJelly's ``LatencyEncoder``, which one-hot encodes ``t_f(0) = T - 1`` and so fires
    zero (background) pixels in the last step; on the chip that would be a full-strength event
    for "no signal". Pass ``zero_fires=True`` to get SpikingJelly's behaviour.

Validation: every function raises :class:`compiler.errors.SimulationError` for ``T < 1``, a
non-finite or out-of-range ``x`` (the message gives the range found), ``x`` without a batch
dimension, an unknown encoding name or bad options.

:func:`encode_torch` is the float counterpart for the differentiable twin: forward values are
exactly ``encode(...) / 255`` (computed by the same numpy code, so same rounding and same random
draws), and the backward pass is a straight-through estimator; see :func:`ste_gain`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler.errors import SimulationError

INPUT_SCALE = 255
"""Payload units per 1.0 of input (a full event)."""

ENCODINGS = ("direct", "rate", "phase", "latency")
"""Encoding names; :func:`encode` also accepts ``"latency-log"``."""

ALIASES = {"latency-log": ("latency", {"mode": "log"}),
           "latency-linear": ("latency", {"mode": "linear"})}

PHASE_K_DEFAULT = 8
MAX_PHASE_K = 8  # 8-bit payloads: phase weight 2^(K-1) must fit, a period sums to <= 255

_RATE_CHUNK = 1 << 22  # doubles drawn per generator call (32 MiB), bounds memory for large batches


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------

def _check_T(T: Any, name: str) -> int:
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)):
        raise SimulationError(f"encoding '{name}': timesteps T must be an integer, got {T!r}",
                              "pass T as an int >= 1")
    if T < 1:
        raise SimulationError(f"encoding '{name}': timesteps T must be >= 1, got {T}",
                              "pass T >= 1 (e.g. --timesteps 8)")
    return int(T)


def _flatten(x: Any, name: str) -> np.ndarray:
    """Validate ``x`` [B, ...] in [0, 1]; return it as float64 [B, n_in] (C-contiguous)."""
    try:
        a = np.asarray(x)
    except Exception as e:  # pragma: no cover - exotic array-likes
        raise SimulationError(
            f"encoding '{name}': input is not an array ({type(x).__name__})") from e
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise SimulationError(f"encoding '{name}': input must be numeric, got dtype {a.dtype}",
                              "pass a float array in [0, 1]")
    if np.iscomplexobj(a):
        raise SimulationError(f"encoding '{name}': input must be real, got dtype {a.dtype}")
    if a.ndim < 2:
        raise SimulationError(
            f"encoding '{name}': input must have shape [B, ...] (a batch dimension first), "
            f"got shape {list(a.shape)}",
            "add a batch dimension, e.g. x[None] for a single sample")
    B = a.shape[0]
    n_in = int(np.prod(a.shape[1:], dtype=np.int64))
    f = np.ascontiguousarray(a.reshape(B, n_in), dtype=np.float64)
    if f.size:
        lo, hi = float(np.min(f)), float(np.max(f))
        if not (math.isfinite(lo) and math.isfinite(hi)) or np.isnan(f).any():
            raise SimulationError(f"encoding '{name}': input contains NaN or infinite values",
                                  "clean the data; inputs must be finite values in [0, 1]")
        if lo < 0.0 or hi > 1.0:
            hint = "normalise inputs to [0, 1] before encoding"
            if hi > 1.0 and hi <= 255.0 and lo >= 0.0:
                hint += " (8-bit images: divide by 255)"
            elif lo < 0.0:
                hint += " (undo mean/std normalisation: the chip takes raw intensities)"
            raise SimulationError(
                f"encoding '{name}': input values must lie in [0, 1], found range [{lo:g}, {hi:g}]",
                hint)
    return f


# --------------------------------------------------------------------------------------------------
# encoders (numpy, integer payloads)
# --------------------------------------------------------------------------------------------------

def direct(x: Any, T: int) -> np.ndarray:
    """Direct (analog) encoding: ``p_t = rint(255 x)`` at every step.

    Args:
        x: inputs [B, ...] in [0, 1].
        T: number of steps (>= 1).

    Returns:
        uint8 payloads [T, B, n_in].

    Raises:
        SimulationError: bad T or x.
    """
    T = _check_T(T, "direct")
    f = _flatten(x, "direct")
    p = np.clip(np.rint(f * INPUT_SCALE), 0, 255).astype(np.uint8)
    out = np.empty((T,) + p.shape, dtype=np.uint8)
    out[...] = p
    return out


def _generator(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationError(f"encoding 'rate': seed must be a non-negative int or a "
                              f"numpy Generator, got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


def rate_with_generator(x: Any, T: int, rng: np.random.Generator) -> np.ndarray:
    """Bernoulli rate encoding drawing from ``rng`` (advanced by ``B * T * n_in`` doubles).

    Args:
        x: inputs [B, ...] in [0, 1].
        T: number of steps (>= 1).
        rng: the numpy Generator to draw ``u ~ U[0, 1)`` from (sample-major, see module docstring).

    Returns:
        uint8 payloads [T, B, n_in], each 0 or 255.

    Raises:
        SimulationError: bad T, x or rng.
    """
    T = _check_T(T, "rate")
    if not isinstance(rng, np.random.Generator):
        raise SimulationError(f"encoding 'rate': rng must be a numpy Generator, got {rng!r}")
    f = _flatten(x, "rate")
    B, n = f.shape
    out = np.empty((T, B, n), dtype=np.uint8)
    per = T * n
    if per == 0 or B == 0:
        return out
    step = max(1, _RATE_CHUNK // per)  # samples per generator call
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        u = rng.random((b1 - b0, T, n))  # sample-major: identical stream to drawing one at a time
        spk = u < f[b0:b1, None, :]
        np.multiply(spk.transpose(1, 0, 2), np.uint8(INPUT_SCALE), out=out[:, b0:b1, :],
                    casting="unsafe")
    return out


def rate(x: Any, T: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Bernoulli rate encoding: ``p_t = 255 * 1[u_t < x]``, ``u_t ~ U[0, 1)`` i.i.d.

    Args:
        x: inputs [B, ...] in [0, 1].
        T: number of steps (>= 1).
        seed: int seed for ``Generator(PCG64(seed))``, or a Generator (then it is advanced).

    Returns:
        uint8 payloads [T, B, n_in], each 0 or 255. Same seed -> same payloads.

    Raises:
        SimulationError: bad T, x or seed.
    """
    return rate_with_generator(x, T, _generator(seed))


def _check_K(K: Any) -> int:
    if isinstance(K, (bool, np.bool_)) or not isinstance(K, (int, np.integer)) \
            or not 1 <= K <= MAX_PHASE_K:
        raise SimulationError(f"encoding 'phase': K must be an int in 1..{MAX_PHASE_K}, got {K!r}",
                              "the phase payload 2^(K-1) must fit the 8-bit input event")
    return int(K)


def phase_levels(x: Any, K: int = PHASE_K_DEFAULT) -> np.ndarray:
    """The quantised level ``q = min(floor(2^K x), 2^K - 1)`` of each input, int64 [B, n_in].

    One phase period delivers exactly ``2^(8-K) q`` payload units (the "phase sum identity").
    """
    K = _check_K(K)
    f = _flatten(x, "phase")
    return np.minimum(np.floor(f * float(1 << K)), float((1 << K) - 1)).astype(np.int64)


def phase(x: Any, T: int, K: int = PHASE_K_DEFAULT) -> np.ndarray:
    """Weighted phase encoding with K phases; step t is phase ``t mod K``.

    Phase ``i`` carries payload ``2^(7-i)`` (weight 2^-(i+1) on the 8-bit scale) if bit ``i`` of
    the binary expansion of ``x`` is set.
    Inputs above ``1 - 2^-K`` are clipped to ``1 - 2^-K``.

    Args:
        x: inputs [B, ...] in [0, 1].
        T: number of steps (>= 1).
        K: phases per period, 1..8.

    Returns:
        uint8 payloads [T, B, n_in].

    Raises:
        SimulationError: bad T, K or x.
    """
    T = _check_T(T, "phase")
    q = phase_levels(x, K)
    K = int(K)
    w = (1 << (K - 1 - np.arange(K, dtype=np.int64)))  # bit i of q is 2^(K-1-i)
    per = ((q[None, :, :] & w[:, None, None]) << (MAX_PHASE_K - K)).astype(np.uint8)  # 2^(7-i)
    if T == K:
        return per
    return np.ascontiguousarray(per[np.arange(T) % K])


def latency_times(x: Any, T: int, mode: str = "linear") -> np.ndarray:
    """Firing step ``t_f`` of each input, int64 [B, n_in] in [0, T-1] (before the x == 0 rule)."""
    T = _check_T(T, "latency")
    if mode not in ("linear", "log"):
        raise SimulationError(f"encoding 'latency': mode must be 'linear' or 'log', got {mode!r}")
    f = _flatten(x, "latency")
    if mode == "linear":
        tf = np.rint((T - 1.0) * (1.0 - f))
    else:
        if T - 1 <= 700:  # SpikingJelly's form while e^(T-1) is finite in float64
            alpha = math.exp(T - 1.0) - 1.0
            tf = np.rint((T - 1.0) - np.log(alpha * f + 1.0))
        else:  # no overflow: ln(a x + 1) = (T-1) + ln(x (1 - e^-(T-1)) + e^-(T-1))
            e = math.exp(-(T - 1.0))
            with np.errstate(divide="ignore"):
                tf = np.rint(-np.log(f * (1.0 - e) + e))
    return np.clip(tf, 0, T - 1).astype(np.int64)


def latency(x: Any, T: int, mode: str = "linear", zero_fires: bool = False) -> np.ndarray:
    """Latency (time-to-first-spike) encoding: one payload-255 event per input at step ``t_f``.

    Args:
        x: inputs [B, ...] in [0, 1].
        T: number of steps (>= 1).
        mode: ``'linear'`` (``t_f = rint((T-1)(1-x))``) or ``'log'``
            (``t_f = rint((T-1) - ln(alpha x + 1))``, ``alpha = e^(T-1) - 1``).
        zero_fires: if False (default), inputs with ``x == 0`` send no event; if True they fire at
            ``t_f = T-1`` as in SpikingJelly's ``LatencyEncoder``.

    Returns:
        uint8 payloads [T, B, n_in] with at most one 255 per input.

    Raises:
        SimulationError: bad T, mode or x.
    """
    tf = latency_times(x, T, mode)
    T = int(T)
    B, n = tf.shape
    out = np.zeros((T, B * n), dtype=np.uint8)
    flat_tf = tf.reshape(-1)
    cols = np.arange(B * n)
    if not zero_fires:
        f = _flatten(x, "latency").reshape(-1)
        keep = f > 0.0
        flat_tf, cols = flat_tf[keep], cols[keep]
    out[flat_tf, cols] = INPUT_SCALE
    return out.reshape(T, B, n)


# --------------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------------

def _resolve(name: Any, kw: dict) -> tuple[str, dict]:
    if not isinstance(name, str):
        raise SimulationError(f"encoding name must be a string, got {name!r}",
                              f"use one of {', '.join(ENCODINGS + ('latency-log',))}")
    key = name.strip().lower()
    if key in ALIASES:
        base, extra = ALIASES[key]
        kw = {**kw, **extra}
        key = base
    if key not in ENCODINGS:
        raise SimulationError(f"unknown encoding '{name}'",
                              f"use one of {', '.join(ENCODINGS + ('latency-log',))}")
    allowed = {"direct": set(), "rate": {"rng"}, "phase": {"K"},
               "latency": {"mode", "zero_fires"}}[key]
    bad = sorted(set(kw) - allowed)
    if bad:
        raise SimulationError(f"encoding '{name}': unexpected option(s) {bad}",
                              f"'{key}' accepts {sorted(allowed) or 'no options'}")
    return key, kw


def encode(name: str, x: Any, T: int, seed: int | np.random.Generator = 0, **kw: Any) -> np.ndarray:
    """Encode inputs ``x`` [B, ...] in [0, 1] with the named encoding.

    Args:
        name: one of :data:`ENCODINGS` or ``"latency-log"``.
        x: inputs [B, ...] in [0, 1].
        T: number of steps (>= 1).
        seed: seed (or Generator) for ``rate``; ignored by the deterministic encodings.
        **kw: ``K`` for phase; ``mode``, ``zero_fires`` for latency; ``rng`` for rate
            (a Generator, overrides ``seed``).

    Returns:
        uint8 payloads [T, B, n_in].

    Raises:
        SimulationError: unknown name or option, bad T or x.
    """
    key, kw = _resolve(name, kw)
    if key == "direct":
        return direct(x, T)
    if key == "rate":
        rng = kw.get("rng")
        return rate_with_generator(x, T, rng) if rng is not None else rate(x, T, seed)
    if key == "phase":
        return phase(x, T, kw.get("K", PHASE_K_DEFAULT))
    return latency(x, T, kw.get("mode", "linear"), bool(kw.get("zero_fires", False)))


# --------------------------------------------------------------------------------------------------
# torch counterpart (differentiable twin)
# --------------------------------------------------------------------------------------------------

def ste_gain(name: str, T: int, **kw: Any) -> float:
    """Per-step straight-through gain ``g = d out_t / d x`` used by :func:`encode_torch`.

    ``g`` is chosen so that ``sum_t g`` matches the slope, in x, of the value the encoding delivers
    over the window (in units of payload/255), with the quantisation / sampling replaced by its
    linear trend, spread evenly over the steps:

    * direct: ``out_t = rint(255 x)/255 ~ x`` -> ``g = 1``.
    * rate: ``E[out_t] = x`` -> ``g = 1``.
    * phase: a period delivers ``2^(8-K) floor(2^K x)/255 ~ (256/255) x`` over K steps ->
      ``g = 256/(255 K)``.
    * latency: one full event per input whatever x (the information is in its timing, which has no
      useful derivative) -> treat the window as delivering ``x`` in total: ``g = 1/T``.
    """
    key, kw = _resolve(name, kw)
    T = _check_T(T, key)
    if key in ("direct", "rate"):
        return 1.0
    if key == "phase":
        K = _check_K(kw.get("K", PHASE_K_DEFAULT))
        return float(1 << MAX_PHASE_K) / (INPUT_SCALE * K)
    return 1.0 / T


def encode_torch(name: str, x: Any, T: int, seed: int | np.random.Generator = 0,
                 **kw: Any):
    """Float, differentiable counterpart of :func:`encode` for the differentiable twin.

    Forward: ``encode(name, x, T, seed, **kw) / 255`` as a tensor of x's floating dtype (float32 for
    non-float x) on x's device, shape [T, B, n_in] -- the same numpy code computes the payloads, so
    rounding and random draws are identical. Backward: straight-through,
    ``d out_t / d x = ste_gain(name, T, **kw)`` elementwise for every t (so ``dL/dx`` is that gain
    times the sum over t of ``dL/d out_t``).

    Args:
        name, T, seed, **kw: as for :func:`encode`.
        x: torch tensor [B, ...] in [0, 1] (may require grad).

    Returns:
        torch tensor [T, B, n_in].

    Raises:
        SimulationError: as :func:`encode`.
    """
    import torch

    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim < 2:
        raise SimulationError(
            f"encoding '{name}': input must have shape [B, ...], got shape {list(x.shape)}",
            "add a batch dimension, e.g. x[None] for a single sample")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    flat = x.reshape(x.shape[0], -1)
    p = encode(name, flat.detach().cpu().numpy(), T, seed=seed, **kw)
    vals = torch.from_numpy(p).to(device=x.device, dtype=dtype) / INPUT_SCALE
    if not flat.requires_grad:
        return vals
    g = ste_gain(name, T, **kw)
    xf = flat.to(dtype)
    return vals + g * (xf - xf.detach()).unsqueeze(0)
