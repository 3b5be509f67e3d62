"""The idiom corpus (issue 20): what PyTorch users write, exported with BOTH torch exporters.

Each small ``nn.Module`` is exported with torch.onnx.export(dynamo=True) (the default since
torch 2.9, opset 18+) and with the TorchScript exporter (dynamo=False), then either

- imported as an ANN, checked against onnxruntime (and against the module in torch), converted
  to IF neurons and compiled to a chip image, or
- refused with an error that names the idiom's op.

docs/frontends.md has the same table (idioms x exporter -> supported / refused (why)).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compiler import compile_model
from compiler.errors import SnnError
from frontends.onnx import check_onnxruntime, convert, import_ann, run_ann

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")   # the dynamo exporter's dependency (dev extra)


class _Fn(nn.Module):
    """conv(1->4, 3x3) -> ReLU -> ``body`` -> flatten -> Linear(.., 3)."""

    def __init__(self, body, conv=None):
        super().__init__()
        self.conv = conv or nn.Conv2d(1, 4, 3)
        self.body = body
        self.fc = nn.LazyLinear(3)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(F.relu(self.conv(x))), 1))


class _View(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, bias=False), nn.Linear(144, 3)

    def forward(self, x):
        y = F.relu(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


class _Residual(nn.Module):
    """The issue's residual CNN: bias-free conv + BN, residual add, strided conv, GAP."""

    def __init__(self, n_out: int = 3):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, n_out)

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(y + self.c2(y))
        y = F.relu(self.c3(y))
        return self.fc(torch.flatten(self.pool(y), 1))


class _Mean(nn.Module):
    def __init__(self, dims, keepdim=False):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.LazyLinear(3)
        self.dims, self.keepdim = dims, keepdim

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)).mean(self.dims, self.keepdim), 1))


def _seq(*layers):
    return nn.Sequential(*layers)


def _flat_head(*layers):
    return _seq(*layers, nn.Flatten(), nn.LazyLinear(3))


# name -> (factory, expected): expected is None (converts) or the text the refusal must contain
IDIOMS = {
    "nn.Flatten": (lambda: _flat_head(nn.Conv2d(1, 4, 3), nn.ReLU()), None),
    "x.view(N, -1)": (_View, None),
    "torch.flatten, F.relu and nn.Identity in forward": (lambda: _Fn(nn.Identity()), None),
    "ReLU6": (lambda: _flat_head(nn.Conv2d(1, 4, 3), nn.ReLU6()), None),
    "Hardtanh(0, 1)": (lambda: _flat_head(nn.Conv2d(1, 4, 3), nn.Hardtanh(0, 1)), None),
    "Dropout": (lambda: _flat_head(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Dropout(0.3)), None),
    "bias-free conv + BN2d": (lambda: _flat_head(nn.Conv2d(1, 4, 3, bias=False),
                                                 nn.BatchNorm2d(4), nn.ReLU()), None),
    "BN2d after ReLU": (lambda: _flat_head(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),
                                           nn.Conv2d(4, 4, 3), nn.ReLU()), None),
    "MLP Linear(bias=False) -> BN1d -> ReLU -> Dropout": (
        lambda: _seq(nn.Flatten(), nn.Linear(64, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                     nn.Dropout(0.2), nn.Linear(16, 3)), None),
    "residual CNN (BN, add, strided, AdaptiveAvgPool2d(1))": (_Residual, None),
    "strided conv": (lambda: _flat_head(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU()), None),
    "grouped conv": (lambda: _flat_head(nn.Conv2d(1, 4, 3), nn.ReLU(),
                                        nn.Conv2d(4, 4, 3, groups=2), nn.ReLU()), None),
    "depthwise conv": (lambda: _flat_head(nn.Conv2d(1, 4, 3), nn.ReLU(),
                                          nn.Conv2d(4, 4, 3, groups=4, padding=1), nn.ReLU()),
                       None),
    "padding=1": (lambda: _flat_head(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()), None),
    "padding=(1, 0)": (lambda: _flat_head(nn.Conv2d(1, 4, 3, padding=(1, 0)), nn.ReLU()), None),
    "padding='same', odd kernel": (lambda: _flat_head(nn.Conv2d(1, 4, 3, padding="same"),
                                                      nn.ReLU()), None),
    "padding='same', even kernel (asymmetric)": (
        lambda: _flat_head(nn.Conv2d(1, 4, 2, padding="same"), nn.ReLU()), None),
    "padding_mode='reflect'": (lambda: _flat_head(nn.Conv2d(1, 4, 3, padding=1,
                                                            padding_mode="reflect"),
                                                  nn.ReLU()), "Pad"),
    "AvgPool2d(2)": (lambda: _Fn(nn.AvgPool2d(2)), None),
    "AvgPool2d(3, 2, ceil_mode=True)": (lambda: _Fn(nn.AvgPool2d(3, 2, ceil_mode=True)), None),
    "AvgPool2d(3, 2, 1, ceil_mode=True)": (lambda: _Fn(nn.AvgPool2d(3, 2, 1, ceil_mode=True)),
                                           None),
    "AvgPool2d(3, 2, 1, count_include_pad=False)": (
        lambda: _Fn(nn.AvgPool2d(3, 2, 1, count_include_pad=False)), None),
    "AvgPool2d(2, ceil_mode=True, count_include_pad=False)": (
        lambda: _Fn(nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
                    conv=nn.Conv2d(1, 4, 2)), None),
    "AdaptiveAvgPool2d(1)": (lambda: _Fn(nn.AdaptiveAvgPool2d(1)), None),
    "AdaptiveAvgPool2d(3) (divides 6x6)": (lambda: _Fn(nn.AdaptiveAvgPool2d(3)), None),
    "x.mean((2, 3))": (lambda: _Mean((2, 3)), None),
    "x.mean((2, 3), keepdim=True)": (lambda: _Mean((2, 3), True), None),
    "x.mean(-1) (partial)": (lambda: _Mean(-1), None),
    "x.mean(1) (over channels)": (lambda: _Mean(1), "ReduceMean"),
    "trailing LogSoftmax": (lambda: _seq(_flat_head(nn.Conv2d(1, 4, 3), nn.ReLU()),
                                         nn.LogSoftmax(1)), None),
    "MaxPool2d": (lambda: _Fn(nn.MaxPool2d(2)), "MaxPool"),
    "Sigmoid": (lambda: _flat_head(nn.Conv2d(1, 4, 3), nn.Sigmoid()), "Sigmoid"),
    "LeakyReLU": (lambda: _flat_head(nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.1)), "LeakyRelu"),
}

