"""LeRobotDataset v3.0 interop with the real lerobot package (make test-lerobot).

The tests run in the core venv; lerobot lives in a venv of its own (.venv-lerobot, built by
`make lerobot`) and is driven through the scripts next to this file (lr_*.py), which talk to
the tests through files on disk. Nothing is downloaded: HF_HUB_OFFLINE=1 and every dataset is
opened with root=.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LEROBOT_VENV = REPO / ".venv-lerobot"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/lerobot/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lerobot)


@pytest.fixture(scope="session")
def lerobot_python() -> Path:
    py = LEROBOT_VENV / "bin" / "python"
    if not py.exists():
        pytest.fail(f"the lerobot venv is missing ({LEROBOT_VENV}): run `make lerobot` to build it "
                    "(`make test-lerobot` builds it, then runs these tests)", pytrace=False)
    return py


@pytest.fixture(scope="session")
def run_lerobot(lerobot_python, tmp_path_factory):
    """run_lerobot(script, *args): `python tests/lerobot/<script> args` in the lerobot venv,
    offline, with a Hugging Face cache of this session's own; fails with its output."""
    hf_home = tmp_path_factory.mktemp("hf_home")

    def run(script: str, *args, timeout: float = 240) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(hf_home), SVT_LOG="1",
                   HF_HUB_DISABLE_TELEMETRY="1", TQDM_DISABLE="1")
        r = subprocess.run([str(lerobot_python), str(HERE / script), *map(str, args)], capture_output=True,
                           text=True, env=env, timeout=timeout)
        if r.returncode != 0:
            pytest.fail(f"lerobot ({script} {' '.join(map(str, args))}) failed with exit code {r.returncode}:\n"
                        f"{r.stderr[-6000:]}", pytrace=False)
        return r

    return run


@pytest.fixture(scope="session")
def lerobot_read(run_lerobot):
    """lerobot_read(root, repo_id, out, delta=None): what lerobot's LeRobotDataset gives for the
    dataset at `root` (lr_read.py): read.json's fields plus "frames" (every `dataset[i]`, stacked
    per key) and "delta" (the probe items of a delta_timestamps dataset, "<index>/<key>")."""

    def read(root: Path, repo_id: str, out: Path, delta: dict | None = None) -> dict:
        args = [root, repo_id, out]
        if delta is not None:
            spec = out.parent / f"{out.name}.delta.json"
            spec.write_text(json.dumps(delta))
            args.append(spec)
        run_lerobot("lr_read.py", *args)
        res = json.loads((out / "read.json").read_text())
        res["frames"] = dict(np.load(out / "frames.npz"))
        res["delta"] = dict(np.load(out / "delta.npz")) if delta is not None else {}
        return res

    return read
