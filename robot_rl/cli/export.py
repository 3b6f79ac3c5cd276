"""``robot-rl export``: a checkpoint's inference networks as ONNX files + a manifest
(robot_rl.policies.export), for ``backend=onnxruntime``.

    robot-rl export CHECKPOINT format=onnx [out=DIR] [opset=17] [tolerance=0.001]

The export is checked: onnxruntime and torch run a sample batch and the export is refused
when they differ by more than ``tolerance``. ``robot-rl eval EXPORT_DIR``, ``robot-rl bench
inference EXPORT_DIR`` and the inference node (``--backend onnxruntime``) run the folder.
"""
from __future__ import annotations

from pathlib import Path

FORMATS = ("onnx",)


def cmd_export(args: list[str]) -> int:
    from robot_rl.cli.common import CLIError, compose
    if not args or "=" in args[0]:
        raise CLIError("'export' needs a checkpoint folder: robot-rl export CHECKPOINT format=onnx [out=DIR]")
    cfg = compose("export", args[1:])
    if cfg.format not in FORMATS:
        raise CLIError(f"format must be one of {', '.join(FORMATS)}; got {cfg.format!r}")
    if int(cfg.opset) < 13:
        raise CLIError(f"opset must be >= 13, got {cfg.opset}")
    checkpoint = Path(args[0])
    out = Path(cfg.out) if cfg.out else checkpoint / "onnx"
    from robot_rl.policies.export import export_onnx
    manifest = export_onnx(checkpoint, out, opset=int(cfg.opset), tolerance=float(cfg.tolerance))
    import json
    m = json.loads(manifest.read_text())
    for entry in m["files"].values():
        ins = ", ".join(f"{i['name']} {i['dtype']}{_shape(i['shape'])}" for i in entry["inputs"])
        outs = ", ".join(f"{o['name']} {o['dtype']}{_shape(o['shape'])}" for o in entry["outputs"])
        print(f"wrote {out / entry['file']} ({entry['bytes'] / 1e6:.2f} MB): {ins} -> {outs}")
    print(f"wrote {manifest}")
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in m["parity"]["max_abs_diff"].items())
    print(f"{m['policy']} policy for {m['robot_spec']['name']} (fingerprint {m['robot_fingerprint']}), opset "
          f"{m['opset']}; onnxruntime vs torch, max abs diff on a sample batch: {diffs}")
    return 0


def _shape(shape: list) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