SHAPE = (1, 8, 8)


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    m = IDIOMS[name][0]()
    m.eval()
    with torch.no_grad():
        m(torch.zeros(1, *SHAPE))                      # materialize LazyLinear
        for mod in m.modules():                        # non-trivial BatchNorm statistics
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return m


@contextlib.contextmanager
def _reused_dynamo_tables():
    """Build the dynamo exporter's op registry and decomposition table once, not per export.

    ``torch.onnx.export(dynamo=True)`` rebuilds both on every call (registry from the
    onnxscript torchlib, ~500 functions parsed from source; aten decomposition table): about
    two thirds of its CPU time on these tiny modules. Neither depends on the model, and the
    exporter only reads them, so the exported graphs are unchanged
    (``test_reused_dynamo_tables_change_nothing``). Private torch API: where it is missing the
    exporter runs as it is.
    """
    try:
        from torch.onnx._internal.exporter import _decomp, _registration
        from_torchlib = _registration.ONNXRegistry.from_torchlib.__func__
        table = _decomp.create_onnx_friendly_decomposition_table
    except (ImportError, AttributeError):
        yield None
        return
    originals = {"from_torchlib": classmethod(from_torchlib), "table": table}
    registries: dict = {}
    tables: dict = {}

    def cached_registry(cls, *args, **kw):
        key = (cls, args, tuple(sorted(kw.items())))
        if key not in registries:
            registries[key] = from_torchlib(cls, *args, **kw)
        return registries[key]

    def cached_table(ops):
        key = frozenset(ops)
        if key not in tables:
            tables[key] = table(ops)
        return dict(tables[key])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_registration.ONNXRegistry, "from_torchlib", classmethod(cached_registry))
        mp.setattr(_decomp, "create_onnx_friendly_decomposition_table", cached_table)
        yield originals


