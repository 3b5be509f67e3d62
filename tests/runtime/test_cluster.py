"""Scale-out on Ray (runtime/lab/cluster.py): identical numbers to the local run, worker faults.

A local Ray instance with 2 CPUs on loopback, shared by the module's tests.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from compiler.encoding import encode  # noqa: E402
from frontends.datasets import load_dataset  # noqa: E402
from runtime.lab import noise  # noqa: E402
from runtime.lab.attacks import SweepConfig, attack_sweep  # noqa: E402
from runtime.lab.cluster import Cluster, connect  # noqa: E402
from runtime.lab.sweep import instance_accuracy, sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits_chip(tmp_path_factory):
    from compiler import compile_model
    from frontends import load_model
    path = tmp_path_factory.mktemp("ray") / "chip.bin"
    compile_model(load_model(ROOT / "examples/digits/model.onnx"), bits=8).write(path)
    return path


@pytest.fixture(scope="module")
def cluster():
    c = Cluster("local", num_cpus=2)
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def setup(digits_chip):
    import runtime
    img = runtime.load(digits_chip)
    ds = load_dataset("digits", "test", limit=48)
    p = encode("direct", ds.x.reshape(len(ds.x), -1), 4)
    return img, ds, p


def test_sweep_on_ray_equals_local(cluster, setup):
    img, ds, p = setup
    local = sweep(img, p, ds.y, "mismatch", [0.3, 0.6], 4, seed=5)
    remote = sweep(img, p, ds.y, "mismatch", [0.3, 0.6], 4, seed=5, cluster=cluster)
    assert [r["accuracies"] for r in local] == [r["accuracies"] for r in remote]
    assert cluster.info()["workers"] == 2


@pytest.mark.parametrize("encoding, eot", [("direct", 1), ("rate", 2)])
def test_attack_chunks_on_ray_equal_local(cluster, setup, encoding, eot):
    img, ds, _ = setup
    cfg = SweepConfig("pgd", (8 / 255,), encoding, 4, steps=2, eot=eot, seed=3, batch=16)
    local = attack_sweep(img, ds.x, ds.y, cfg)
    remote = attack_sweep(img, ds.x, ds.y, cfg, cluster=cluster)
    for a, b in zip(local["results"], remote["results"]):
        assert a["adv_accuracy"] == b["adv_accuracy"]
        assert a["linf"] == b["linf"] and a["l2"] == b["l2"]


def crash_once_unit(marker: str, image, payloads, labels, seed, model, i):
    """A sweep unit whose worker process is killed (SIGKILL) the first time unit 3 runs."""
    if i == 3 and not os.path.exists(marker):
        Path(marker).write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
    return instance_accuracy(image, payloads, labels, seed, model, i)


def test_killed_worker_is_retried_and_the_result_is_identical(cluster, setup, tmp_path):
    from ray import cloudpickle  # Ray's own copy pickles the task arguments
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    img, ds, p = setup
    model = noise.make_model("mismatch", 0.5)
    before = cluster.retries
    units = [(model, i) for i in range(6)]
    marker = str(tmp_path / "killed")
    got = cluster.map(crash_once_unit, units,
                      shared=(marker, cluster.put(img), cluster.put(p), cluster.put(ds.y), 7))
    want = [instance_accuracy(img, p, ds.y, 7, model, i) for i in range(6)]
    assert Path(marker).exists(), "the fault was not injected"
    assert cluster.retries == before + 1
    assert got == want


def test_unit_errors_are_not_retried(cluster):
    from compiler.errors import SnnError
    with pytest.raises(SnnError, match="unknown attack"):
        from runtime.lab.attacks import generate_chunk
        cluster.map(generate_chunk, [(np.zeros((1, 4)), np.zeros(1), "nope", 0.1, 1, None, 0, 0)],
                    shared=(None,))


def test_connect_without_flag_is_none():
    assert connect(None) is None
    from compiler.errors import SnnError
    with pytest.raises(SnnError):
        connect("  ")


def test_cli_ray_local_prints_the_same_sweep(cluster, digits_chip):
    from click.testing import CliRunner

    from runtime.cli import main_run
    args = [str(digits_chip), "--data", "digits", "--limit", "40", "--mismatch", "0.3,0.5",
            "--samples", "3", "--seed", "2", "--json"]
    a = CliRunner().invoke(main_run, args, catch_exceptions=False)
    b = CliRunner().invoke(main_run, args + ["--ray", "local"], catch_exceptions=False)
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    ja = json.loads(a.stdout)
    jb = json.loads(b.stdout)
    assert ja["sweep"] == jb["sweep"]
    assert "ray" not in ja
    assert set(jb["ray"]) >= {"address", "workers", "retries"}


def test_federated_training_on_ray_equals_local(cluster, setup):
    from runtime.lab.onchip import train
    img, ds, _ = setup
    kw = dict(epochs=2, batch=16, lr=0.05, seed=1, workers=3, federated=True, non_iid=True)
    t_local, r_local = train(img, ds.x, ds.y, **kw)
    t_ray, r_ray = train(img, ds.x, ds.y, cluster=cluster, **kw)
    assert r_local["accuracy_after"] == r_ray["accuracy_after"]
    np.testing.assert_array_equal(t_local.a["xbar"], t_ray.a["xbar"])
    assert r_local["cost"]["cycles"] == r_ray["cost"]["cycles"]
