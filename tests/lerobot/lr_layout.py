"""Run by the lerobot venv: describe a LeRobotDataset v3.0 directory on disk, file by file.

    python lr_layout.py ROOT OUT_DIR

Writes OUT_DIR/layout.json (every file with its size; info.json; stats.json's keys per feature;
the schema and first rows of each parquet table; each video's stream parameters) and a readable
OUT_DIR/layout.txt. The tests compare our export's layout with one lerobot wrote itself.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import pyarrow.parquet as pq


def parquet_table(path: Path, rows: int = 3) -> dict:
    t = pq.read_table(path)
    head = t.slice(0, rows).to_pylist()
    return {"num_rows": t.num_rows,
            "schema": {f.name: str(f.type) for f in t.schema},
            "pandas_index": (t.schema.pandas_metadata or {}).get("index_columns"),
            "hf_features": json.loads(t.schema.metadata[b"huggingface"])["info"]["features"]
            if t.schema.metadata and b"huggingface" in t.schema.metadata else None,
            "head": json.loads(json.dumps(head, default=lambda v: repr(v)[:200]))}


def video(path: Path) -> dict:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.demux(s) if _.size)
        return {"codec": s.codec_context.name, "pix_fmt": s.codec_context.pix_fmt, "width": s.codec_context.width,
                "height": s.codec_context.height, "time_base": str(s.time_base), "average_rate": str(s.average_rate),
                "frames": n, "container": c.format.name}


def describe(root: Path) -> dict:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    out = {"files": {str(p.relative_to(root)): p.stat().st_size for p in files}}
    info = root / "meta" / "info.json"
    out["info"] = json.loads(info.read_text()) if info.exists() else None
    stats = root / "meta" / "stats.json"
    if stats.exists():
        s = json.loads(stats.read_text())
        out["stats_keys"] = {k: sorted(v) for k, v in s.items()}
    out["parquet"] = {str(p.relative_to(root)): parquet_table(p) for p in files if p.suffix == ".parquet"}
    out["videos"] = {str(p.relative_to(root)): video(p) for p in files if p.suffix == ".mp4"}
    return out


def main() -> None:
    root, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    d = describe(root)
    (dst / "layout.json").write_text(json.dumps(d, indent=1))
    lines = ["# files (bytes)"] + [f"{v:>10}  {k}" for k, v in d["files"].items()]
    lines += ["", "# meta/info.json", json.dumps(d["info"], indent=1)]
    lines += ["", "# meta/stats.json: keys per feature"] + [f"{k}: {v}" for k, v in d.get("stats_keys", {}).items()]
    for name, t in d["parquet"].items():
        lines += ["", f"# {name}: {t['num_rows']} rows, pandas index {t['pandas_index']}"]
        lines += [f"  {c}: {ty}" for c, ty in t["schema"].items()]
        lines += ["  first row:", "  " + json.dumps(t["head"][0] if t["head"] else None)[:3000]]
    for name, v in d["videos"].items():
        lines += ["", f"# {name}", "  " + json.dumps(v)]
    (dst / "layout.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
