"""Provenance of a result: what produced it, from what, where (every report's ``provenance``).

``provenance(...)`` returns a plain dict (JSON-ready):

    snnc_version, command (argv as one shell-quoted line), cwd, created (UTC ISO time),
    image {path, sha256, format_version, compiler_version}  (chip.bin, when there is one),
    model {path, sha256, ...}   (the source recorded in the image's META, and/or a model file
                                 given on the command line, hashed here),
    training {...}              (the image's training record: encoding, T, bits, ... when known),
    seeds {name: value}, engine, machine {host, platform, python, cpu_count, numpy, numba,
    torch}

``markdown(prov)`` renders it as a "## Provenance" section.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path


def _sha256(path) -> str | None:
    from compiler.backend.emit import file_sha256
    try:
        return file_sha256(path)
    except OSError:
        return None


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "numba", "torch"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except ImportError:  # pragma: no cover - all are dependencies
                continue
        out[mod] = getattr(m, "__version__", "?")
    return out


def machine() -> dict:
    return {"host": platform.node(), "platform": platform.platform(),
            "processor": platform.machine(), "cpu_count": os.cpu_count(), **_versions()}


def command_line(argv=None) -> str:
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return " ".join(shlex.quote(str(a)) for a in argv)


def provenance(*, image=None, image_path=None, model_path=None, seeds: dict | None = None,
               engine: str = "tick", argv=None, extra: dict | None = None) -> dict:
    """Provenance of one result (see the module docstring)."""
    from snnc._version import __version__
    out: dict = {
        "snnc_version": __version__,
        "command": command_line(argv),
        "cwd": os.getcwd(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if image_path is not None:
        out["image"] = {"path": str(image_path), "sha256": _sha256(image_path)}
    if image is not None:
        meta = image.meta
        out.setdefault("image", {})
        out["image"].update({"format_version": ".".join(map(str, image.version)),
                             "compiler_version": meta.get("compiler_version"),
                             "chip": image.spec.name})
        src = dict(meta.get("source") or {})
        if src:
            out["model"] = src
        if meta.get("training"):
            out["training"] = dict(meta["training"])
    if model_path is not None:
        m = {"path": str(model_path), "sha256": _sha256(model_path)}
        rec = out.get("model") or {}
        if rec.get("sha256") and m["sha256"] and rec["sha256"] != m["sha256"]:
            m["differs_from_image_source"] = True
        out["model_file"] = m
    out["seeds"] = {k: v for k, v in (seeds or {}).items() if v is not None}
    out["engine"] = engine
    out["machine"] = machine()
    if extra:
        out.update(extra)
    return out


def markdown(prov: dict | None) -> str:
    """A '## Provenance' Markdown section (empty string for None)."""
    if not prov:
        return ""
    lines = ["## Provenance", "", "| | |", "|---|---|",
             f"| snnc | {prov.get('snnc_version')} |",
             f"| command | `{prov.get('command', '')}` |",
             f"| created | {prov.get('created', '')} |"]
    im = prov.get("image")
    if im:
        lines.append(f"| chip image | {im.get('path', '-')} (sha256 {im.get('sha256') or '-'}"
                     f", format {im.get('format_version', '-')}) |")
    m = prov.get("model")
    if m:
        lines.append(f"| model (compiled from) | {m.get('path', '-')} (sha256 "
                     f"{m.get('sha256', '-')}) |")
    mf = prov.get("model_file")
    if mf:
        lines.append(f"| model file | {mf['path']} (sha256 {mf.get('sha256') or '-'}) |")
    tr = prov.get("training")
    if tr:
        lines.append("| training | " + ", ".join(f"{k} {v}" for k, v in tr.items()) + " |")
    if prov.get("seeds"):
        lines.append("| seeds | " + ", ".join(f"{k} {v}" for k, v in prov["seeds"].items())
                     + " |")
    lines.append(f"| engine | {prov.get('engine', '-')} |")
    mc = prov.get("machine") or {}
    lines.append(f"| machine | {mc.get('host', '?')}: {mc.get('platform', '?')}, "
                 f"{mc.get('cpu_count', '?')} CPUs, Python {mc.get('python', '?')}, numpy "
                 f"{mc.get('numpy', '?')}, numba {mc.get('numba', '?')}, torch "
                 f"{mc.get('torch', '?')} |")
    return "\n".join(lines) + "\n"


__all__ = ["provenance", "markdown", "machine", "command_line"]
