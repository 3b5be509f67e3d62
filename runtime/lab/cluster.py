"""Scale-out on Ray: the lab's work units on a local or remote Ray cluster (docs/scale-out.md).

A run is split into independent *work units* whose seeds come from the run seed and the unit's
coordinates alone (a noise sweep: (instance, level); an attack: (sample chunk, eps) for each
encoding), so the result is identical, number for number, to the local run whatever the number
of workers or the order in which units finish. Large shared inputs (the chip image, the encoded
payloads, the attack's differentiable target) go into Ray's object store once per run.

Failure handling: units run with Ray's own task retries disabled and are resubmitted here when a
worker dies (``WorkerCrashedError``, lost objects, a dead node) up to ``max_retries`` times per
unit; the number of resubmissions is reported (``info()["retries"]``). An exception raised by the
unit's own code (a bad option, an SnnError) is not retried: it is re-raised on the driver.

Ray is imported only when a :class:`Cluster` is created: without ``--ray`` / ``cluster=`` nothing
here runs and Ray need not be installed (``pip install -e ".[cluster]"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from compiler.errors import SimulationError, SnnError
from compiler.progress import bar


def _ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SnnError("--ray needs the Ray package, which is not installed",
                       'install the cluster extra: pip install -e ".[cluster]"') from e
    return ray


def _system_errors(ray) -> tuple:
    ex = ray.exceptions
    names = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
             "ObjectReconstructionFailedError", "LocalRayletDiedError", "RaySystemError",
             "TaskUnschedulableError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


class _Shared:
    """A shared input's object ref, resolved on the worker through :data:`_CACHE`: the object is
    deserialized once per worker process and reused by every unit (with whatever it caches
    itself, e.g. a ChipImage's dense weight rows)."""

    def __init__(self, ref):
        self.ref = ref


_CACHE: dict = {}
_CACHE_SIZE = 8


def _resolve(a):
    if not isinstance(a, _Shared):
        return a
    key = a.ref.hex()
    if key not in _CACHE:
        import ray
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = ray.get(a.ref)
    return _CACHE[key]


def _call(fn: Callable, kwargs: dict, *args) -> Any:
    """What runs on a worker: one unit, with one torch/Numba thread per task (Ray runs one task
    per CPU it schedules; more threads per task would oversubscribe the node)."""
    import contextlib
    args = tuple(_resolve(a) for a in args)
    try:
        import torch
        ctx = _torch_threads(torch)
    except ImportError:  # pragma: no cover
        ctx = contextlib.nullcontext()
    with ctx:
        return fn(*args, **kwargs)


class _torch_threads:
    def __init__(self, torch):
        self.torch = torch

    def __enter__(self):
        self.old = self.torch.get_num_threads()
        self.torch.set_num_threads(1)

    def __exit__(self, *exc):
        self.torch.set_num_threads(self.old)


@dataclass
class Cluster:
    """A connection to a Ray cluster.

    Args:
        address: ``"local"`` starts a Ray instance in this process sized to the machine (loopback
            only, no dashboard); anything else is an existing cluster's address
            (``ray start --head`` printed it), e.g. ``"10.0.0.5:6379"`` or ``"auto"``.
        num_cpus: CPUs of a local instance (default: all cores).
        max_retries: resubmissions per unit after a worker or node failure.
        progress: show a progress bar (compiler/progress.py) while units stream back.
    """

    address: str = "local"
    num_cpus: int | None = None
    max_retries: int = 3
    progress: bool = False
    retries: int = 0
    units: int = 0
    _started: bool = field(default=False, repr=False)
    _remote: Any = field(default=None, repr=False)
    _refs: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        ray = _ray()
        if self.max_retries < 0:
            raise SimulationError(f"max_retries must be >= 0, got {self.max_retries}")
        if not ray.is_initialized():
            kw: dict = {"include_dashboard": False, "log_to_driver": False,
                        "configure_logging": False}
            if self.address == "local":
                n = self.num_cpus or os.cpu_count() or 1
                # loopback only: a local instance talks to nothing but this machine
                kw.update(num_cpus=int(n), _node_ip_address="127.0.0.1")
                ray.init(**kw)
            else:
                try:
                    ray.init(address=self.address, **kw)
                except (ConnectionError, ValueError, RuntimeError) as e:
                    raise SnnError(f"cannot join the Ray cluster at '{self.address}': {e}",
                                   "start it with `ray start --head` and pass the address it "
                                   "prints, or use --ray local") from e
            self._started = True
        self._remote = ray.remote(max_retries=0)(_call)

    # ------------------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        """CPUs the cluster offers (each runs one unit at a time)."""
        return int(_ray().cluster_resources().get("CPU", 0))

    @property
    def gpus(self) -> int:
        return int(_ray().cluster_resources().get("GPU", 0))

    def info(self) -> dict:
        """The ``"ray"`` key of a JSON report."""
        return {"address": self.address, "workers": self.workers, "retries": int(self.retries),
                "units": int(self.units)}

    def put(self, obj):
        """Place a large shared input in the object store once (the same object again returns
        the same ref); pass the ref to :meth:`map`."""
        hit = self._refs.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        ref = _ray().put(obj)
        self._refs[id(obj)] = (obj, ref)
        return ref

    def map(self, fn: Callable, units: Sequence[tuple], *, shared: tuple = (),
            desc: str = "units", num_gpus: float = 0.0, kwargs: dict | None = None) -> list:
        """``[fn(*shared, *unit, **kwargs) for unit in units]`` on the cluster, in unit order.

        ``fn`` must be a module-level function (workers import it); ``shared`` holds object refs
        from :meth:`put` (resolved on the worker) or small values.
        """
        ray = _ray()
        kwargs = dict(kwargs or {})
        sys_err = _system_errors(ray)
        opts = {"num_gpus": num_gpus} if num_gpus else {}

        ObjectRef = ray.ObjectRef
        shared = tuple(_Shared(a) if isinstance(a, ObjectRef) else a for a in shared)

        def submit(i):
            return self._remote.options(**opts).remote(fn, kwargs, *shared, *units[i])

        pending = {submit(i): i for i in range(len(units))}
        tries = [0] * len(units)
        out: list = [None] * len(units)
        self.units += len(units)
        with bar(len(units), desc, unit="unit", enabled=self.progress) as pb:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                i = pending.pop(ref)
                try:
                    out[i] = ray.get(ref)
                except sys_err as e:
                    if tries[i] >= self.max_retries:
                        raise SimulationError(
                            f"work unit {units[i]!r} of '{desc}' failed {tries[i] + 1} times "
                            f"on the Ray cluster: {type(e).__name__}: {str(e)[-300:]}",
                            "check the workers' logs (ray logs) or raise max_retries") from e
                    tries[i] += 1
                    self.retries += 1
                    pending[submit(i)] = i
                    continue
                except ray.exceptions.RayTaskError as e:
                    cause = e.as_instanceof_cause() if hasattr(e, "as_instanceof_cause") else e
                    if isinstance(cause, SnnError):
                        raise cause from None
                    raise SimulationError(f"work unit {units[i]!r} of '{desc}' raised: "
                                          f"{type(cause).__name__}: {cause}") from e
                pb.update(1)
        return out

    def shutdown(self) -> None:
        """Stop the Ray instance this object started (a joined cluster keeps running)."""
        if self._started:
            _ray().shutdown()
            self._started = False


def connect(spec: str | Cluster | None, progress: bool = False) -> Cluster | None:
    """``None`` -> no cluster; ``"local"`` or an address -> :class:`Cluster`; a Cluster as is."""
    if spec is None or isinstance(spec, Cluster):
        return spec
    spec = str(spec).strip()
    if not spec:
        raise SnnError("--ray needs 'local' or a cluster ADDRESS (host:port)",
                       "use --ray local on one machine")
    return Cluster(spec, progress=progress)


__all__ = ["Cluster", "connect"]
