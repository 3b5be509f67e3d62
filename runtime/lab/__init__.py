"""The robustness lab: what happens to a deployed chip image under device non-idealities and
adversarial inputs. Algorithms only: every function returns data (dicts, dataclasses, arrays)
and never prints; runtime/reports formats results, runtime/cli owns the options.

* :mod:`~runtime.lab.noise`    mismatch, PCM programming/drift/read noise, SRAM faults, dead cores
* :mod:`~runtime.lab.sweep`    Monte Carlo sweeps over chip instances, worst-case weights, landscape
* :mod:`~runtime.lab.certify`  IBP certificates of weight robustness
* :mod:`~runtime.lab.twin`     the differentiable twin (forward bit-exact with the runtime)
* :mod:`~runtime.lab.attacks`  FGSM, PGD, SDA evaluated on the runtime
* :mod:`~runtime.lab.evaluate` robustness metrics (accuracy loss, ASR, NSR, spike activity)
* :mod:`~runtime.lab.compare`  the seed papers' comparison tables on one model
* :mod:`~runtime.lab.onchip`   on-chip training of a deployed image (FP16 shadow, FedAvg, cost)

``runtime.lab.train(image, x, y, ...) -> (ChipImage, report)`` is the on-chip training API
(issue 17 names it ``runtime.train``; the execution package ``runtime`` may not import the lab,
docs/architecture.md rule 4, so it lives here and in the facade as ``snnc.train_chip``).
"""



def train(image, x, y, x_test=None, y_test=None, config=None, **kw):
    """On-chip training -> ``(tuned ChipImage, report)`` (:func:`runtime.lab.onchip.train`;
    imported on first use so that ``import runtime.lab.noise`` stays light)."""
    from runtime.lab.onchip import train as _train
    return _train(image, x, y, x_test, y_test, config, **kw)


__all__ = ["train"]
