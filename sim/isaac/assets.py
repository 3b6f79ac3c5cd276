"""Local USD assets for the Isaac Lab twin, generated from the MJCF that ``sim/mjcf.py`` writes.

Why USD (and not Newton's MJCF import): an Isaac Lab scene is a USD stage that its cloner
replicates into ``num_envs`` worlds, and its assets (articulations, rigid objects) and event
terms address prims on that stage. ``mujoco_usd_converter`` writes the MJCF as USD with the
MuJoCo physics schema (``mjc:*``: actuators, contact solref/solimp/condim, equality, options),
which Newton's MJC schema resolver reads back into the MuJoCo-Warp model, so the Isaac twin
runs the same MuJoCo model as the MuJoCo twin instead of a re-tuned copy.

One mismatch between the two pinned packages is mended here: mujoco-usd-converter 0.6.1
writes a body's gravity compensation as ``mjc:body:gravcomp`` while Newton 1.6 reads
``mjc:gravcomp``; without the fix every arm link would sag under gravity (a few mrad of
steady-state error at kp = 60 N m/rad). Nothing is downloaded: ``ISAACSIM_ASSET_ROOT`` points
at the local folder, so no Isaac Lab code reaches for NVIDIA's asset server.

    python -m robot_rl.sim.isaac.assets            # every robot x task (make isaac runs this)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

from robot_rl.sim.isaac import IsaacUnavailable, cache_root

GRAVCOMP_WRITTEN = "mjc:body:gravcomp"  # mujoco-usd-converter 0.6.1
GRAVCOMP_READ = "mjc:gravcomp"  # newton 1.6 SolverMuJoCo custom attribute
ROBOTS = ("so101", "arm6")
TASKS = ("reach", "pick_cube", "push", "insert")


def asset_root() -> Path:
    """Where generated assets live (ISAACSIM_ASSET_ROOT is pointed here)."""
    return Path(os.environ.get("ROBOT_RL_ISAAC_ASSETS", cache_root() / "isaac-assets"))


def scene_mjcf(robot, task: str) -> str:
    """The MuJoCo twin's scene for (robot, task), exactly as ``Twin`` builds it (`robot`: a
    name or a RobotSpec; cameras do not change the physics and are left out)."""
    from robot_rl.sim import mjcf
    from robot_rl.sim.tasks import TASKS as TASK_CLASSES
    from robot_rl.spec import resolve_spec
    spec = resolve_spec(robot, "ee_delta", (), None)
    if task not in TASK_CLASSES:
        raise ValueError(f"unknown task {task!r}; available: {sorted(TASK_CLASSES)}")
    return mjcf.scene_xml(spec, TASK_CLASSES[task](spec).objects_xml())


def scene_usd(robot, task: str, *, generate: bool = True) -> Path:
    """The USD file of (robot, task), converted on first use (about 1 s) and kept under
    ``asset_root()`` keyed by a hash of the MJCF, so a changed twin gets a fresh asset."""
    xml = scene_mjcf(robot, task)
    robot = robot if isinstance(robot, str) else robot.name
    key = hashlib.sha256(xml.encode()).hexdigest()[:12]
    out = asset_root() / f"{robot}_{task}_{key}"
    usd = out / f"{robot}.usda"
    if usd.exists():
        return usd
    if not generate:
        raise IsaacUnavailable(f"no local Isaac asset for {robot}/{task} at {out}: run `make isaac` "
                               "(or `python -m robot_rl.sim.isaac.assets` in .venv-isaac) to generate it")
    try:
        import mujoco_usd_converter
        from pxr import Usd
    except ImportError as e:
        raise IsaacUnavailable(f"cannot convert the twin to USD ({e}); mujoco-usd-converter is part of the "
                               "Isaac venv: run `make isaac`") from e
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "scene.xml").write_text(xml)
    path = mujoco_usd_converter.Converter().convert(str(tmp / "scene.xml"), str(tmp))
    n = fix_gravcomp(Path(str(path.path)))
    if n == 0 and "gravcomp" in xml:
        raise IsaacUnavailable(f"the converted {robot} asset carries no gravity compensation; "
                               f"mujoco-usd-converter changed its attribute names (expected {GRAVCOMP_WRITTEN})")
    Usd.Stage.Open(str(tmp / f"{robot}.usda"))  # it opens
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return usd


def fix_gravcomp(root_usd: Path) -> int:
    """Author ``mjc:gravcomp`` beside every ``mjc:body:gravcomp`` in the asset's layers;
    returns how many bodies were mended."""
    from pxr import Sdf
    n = 0
    for layer_path in sorted(root_usd.parent.rglob("*.usda")):
        layer = Sdf.Layer.FindOrOpen(str(layer_path))
        changed = []

        def visit(path, layer=layer, changed=changed):
            if not path.IsPropertyPath() or path.name != GRAVCOMP_WRITTEN:
                return
            spec = layer.GetAttributeAtPath(path)
            prim = layer.GetPrimAtPath(path.GetPrimPath())
            if prim.attributes.get(GRAVCOMP_READ) is None:
                changed.append((prim, spec.default))
        layer.Traverse(Sdf.Path.absoluteRootPath, visit)
        for prim, value in changed:
            attr = Sdf.AttributeSpec(prim, GRAVCOMP_READ, Sdf.ValueTypeNames.Float, Sdf.VariabilityVarying)
            attr.custom = True
            attr.default = float(value)
        if changed:
            layer.Save()
            n += len(changed)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robot_rl.sim.isaac.assets",
                                 description="Generate the Isaac Lab twin's local USD assets from the MuJoCo twin's MJCF.")
    ap.add_argument("--robot", action="append", choices=ROBOTS, help="robot(s); default: all")
    ap.add_argument("--task", action="append", choices=TASKS, help="task(s); default: all")
    a = ap.parse_args(argv)
    for r in a.robot or ROBOTS:
        for t in a.task or TASKS:
            print(f"{r}/{t}: {scene_usd(r, t)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