@pytest.fixture(scope="module", autouse=True)
def _fast_dynamo():
    """The originals of what :func:`_reused_dynamo_tables` replaced (None: nothing replaced).

    Also one torch thread for the module: these tensors are tiny, and extra intra-op threads
    only spin (several times the CPU time on the shared 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _reused_dynamo_tables() as originals:
            yield originals
    finally:
        torch.set_num_threads(threads)


def export(m: nn.Module, path, dynamo: bool) -> None:
    kw = {} if dynamo else dict(dynamic_axes={"x": {0: "batch"}})
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(m, (torch.zeros(1, *SHAPE),), str(path), dynamo=dynamo,
                              input_names=["x"], output_names=["y"], **kw)
        finally:
            logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((24,) + SHAPE)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("name", list(IDIOMS))
def test_idiom(tmp_path, data, name, dynamo):
    m = _build(name)
    p = tmp_path / "m.onnx"
    export(m, p, dynamo)
    expected = IDIOMS[name][1]
    if expected is not None:
        with pytest.raises(SnnError) as e:
            import_ann(p)
        assert expected in str(e.value), str(e.value)
        assert "Traceback" not in str(e.value)
        return
    ann = import_ann(p)
    ort = check_onnxruntime(ann, data)
    assert ort["ok"] and ort["max_abs_diff"] < 1e-5, ort
    with torch.no_grad():
        ref = m(torch.from_numpy(data).float()).double().numpy()
    ours = run_ann(ann.graph, data)
    if not isinstance(m[-1] if isinstance(m, nn.Sequential) else None, nn.LogSoftmax):
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-4)
    conv = convert(ann, data, timesteps=4, check=False)   # onnxruntime was checked above
    prog = compile_model(conv.graph, bits=8, timesteps=4)
    assert prog.complete and prog.summary()["cores_used"] >= 1


def _graph_only(path) -> bytes:
    """The ONNX model without its metadata (node names' provenance, doc strings), which even
    two plain exports of one module do not reproduce byte for byte."""
    import onnx
    m = onnx.load(str(path))
    m.ClearField("metadata_props")
    m.doc_string = ""
    for n in m.graph.node:
        n.ClearField("metadata_props")
        n.doc_string = ""
    return m.SerializeToString()


def test_reused_dynamo_tables_change_nothing(tmp_path, _fast_dynamo, monkeypatch):
    if _fast_dynamo is None:
        pytest.skip("this torch has no private exporter tables to reuse; nothing replaced")
    from torch.onnx._internal.exporter import _decomp, _registration
    m = _build("residual CNN (BN, add, strided, AdaptiveAvgPool2d(1))")
    export(m, tmp_path / "reused.onnx", True)
    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib", _fast_dynamo["from_torchlib"])
    monkeypatch.setattr(_decomp, "create_onnx_friendly_decomposition_table",
                        _fast_dynamo["table"])
    export(m, tmp_path / "plain.onnx", True)
    assert _graph_only(tmp_path / "reused.onnx") == _graph_only(tmp_path / "plain.onnx")


def test_residual_cnn_both_exporters_same_chip(tmp_path):
    """Issue 20's headline case, small: a residual CNN (BN, residual add, strided conv,
    AdaptiveAvgPool2d(1)) briefly trained on digits converts the same from the default dynamo
    export (ReduceMean + Reshape) as from the TorchScript one (GlobalAveragePool + Flatten):
    equal imported outputs, equal chip predictions (examples/experiments/exporters.py has the
    full-size measurement)."""
    from frontends.datasets import load_dataset
    from frontends.onnx import snn_payloads
    from runtime.engines.tick import run_payloads
    from runtime.image import from_sections

    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    m = _Residual(n_out=10)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    x, y = torch.from_numpy(tr.x).float(), torch.from_numpy(tr.y).long()
    for _ in range(5):                # one torch thread (the module fixture): ~1 s of CPU
        for i in range(0, len(x), 32):
            opt.zero_grad()
            F.cross_entropy(m(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    m.eval()
    xt, yt = te.x[:64], te.y[:64]
    outs, preds, accs = {}, {}, {}
    for dynamo in (True, False):
        p = tmp_path / f"{dynamo}.onnx"
        export(m, p, dynamo)
        ann = import_ann(p)
        outs[dynamo] = run_ann(ann.graph, xt)
        conv = convert(ann, tr.x[:128], timesteps=8)
        prog = compile_model(conv.graph, bits=8, timesteps=8)
        img = from_sections(prog.sections(), prog.spec.digest())
        rr = run_payloads(img, snn_payloads(xt, 8).astype(np.uint8))
        preds[dynamo], accs[dynamo] = rr.predictions, rr.accuracy(yt)
    ann_acc = float(np.mean(np.argmax(outs[True], 1) == yt))
    assert ann_acc >= 0.5, ann_acc                 # trained: the comparison is not of noise
    np.testing.assert_allclose(outs[True], outs[False], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(preds[True], preds[False])
    assert accs[True] >= ann_acc - 0.1, (accs, ann_acc)
