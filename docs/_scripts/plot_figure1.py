"""Draw Figure 1 of Lin et al. (2017): the focal loss against p_t for several gamma.

FL(p_t) = -(1 - p_t)**gamma * log(p_t)  (equation 4; gamma = 0 is cross entropy).

Usage::

    python docs/_scripts/plot_figure1.py [OUTPUT.png]

The default output is ``docs/_static/figure1.png`` (committed; ``docs/conf.py`` only
reruns this script when that file is missing). Needs numpy and matplotlib; runs offline
in about a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "_static" / "figure1.png"


def focal_loss_of_pt(p_t: np.ndarray, gamma: float) -> np.ndarray:
    """Equation (4) of the paper, as a function of the ground-truth probability p_t."""
    return -((1.0 - p_t) ** gamma) * np.log(p_t)


def plot(output: Path) -> Path:
    """Draw the figure into ``output`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p_t = np.linspace(1e-3, 1.0, 1000)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    colors = ("#1f77b4", "#d62728", "#ffbf00", "#7b3294", "#2ca02c")
    for gamma, color in zip(GAMMAS, colors):
        label = rf"$\gamma = {gamma:g}$" + (" (CE)" if gamma == 0 else "")
        ax.plot(p_t, focal_loss_of_pt(p_t, gamma), color=color, lw=2, label=label)
    ax.axvspan(0.6, 1.0, color="0.93", zorder=0)
    ax.annotate(
        "well-classified\nexamples",
        xy=(0.8, 0.45),
        xytext=(0.73, 1.6),
        ha="center",
        arrowprops={"arrowstyle": "->", "color": "0.3"},
        color="0.2",
    )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 5.0)
    ax.set_xlabel(r"probability of ground truth class $p_t$")
    ax.set_ylabel("loss")
    ax.set_title(r"$\mathrm{FL}(p_t) = -(1 - p_t)^\gamma \log(p_t)$")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Fixed metadata keeps the committed PNG byte-stable across rebuilds.
    fig.savefig(output, metadata={"Software": None})
    plt.close(fig)
    return output


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    print(plot(out))
