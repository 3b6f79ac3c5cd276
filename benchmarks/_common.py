"""Small helpers shared by the benchmark scripts: table printing and JSON output."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def print_table(rows: list[dict], cols: list[str], title: str = "") -> None:
    if title:
        print(f"\n{title}")
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return "" if v is None else str(v)


def write_json(name: str, payload: dict, out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
               **payload}
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path}")
    return path


# -- imitation runs (bench_policies.py, bench_image_policies.py) -------------------------------------
TASK_ORDER = ["pick_cube", "push", "insert"]


def load_runs(run_dir: Path, *extra_sort: str) -> list[dict]:
    """Saved run JSONs, ordered by task, policy and `extra_sort` keys."""
    import json
    rows = [json.loads(p.read_text()) for p in sorted(run_dir.glob("*.json"))]
    if not rows:
        raise SystemExit(f"no saved runs in {run_dir}")
    order = {t: i for i, t in enumerate(TASK_ORDER)}
    rows.sort(key=lambda r: (order.get(r["task"], 9), r["policy"], *(r[k] for k in extra_sort)))
    return rows


def success_table(rows: list[dict]) -> list[dict]:
    """Rows with success / interval / target columns in percent, and whether the target is met."""
    out = []
    for r in rows:
        t = r.get("target")
        out.append({**r, "success_%": 100 * r["success"],
                    "ci95_%": f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]",
                    "target_%": None if t is None else 100 * t,
                    "meets": None if t is None else ("yes" if r["success"] >= t else "NO")})
    return out


def print_curves(rows: list[dict], label) -> None:
    for r in rows:
        pts = ", ".join(f"{c['train_min']:.1f} min: {100 * c['success']:.0f}%" for c in r["curve"])
        print(f"  {label(r)} success vs training time: {pts}")


def plot_curve(ax, run: dict, **kw) -> None:
    """A run's success vs training time with its 95% intervals."""
    c = run["curve"]
    y = [100 * p["success"] for p in c]
    err = [[100 * (p["success"] - p["ci95"][0]) for p in c], [100 * (p["ci95"][1] - p["success"]) for p in c]]
    ax.errorbar([p["train_min"] for p in c], y, yerr=err, capsize=3, **kw)


def plot_runs(rows: list[dict], name: str, title, style, width: float = 4.5, xlabel: str = "training time on this CPU (min)"
              ) -> Path:
    """One panel per task: each run's success vs training time (`style(run)`: errorbar keywords
    incl. the label), the targets as dashed lines; written to results/<name>.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = sorted({r["task"] for r in rows}, key=TASK_ORDER.index)
    fig, axes = plt.subplots(1, len(tasks), figsize=(width * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        runs = [r for r in rows if r["task"] == task]
        for r in runs:
            plot_curve(ax, r, **style(r))
        for v in {r.get("target") for r in runs} - {None}:
            ax.axhline(100 * v, ls="--", lw=0.8, color="gray")
        ax.set_title(title(task, runs))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("success % (95% CI)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    p = RESULTS / f"{name}.png"
    fig.savefig(p, dpi=110)
    print(f"wrote {p}")
    return p


# -- expert demonstrations, recorded once and reused (bench_policies.py, bench_ddp.py) -------------
def ensure_demos(task: str, n: int, data_dir: Path) -> Path:
    path = data_dir / f"so101_{task}.zarr"
    if path.exists():
        from robot_rl.data.store import EpisodeStore
        with EpisodeStore.open(path) as st:
            if st.n_episodes >= n:
                return path
    from robot_rl.cli.main import main
    rc = main(["record", "sim", f"task={task}", f"episodes={n}", "cameras=[]", f"out={path}", "progress=false"])
    if rc:
        raise SystemExit(f"recording {task} demos failed")
    return path
