"""Quantization-aware training (QAT) to a ChipSpec, bit-exact with the compiler (stage: training).

:class:`Quantizer` quantizes a native model *exactly as* ``compile_model`` will
(``fold-bn -> lower -> quantize -> fold-thresholds``, docs/passes.md), reading the live float
weights. Per neuron population ("layer") the compiler composes the synapse chain in front of it
into one matrix in *event units* and quantizes that; for the chains supported here every composed
entry is one weight times a constant factor:

    entry = W * f,   f = (prod of AvgPool 1/k^2 and x*c factors, in chain order)
                         * (1/255 when the source is the graph input: payload = rint(255 x))
    group max m_g = max |entry| over the group (whole layer, or one output channel with
                    per_channel; clip='pXX' uses the XX-th percentile of the non-zero entries,
                    each weight counted once per synapse it makes)
    s_g = max(m_g / q_max, register floors)           q_max = 2**(bits-1) - 1 (bits=1: {0, 1})
    W_int = clip(rint(W * f / s_g), -q_max, q_max)
    th_pos = max(1, rint(v_threshold / s)), bias = rint(b / s), v_init = rint(v_init / s), ...

(float64, the same operation order as the compiler, so the same roundings). An AvgPool's
1/k^2 therefore lands in the scale, not in the integers: on the chip the pool is a *sum* pool.

Two uses:

* training: ``with quantizer.quantized(): loss = ...; loss.backward()`` swaps the fake-quantized
  values into the model (weights ``W_int * s / f``, biases ``bias_int * s``, thresholds
  ``th_pos * s``, v_init/v_reset likewise, LIF beta as the chip's leak) and restores the float
  master values on exit, so the optimizer steps the full-precision weights with the gradient
  taken at the quantized ones (straight-through): the "quantize, forward, backward, restore,
  step" loop of algorithms.md section 7.2;
* evaluation: :meth:`Quantizer.run_int` runs the integer model (integer weights, sum pools,
  24-bit saturating membranes, the chip's leak and reset) with the same layer-synchronous
  semantics as ``compiler.reference.run_int``; its counts, final membranes and scores equal the
  compiled chip's runtime output bit for bit (tests/frontends/test_qat.py).

Supported structure (anything else raises UnsupportedOpError naming the module): a population
(the graph input or an IF/LIF) -> any of non-overlapping AvgPool2d (stride == kernel), Flatten,
x * constant, Dropout/Identity -> exactly one Conv2d or Linear -> optional x * constant /
:class:`ShiftBN` -> an IF/LIF; residual ``a + b`` of such chains from distinct sources; the
model returns its last IF/LIF. BatchNorm: fold it first with :func:`fold_batchnorm` (or use
:class:`ShiftBN`, IntegerNet-style shift batch-norm, exported by :func:`export_model`).
"""

from frontends.training.qat.analysis import INPUT_SCALE, SOURCE, Branch, QLayer, analyze
from frontends.training.qat.quantiser import (
                                              IntResult,
                                              LayerQuant,
                                              Quantizer,
                                              export_model,
                                              payloads,
                                              quantize_input,
)
from frontends.training.qat.transforms import (
                                              check_against,
                                              fold_batchnorm,
                                              qat_summary,
                                              shift_stats,
)
from frontends.training.shiftbn import ShiftBN

__all__ = ["INPUT_SCALE", "SOURCE", "Branch", "QLayer", "analyze", "IntResult", "LayerQuant",
           "Quantizer", "payloads", "quantize_input", "check_against", "export_model",
           "fold_batchnorm", "qat_summary", "shift_stats", "ShiftBN"]
