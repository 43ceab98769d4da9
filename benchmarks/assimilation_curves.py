"""The assimilation curves of issue 18: relative L2 error against time for every estimator, from the
three benchmarks' JSON files (no new runs).

    python benchmarks/assimilation_curves.py      # writes benchmarks/figures/assimilation_curves.png

Burgers (``assimilate_burgers.json``, with the EnKF over the surrogate from
``assimilate_burgers_enkf_surrogate.json``), Kuramoto-Sivashinsky (``assimilate_ks.json``) and 2D
Navier-Stokes (``assimilate_ns.json``): one panel each, the time axis in the problem's own units
(the states' index times the recording interval), the legend with each estimator's cost per trajectory
as its run measured it (Burgers' EnKF over the surrogate comes from a second, loaded run: its time
compares with the solver EnKF's of that run, 2951 ms, not with the 419 ms shown).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def print_results(results: dict, show: list[int], times: list[float], mean_label: str = "mean over t",
                  ms: str = ".1f") -> None:
    """The three benchmarks' table: per estimator the relative L2 at the states ``show`` (at ``times``),
    its mean over all states and its cost per trajectory."""
    print(f"\n| estimator | relative L2 at t = {' / '.join(f'{t:g}' for t in times)} | {mean_label} "
          f"| ms per trajectory |")
    print("|---|---|---|---|")
    for name, r in results.items():
        errors = " / ".join(f"{r['per_step'][k]:.3f}" for k in show)
        print(f"| {name} | {errors} | {r['mean']:.3f} | {1e3 * r['seconds_per_trajectory']:{ms}} |")


def load(name: str) -> dict:
    return json.loads((HERE / name).read_text())


def panels() -> list[tuple[str, float, dict]]:
    burgers = load("assimilate_burgers.json")
    extra = load("assimilate_burgers_enkf_surrogate.json")["results"]
    results = dict(burgers["results"])
    results.update({k: v for k, v in extra.items() if "surrogate" in k})
    ks = load("assimilate_ks.json")
    ns = load("assimilate_ns.json")
    return [("Burgers (16 sensors of 128)", 0.05, results),
            ("Kuramoto-Sivashinsky, L = 22 (16 sensors of 64)", float(ks["ks_time_units_per_state"]), ks["results"]),
            ("2D Navier-Stokes 32x32 (64 sensors)", float(ns["args"]["every"]), ns["results"])]


#: one colour per estimator across the panels
COLOURS = (("open loop", "C0"), ("true initial", "C1"), ("observer", "C2"), ("EnKF over the solver", "C3"),
           ("EnKF over the surrogate", "C4"), ("exact solver", "C5"))


def colour(label: str) -> str:
    return next((c for key, c in COLOURS if key in label), "C7")


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = panels()
    fig, axes = plt.subplots(1, len(data), figsize=(5.2 * len(data), 4.0))
    for ax, (title, dt, results) in zip(axes, data):
        for label, r in results.items():
            steps = r["per_step"]
            t = [dt * (i + 1) for i in range(len(steps))]
            ms = 1e3 * r["seconds_per_trajectory"]
            ax.semilogy(t, steps, lw=1.4, ls="--" if "true initial" in label else "-", color=colour(label),
                        label=f"{label} ({ms:.0f} ms)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("time")
        ax.set_ylabel("relative L2 error")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    out = HERE / "figures" / "assimilation_curves.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
