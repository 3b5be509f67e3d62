"""The training record a model carries: how it was trained (stage: any; plain dicts).

A QAT or training export (frontends/training: ``Quantizer.export_onnx``, ``export_onnx(...,
training=...)``) writes the settings the network was trained for into the model's metadata
(ONNX ``metadata_props['snnc.training']``, JSON); the importer puts it into
``graph.attrs['training']`` and the backend into the image's ``META['training']``::

    {"bits": 4, "per_channel": true, "clip": "max", "encoding": "direct", "timesteps": 8,
     "qat": true, "chip": "picore64"}

(``bits``/``per_channel``/``clip`` only for quantization-aware training.) ``snnc compile`` and
:func:`snnc.compile` use the record as the defaults of those options and refuse an explicitly
given option that contradicts it (:func:`resolve`): a 4-bit QAT model compiled at 8 bits is not
the network that was trained.
"""

from __future__ import annotations

import json

from compiler.errors import SnnError

KEYS = ("bits", "per_channel", "clip", "encoding", "timesteps")
OPTION = {"bits": "--bits", "per_channel": "--per-channel", "clip": "--clip",
          "encoding": "--encoding", "timesteps": "--timesteps"}
META_KEY = "snnc.training"


def normalize(record: dict | None) -> dict:
    """A record with known keys in their plain types (unknown keys kept as they are)."""
    out = dict(record or {})
    if "bits" in out and out["bits"] is not None:
        out["bits"] = int(out["bits"])
    if "per_channel" in out and out["per_channel"] is not None:
        out["per_channel"] = bool(out["per_channel"])
    if "timesteps" in out and out["timesteps"] is not None:
        out["timesteps"] = int(out["timesteps"])
    for k in ("clip", "encoding"):
        if out.get(k) is not None:
            out[k] = str(out[k])
    return {k: v for k, v in out.items() if v is not None}


def dumps(record: dict) -> str:
    return json.dumps(normalize(record), sort_keys=True)


def loads(text: str, where: str = "model") -> dict:
    try:
        rec = json.loads(text)
    except ValueError as e:
        raise SnnError(f"{where}: metadata {META_KEY} is not JSON: {text[:60]!r}",
                       "re-export the model with snnc") from e
    if not isinstance(rec, dict):
        raise SnnError(f"{where}: metadata {META_KEY} is not a JSON object")
    return normalize(rec)


def _same(key: str, a, b) -> bool:
    if key == "bits":
        return str(a) == str(b)
    return a == b


def resolve(record: dict | None, options: dict, explicit: set[str] | frozenset = frozenset(),
            where: str = "the model") -> dict:
    """``options`` with the record's values as defaults.

    ``explicit``: the option names the user gave. One of them that differs from the record
    raises :class:`SnnError` saying why; the others take the record's value."""
    rec = normalize(record)
    out = dict(options)
    how = "quantization-aware" if rec.get("qat") else ""
    for k in KEYS:
        if k not in rec:
            continue
        if k in explicit and k in options and not _same(k, options[k], rec[k]):
            raise SnnError(
                f"{OPTION[k]} {_show(k, options[k])} conflicts with {where}: it was trained "
                f"{how + ' ' if how else ''}for {OPTION[k]} {_show(k, rec[k])} (recorded in "
                f"its metadata: {dumps(rec)})",
                f"drop {OPTION[k]} to use the recorded value; the chip would otherwise run a "
                f"network that differs from the one trained (retrain or re-export for "
                f"{OPTION[k]} {_show(k, options[k])})")
        out[k] = rec[k]
    return out


def _show(key, v) -> str:
    if key == "per_channel":
        return "on" if v else "off"
    return str(v)


__all__ = ["KEYS", "META_KEY", "normalize", "dumps", "loads", "resolve"]
