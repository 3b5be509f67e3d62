"""Honest results: the warnings every result carries (stage: lab; returns data, never prints).

A table that silently means nothing is worse than no table. Three causes are checked:

* **chance level**: the clean accuracy is within a few points of chance (1/classes), so
  "accuracy loss" and "ASR" under an attack or noise measure nothing. The margin is
  ``max(5 points, 2 binomial standard errors of chance at n samples)``;
* **encoding mismatch**: the run's input encoding is not the one the model was trained with
  (``META['training']['encoding']``, recorded at compile from the QAT / training export) or,
  when that is unknown, not the one the image was compiled for (``META['encoding']``);
* **1-bit weights that dropped negative weights**: the chip's 1-bit synapses are unsigned {0, 1},
  so a layer quantized to 1 bit lost every negative weight (``META['quant'][layer]
  ['negative_dropped']``, the fraction of its synapses that were negative).

:func:`result_warnings` returns the list of messages (empty when the result is meaningful);
:func:`chance_level` and :func:`encoding_note` are the single checks ``snnrun compare`` uses to
mark table cells.
"""

from __future__ import annotations

import math

CHANCE_MARGIN = 0.05
"""Minimum distance from chance (accuracy, absolute) for a clean accuracy to count as learned."""


def n_classes(image) -> int:
    return int(image.meta["output"]["neurons"])


def chance_margin(classes: int, n: int | None) -> float:
    """The band above chance a clean accuracy must clear: max(5 points, 2 binomial SEs)."""
    c = 1.0 / max(int(classes), 1)
    se = math.sqrt(c * (1 - c) / n) if n else 0.0
    return max(CHANCE_MARGIN, 2 * se)


def chance_level(accuracy: float | None, classes: int, n: int | None = None) -> bool:
    """True when ``accuracy`` is within :func:`chance_margin` of chance (1/classes)."""
    if accuracy is None or not math.isfinite(float(accuracy)) or classes < 2:
        return False
    return float(accuracy) <= 1.0 / classes + chance_margin(classes, n)


def trained_encoding(image) -> tuple[str, str]:
    """(encoding, where it comes from): the training record, else the compile option."""
    tr = image.meta.get("training") or {}
    if tr.get("encoding"):
        return str(tr["encoding"]), "trained with"
    return str(image.meta.get("encoding", "direct")), "compiled for"


def encoding_note(image, encoding: str) -> str | None:
    """A message when ``encoding`` is not the one the model was trained / compiled for."""
    want, how = trained_encoding(image)
    if encoding == want:
        return None
    return (f"input encoding '{encoding}' differs from the one the model was {how} ('{want}'): "
            f"the network never saw such inputs, so its accuracy (and any loss under attack or "
            f"noise) does not describe the model; train for '{encoding}' "
            f"(TrainConfig(encoding='{encoding}')) or run with --encoding {want}")


def negative_dropped(image) -> dict[str, float]:
    """{layer: fraction of its synapses that were negative and became 0} for 1-bit layers."""
    out = {}
    for name, q in (image.meta.get("quant") or {}).items():
        f = float(q.get("negative_dropped", 0.0) or 0.0)
        if int(q.get("bits", 8)) == 1 and f > 0:
            out[name] = f
    return out


def quant_warnings(quant: dict) -> list[str]:
    """Compile-time warnings from the per-layer quantization report (1-bit negatives)."""
    parts = [f"{k} {100 * float(q.get('negative_dropped') or 0):.0f}%"
             for k, q in (quant or {}).items()
             if int(q.get("bits", 8)) == 1 and float(q.get("negative_dropped") or 0) > 0]
    if not parts:
        return []
    return [f"1-bit weights are unsigned {{0, 1}} on this chip: negative weights became 0 "
            f"({', '.join(parts)} of the synapses); compile with --bits 2 or more for signed "
            f"weights"]


def result_warnings(image, *, clean_accuracy: float | None = None, n: int | None = None,
                    encoding: str | None = None, what: str = "clean accuracy") -> list[str]:
    """Every warning that applies to a result on ``image`` (see the module docstring)."""
    out = []
    classes = n_classes(image)
    if chance_level(clean_accuracy, classes, n):
        out.append(f"{what} {100 * clean_accuracy:.1f}% is within "
                   f"{100 * chance_margin(classes, n):.0f} points of chance "
                   f"({100 / classes:.1f}% for {classes} classes, n={n}): losses and attack "
                   f"success rates measured from it mean nothing")
    if encoding is not None:
        msg = encoding_note(image, encoding)
        if msg:
            out.append(msg)
    out += quant_warnings(image.meta.get("quant") or {})
    return out


def compare_marks(records, images_of, n: int | None = None) -> dict:
    """``snnrun compare``: {(encoding, model label): mark} for the table cells that mean nothing.

    ``images_of(encoding)`` gives the {label: ChipImage} used for that encoding; the float model
    ('float') is judged by the first of them. Marks: 'chance' (clean accuracy at chance level),
    'untrained encoding' (the encoding differs from the one the model was trained / compiled
    for) and '1-bit: negative weights dropped' (a chip image, not the float model). Records of
    one (encoding, model) share their clean accuracy."""
    marks: dict = {}
    for r in records:
        key = (r.get("encoding"), r.get("model"))
        if key in marks or r.get("table"):
            continue
        imgs = images_of(r.get("encoding")) or {}
        im = imgs.get(r.get("model")) or next(iter(imgs.values()), None)
        if im is None:
            continue
        why = []
        if encoding_note(im, r.get("encoding")):
            why.append("untrained encoding")
        if chance_level(r.get("clean_accuracy"), n_classes(im), n):
            why.append("chance")
        if r.get("model") != "float" and negative_dropped(im):
            why.append("1-bit: negative weights dropped")
        marks[key] = ", ".join(why) or None
    return {k: v for k, v in marks.items() if v}


__all__ = ["compare_marks", "result_warnings", "quant_warnings", "chance_level", "chance_margin",
           "encoding_note", "trained_encoding", "negative_dropped", "n_classes", "CHANCE_MARGIN"]
