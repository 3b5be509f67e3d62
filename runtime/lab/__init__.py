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
"""
