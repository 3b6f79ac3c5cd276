"""LeRobotDataset v3.0 export and import, without the lerobot package (pyarrow + PyAV).

    from robot_rl.data.lerobot import export_lerobot, import_lerobot
    export_lerobot("data/so101_pick_cube.zarr", "out/lerobot/pick_cube", repo_id="me/pick_cube")
    import_lerobot("~/.cache/huggingface/lerobot/me/pick_cube", "data/from_lerobot.zarr", robot="so101")

- ``lerobot_format.py``: the layout, parquet types, statistics, MP4 in and out;
- ``lerobot_units.py``: joint angles / gripper closure <-> LeRobot's degrees and 0..100;
- ``lerobot_export.py`` / ``lerobot_import.py``: the two directions.

Store -> LeRobot -> store gives every numeric key back bitwise (images within the video
codec's error, or exactly with ``video=False`` into a lossless store); LeRobot -> store ->
LeRobot gives observation.state / action back bitwise too (``lerobot_units.py`` says how).
"""
from robot_rl.data.lerobot_export import export_lerobot
from robot_rl.data.lerobot_format import LeRobotFormatError
from robot_rl.data.lerobot_import import import_lerobot
from robot_rl.data.lerobot_units import UnitMap, UnitsError, unit_map

__all__ = ["export_lerobot", "import_lerobot", "LeRobotFormatError", "UnitMap", "UnitsError", "unit_map"]
