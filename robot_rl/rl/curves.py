"""Learning curves: one CSV row per evaluation, and a PNG of success rate and return
against environment steps and wall time, with the intervention rate."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

COLUMNS = ["env_steps", "wall_s", "updates", "success", "success_lo", "success_hi", "return",
           "episode_length", "intervention_rate", "train_success", "q", "alpha"]


class CurveLog:
    def __init__(self, path: str | Path, columns: Sequence[str] = COLUMNS, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = list(columns)
        self.rows: list[dict[str, Any]] = []
        if append and self.path.exists():
            with open(self.path) as f:
                self.rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        else:
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def read_curve(path: str | Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def plot_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], out: str | Path, title: str = "",
                target: float | None = None) -> Path:
    """``curves``: label -> rows (several labels = several runs or methods on one figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    for label, rows in curves.items():
        if not rows:
            continue
        x = [r["env_steps"] for r in rows]
        ax[0].plot(x, [100 * r["success"] for r in rows], marker=".", label=label)
        ax[1].plot([r["wall_s"] / 60 for r in rows], [100 * r["success"] for r in rows], marker=".", label=label)
        ax[2].plot(x, [r.get("return", float("nan")) for r in rows], marker=".", label=label)
        ax[3].plot(x, [100 * r.get("intervention_rate", 0.0) for r in rows], marker=".", label=label)
    for a, (xl, yl) in zip(ax, [("env steps", "success %"), ("wall time (min)", "success %"),
                                ("env steps", "return"), ("env steps", "intervened steps %")]):
        a.set_xlabel(xl)
        a.set_ylabel(yl)
        a.grid(alpha=0.3)
    if target is not None:
        for a in ax[:2]:
            a.axhline(100 * target, color="k", ls="--", lw=0.8)
    ax[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
