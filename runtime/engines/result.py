"""RunResult: what every engine returns (outputs, counters, per-tick reports where defined)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runtime import kernels


@dataclass
class RunResult:
    """Outputs and counters of a run. Per-sample arrays have the batch as first axis."""

    timesteps: int
    latency_ticks: int
    encoding: str
    out_counts: np.ndarray          # [B, n_out]
    v_out: np.ndarray               # [B, n_out]
    scores: np.ndarray              # [B, n_out] float
    layer_spikes: np.ndarray        # [B, n_layers]
    stats: np.ndarray               # [B, N_STATS]
    tick_cycles: np.ndarray         # [B, T + L]
    core_busy: np.ndarray           # [n_cores] summed over the batch
    link_load: np.ndarray           # [n_links] flits summed over the batch
    layer_names: list[str]
    layer_sizes: np.ndarray
    energy_pj: dict[str, np.ndarray] = field(default_factory=dict)   # per sample
    clock_hz: float = 100e6
    wall_s: float = 0.0
    counts_all: np.ndarray | None = None   # [B, N] (record=True)
    v_all: np.ndarray | None = None        # [B, N] (record=True)
    engine: str = "tick"                   # which engine produced it ('tick' or 'layer')

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    @property
    def predictions(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)

    def accuracy(self, labels: np.ndarray) -> float:
        return float(np.mean(self.predictions == np.asarray(labels))) if self.n else float("nan")

    @property
    def sops(self) -> np.ndarray:
        return self.stats[:, kernels.ST_SOPS]

    @property
    def sops_1bit(self) -> np.ndarray:
        return self.stats[:, kernels.ST_SOPS1]

    @property
    def latency_us(self) -> np.ndarray:
        return self.stats[:, kernels.ST_CYCLES] / self.clock_hz * 1e6

    @property
    def energy_uj(self) -> np.ndarray:
        return sum(self.energy_pj.values()) * 1e-6

    def layer_rates(self) -> dict[str, float]:
        """Mean spikes per neuron per input step, per layer."""
        tot = self.layer_spikes.sum(axis=0)
        return {n: float(tot[i] / max(self.n * self.timesteps * self.layer_sizes[i], 1))
                for i, n in enumerate(self.layer_names)}

    def summary(self) -> dict:
        e = {k: float(np.mean(v)) * 1e-6 for k, v in self.energy_pj.items()}
        return {
            "n": self.n, "timesteps": self.timesteps, "encoding": self.encoding,
            "latency_ticks": self.latency_ticks,
            "sops_per_sample": float(np.mean(self.sops)) if self.n else 0.0,
            "sops_1bit_per_sample": float(np.mean(self.sops_1bit)) if self.n else 0.0,
            "spikes_per_sample": float(np.mean(self.stats[:, kernels.ST_SPIKES]))
            if self.n else 0.0,
            "packets_per_sample": float(np.mean(self.stats[:, kernels.ST_PACKETS]))
            if self.n else 0.0,
            "hops_per_sample": float(np.mean(self.stats[:, kernels.ST_HOPS])) if self.n else 0.0,
            "interchip_hops_per_sample": float(np.mean(self.stats[:, kernels.ST_XHOPS]))
            if self.n else 0.0,
            "energy_uj_per_sample": float(np.mean(self.energy_uj)) if self.n else 0.0,
            "energy_breakdown_uj": e,
            "energy_sop_headline_uj": float(np.mean(self.sops_1bit)) * 2.64e-6 if self.n else 0.0,
            # per-tick latency is a tick-engine quantity (None from the layer engine)
            "latency_us_per_sample": (float(np.mean(self.latency_us)) if self.n else 0.0)
            if self.engine == "tick" else None,
            "engine": self.engine,
            "layer_rates": self.layer_rates(),
            "samples_per_s": self.n / self.wall_s if self.wall_s > 0 else float("nan"),
        }


__all__ = ["RunResult"]
