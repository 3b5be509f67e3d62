"""The training library (stage: training): BPTT trainer, compiler-exact QAT, robust objectives
(forward noise, adversarial weights, AWP, adversarial inputs), QCFS conversion-aware training,
shift batch-norm, and the seed-comparison model builders.

* :mod:`~frontends.training.trainer`  :class:`Trainer`, :class:`TrainConfig`, :func:`train`
* :mod:`~frontends.training.qat`      :class:`Quantizer` (the compiler's quantization, exactly)
* :mod:`~frontends.training.robust`   objectives: Standard, ForwardNoise, AdversarialWeights, AWP,
  InputAdversarial
* :mod:`~frontends.training.qcfs`     QCFS / clip activations for ANN->SNN conversion
* :mod:`~frontends.training.shiftbn`  IntegerNet-style shift batch-norm
* :mod:`~frontends.training.models`   digits/event architectures trained for ``snnrun compare``
"""

from frontends.training.trainer import History, TrainConfig, Trainer, train

__all__ = ["Trainer", "TrainConfig", "History", "train"]
