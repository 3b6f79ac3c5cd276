"""``robot-rl convert``: rosbag2 <-> episode store.

    robot-rl convert BAG OUT.zarr robot=so101 [contract=sim] [split=events|gaps|times]
                     [gap_s=1.0] [times=[[t0,t1],...]] [task=NAME] [cameras=[front]]
                     [distro=humble|jazzy|...] [fps=20] [empty=error|skip]
    robot-rl convert DATASET OUT.mcap|OUT_DIR [contract=sim] [storage=mcap|sqlite3]
                     [distro=jazzy] [episodes=[0,3]] [gap_s=1.0]

The direction follows the input: an episode store is written as a bag, anything else is
read as a bag (rosbag2 directory, bare .mcap or .db3). A bag is cut into episodes by the
contract's event topic (split=events), by silences longer than gap_s (gaps) or at the given
times; episodes written into a bag are laid out gap_s seconds apart.
"""
from __future__ import annotations

from typing import Any

import yaml

from robot_rl.cli.common import CLIError, usage_lines

BAG_KEYS = {"robot": None, "contract": "sim", "split": "events", "gap_s": 1.0, "times": None, "task": None,
            "cameras": None, "distro": None, "fps": None, "empty": "error"}
STORE_KEYS = {"contract": "sim", "storage": None, "distro": "jazzy", "episodes": None, "gap_s": 1.0}
USAGE = usage_lines(__doc__, "robot-rl convert")


def _parse(args: list[str], known: dict[str, Any], what: str) -> dict[str, Any]:
    cfg = dict(known)
    for a in args:
        if "=" not in a:
            raise CLIError(f"expected key=value, got {a!r}\nusage: {USAGE}")
        k, v = a.split("=", 1)
        if k not in known:
            raise CLIError(f"unknown setting {k!r} for converting {what}; valid settings: {', '.join(known)}")
        if k in ("task", "robot", "contract", "split", "distro", "storage", "empty"):
            cfg[k] = v
            continue
        try:
            cfg[k] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise CLIError(f"{k}={v!r} is not a valid value: {e}") from None
    return cfg


def cmd_convert(args: list[str]) -> int:
    from robot_rl.data.bag import BagError
    from robot_rl.data.contract import ContractError, EmptyEpisodeError, MessageError
    from robot_rl.data.convert import ConvertError, bag_to_store, is_episode_store, store_to_bag

    if len(args) < 2 or "=" in args[0] or "=" in args[1]:
        raise CLIError(f"'convert' needs an input and an output path\nusage: {USAGE}")
    src, dst, rest = args[0], args[1], args[2:]
    try:
        if is_episode_store(src):
            cfg = _parse(rest, STORE_KEYS, "an episode store to a bag")
            eps = cfg["episodes"]
            if eps is not None and not (isinstance(eps, list) and all(isinstance(i, int) for i in eps)):
                raise CLIError(f"episodes must be a list of episode indices like [0,3], got {eps!r}")
            rep = store_to_bag(src, dst, contract=cfg["contract"], storage=cfg["storage"], distro=cfg["distro"],
                               episodes=eps, gap_s=float(cfg["gap_s"]))
            print(f"wrote {rep['out']}: {rep['episodes']} episodes, {rep['messages']} messages "
                  f"({rep['storage']}, ROS 2 {rep['distro']} definitions) in {rep['seconds']:.1f} s")
            for t, mt in rep["topics"].items():
                print(f"  {t:32s} {mt}")
        else:
            cfg = _parse(rest, BAG_KEYS, "a bag to an episode store")
            if not cfg["robot"]:
                from robot_rl.spec import available_robots
                raise CLIError(f"converting a bag needs robot=NAME (its spec names the joints); available: "
                               f"{', '.join(available_robots())}")
            cams = cfg["cameras"]
            if cams is not None and not (isinstance(cams, list) and all(isinstance(c, str) for c in cams)):
                raise CLIError(f"cameras must be a list like [front,wrist], got {cams!r}")
            if not isinstance(cfg["gap_s"], (int, float)) or isinstance(cfg["gap_s"], bool):
                raise CLIError(f"gap_s must be a number of seconds, got {cfg['gap_s']!r}")
            rep = bag_to_store(src, dst, robot=cfg["robot"], contract=cfg["contract"], split=cfg["split"],
                               gap_s=float(cfg["gap_s"]), times=cfg["times"], task=cfg["task"], cameras=cams,
                               distro=cfg["distro"], fps=cfg["fps"], empty=cfg["empty"])
            print(f"wrote {rep['out']}: {rep['episodes']} episodes ({rep['successes']} successful), "
                  f"{rep['steps']} steps at {rep['fps']:g} Hz from {rep['messages']} messages "
                  f"({rep['storage']}, {rep['typestore']} types) in {rep['seconds']:.1f} s")
            for s in rep["skipped_episodes"]:
                print(f"  skipped: {s}")
        for w in rep["warnings"]:
            print(f"  warning: {w}")
    except (BagError, ContractError, ConvertError, MessageError, EmptyEpisodeError) as e:
        raise CLIError(str(e)) from None
    return 0
