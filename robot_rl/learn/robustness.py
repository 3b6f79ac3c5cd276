"""Success against perturbation size: ``robot-rl eval CHECKPOINT sweep=FILE``.

A sweep file names factors, each a randomization field (``sim/randomization.py``) and the
fixed values to evaluate it at; every point is an evaluation on held-out seeds of a twin
perturbed by exactly that value (``Randomization.fixed``), everything else nominal:

```yaml
episodes: 50                     # per point (episodes= on the command line wins)
factors:
  friction: {field: geom_friction, values: [0.5, 0.75, 1.0, 1.25, 1.5]}
  object_mass: {field: body_mass, values: [0.5, 1.0, 2.0]}
  action_delay: [0, 1, 2, 3]     # shorthand: the label is the field
  camera_shift: {field: camera_pos, names: [front], values: [0.0, 0.02, 0.04]}
```

Points that perturb nothing (a scale of 1, an offset of 0) are one evaluation, shared by
every factor. The result is JSON (``sweep.json``) and a plot (``sweep.png``): one panel per
factor, success with its 95% interval against the value, one curve per policy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from robot_rl.sim.randomization import PERTURB_DEFAULTS, Randomization, RandomizationError, load_named_yaml
from robot_rl.spec import CONF_DIR

SWEEP_DIR = CONF_DIR / "sweeps"


@dataclass(frozen=True)
class Factor:
    label: str
    field: str
    values: tuple[float, ...]
    operation: str | None = None
    names: tuple[str, ...] | None = None

    def perturbation(self, value: float) -> dict[str, Any]:
        spec: dict[str, Any] = {"value": float(value)}
        if self.operation:
            spec["operation"] = self.operation
        if self.names is not None:
            spec["names"] = list(self.names)
        return {self.field: spec}

    def is_nominal(self, value: float) -> bool:
        op = self.operation or PERTURB_DEFAULTS[self.field][0]
        return (op == "scale" and value == 1.0) or (op in ("add", "abs") and value == 0.0)


@dataclass(frozen=True)
class Sweep:
    factors: tuple[Factor, ...]
    episodes: int | None = None

    @classmethod
    def load(cls, src: "str | Path | Mapping[str, Any]") -> "Sweep":
        if isinstance(src, Mapping):
            d, where = dict(src), "sweep"
        else:
            d, p = load_named_yaml(src, SWEEP_DIR, "sweep")  # a file, or a name in robot_rl/conf/sweeps
            where = p.name
        if not isinstance(d, Mapping) or not isinstance(d.get("factors"), Mapping) or not d["factors"]:
            raise RandomizationError(f"{where}: a sweep holds 'factors: {{label: {{field: ..., values: [...]}}}}'")
        factors = []
        for label, f in d["factors"].items():
            if isinstance(f, (list, tuple)):
                f = {"field": label, "values": list(f)}
            if not isinstance(f, Mapping) or not f.get("values"):
                raise RandomizationError(f"{where}: factor {label!r} needs 'values: [...]'")
            unknown = set(f) - {"field", "values", "operation", "names"}
            if unknown:
                raise RandomizationError(f"{where}: factor {label!r}: unknown keys {sorted(unknown)}")
            field = str(f.get("field", label))
            if field not in PERTURB_DEFAULTS:
                raise RandomizationError(f"{where}: factor {label!r}: field {field!r} is not one of "
                                         f"{', '.join(PERTURB_DEFAULTS)}")
            try:
                values = tuple(float(v) for v in f["values"])
            except (TypeError, ValueError):
                raise RandomizationError(f"{where}: factor {label!r}: values must be numbers") from None
            fac = Factor(str(label), field, values, f.get("operation"),
                         None if f.get("names") is None else tuple(str(n) for n in f["names"]))
            Randomization.fixed(fac.perturbation(values[0]))  # checks operation / names early
            factors.append(fac)
        return cls(tuple(factors), None if d.get("episodes") is None else int(d["episodes"]))

    def points(self) -> int:
        """Evaluations the sweep runs (nominal points shared)."""
        nominal = any(f.is_nominal(v) for f in self.factors for v in f.values)
        return sum(not f.is_nominal(v) for f in self.factors for v in f.values) + int(nominal)


def run_sweep(sweep: Sweep, evaluate_at: Callable[[Randomization | None, str], Any],
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate every point: ``evaluate_at(perturbation_or_None, label)`` returns an
    ``EvalResult``. Returns ``{"factors": {label: {field, values, success, ci95, episodes}}}``."""
    nominal = None
    out: dict[str, Any] = {"episodes": sweep.episodes, "factors": {}}
    k, n = 0, sweep.points()
    for f in sweep.factors:
        rows = {"field": f.field, "operation": f.operation or PERTURB_DEFAULTS[f.field][0],
                "names": list(f.names) if f.names is not None else list(PERTURB_DEFAULTS[f.field][1]),
                "values": [], "success": [], "ci95": [], "successes": []}
        for v in f.values:
            if f.is_nominal(v) and nominal is not None:
                r = nominal
            else:
                k += 1
                label = f"{f.label}={v:g}"
                log(f"[{k}/{n}] {label}")
                r = evaluate_at(None if f.is_nominal(v) else Randomization.fixed(f.perturbation(v), name=label), label)
                if f.is_nominal(v):
                    nominal = r
            rows["values"].append(v)
            rows["success"].append(float(r.success_rate))
            rows["ci95"].append([float(x) for x in r.ci95])
            rows["successes"].append(int(sum(r.successes)))
        out["factors"][f.label] = rows
    return out


def plot_sweeps(results: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """One panel per factor: success (%) with its 95% interval against the value, one curve
    per entry of `results` (``{policy label: run_sweep result}``)."""
    from matplotlib.figure import Figure

    labels = list(results)
    factors: list[str] = []
    for r in results.values():
        factors += [f for f in r["factors"] if f not in factors]
    cols = min(4, len(factors))
    rows = (len(factors) + cols - 1) // cols
    fig = Figure(figsize=(3.6 * cols, 3.0 * rows + 0.6), dpi=100)
    if title:
        fig.suptitle(title, fontsize=11)
    for i, f in enumerate(factors):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, lab in enumerate(labels):
            r = results[lab]["factors"].get(f)
            if r is None:
                continue
            x = np.asarray(r["values"])
            y = 100 * np.asarray(r["success"])
            ci = 100 * np.asarray(r["ci95"])
            line, = ax.plot(x, y, "o-", label=lab, color=f"C{j}")
            ax.fill_between(x, ci[:, 0], ci[:, 1], color=line.get_color(), alpha=0.15)
        r0 = next(results[lab]["factors"][f] for lab in labels if f in results[lab]["factors"])
        names = f" ({', '.join(r0['names'])})" if r0["names"] else ""
        ax.set_title(f"{f}{names}", fontsize=9)
        ax.set_xlabel(f"{r0['field']} ({r0['operation']})", fontsize=8)
        ax.set_ylim(-3, 103)
        ax.axhline(80, color="grey", lw=0.6, ls=":")
        ax.axhline(50, color="grey", lw=0.6, ls="--")
        if i % cols == 0:
            ax.set_ylabel("success %")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    return p


def write_sweep(result: Mapping[str, Any], out_dir: str | Path, label: str, title: str = "") -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j = out / "sweep.json"
    j.write_text(json.dumps({label: result}, indent=2))
    return [j, plot_sweeps({label: result}, out / "sweep.png", title=title)]
