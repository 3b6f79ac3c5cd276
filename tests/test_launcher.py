"""The graph launcher with real processes (stand-in nodes: no DDS needed to test supervision)."""
import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robot_rl.ros.graphs import GRAPHS, NodeDef
from robot_rl.ros.launcher import Launcher

DUMMY = str(Path(__file__).with_name("_launch_dummy_node.py"))


def node(tmp, name, *extra, **kw):
    # run the dummy as a module-less script: the launcher runs `python -m module`, so wrap it
    return NodeDef(name, "runpy_dummy", (DUMMY, str(tmp), name, *extra), **kw)


class ScriptLauncher(Launcher):
    """Same supervision, but nodes are scripts (python FILE) instead of modules."""

    def _start(self, p):
        import threading
        p.popen = subprocess.Popen([self.python, *p.node.args], env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        p.started = time.monotonic()
        threading.Thread(target=self._pump, args=(p, p.popen), daemon=True).start()


def test_required_node_exit_stops_the_graph_and_others_close_cleanly(tmp_path):
    out = io.StringIO()
    lx = ScriptLauncher([node(tmp_path, "recorder", required=False),
                         node(tmp_path, "teleop", "--exit-after", "1.0")], out=out, grace_s=5)
    t0 = time.monotonic()
    assert lx.run() == 0
    assert time.monotonic() - t0 < 8
    assert (tmp_path / "recorder.clean").exists()  # got SIGINT, not SIGKILL
    assert "[teleop] teleop up" in out.getvalue() and "required node teleop exited (0)" in out.getvalue()


def test_failing_required_node_fails_the_graph(tmp_path):
    lx = ScriptLauncher([node(tmp_path, "a", required=False), node(tmp_path, "b", "--exit-after", "0.3",
                                                                  "--code", "3")], out=io.StringIO())
    assert lx.run() == 1
    assert (tmp_path / "a.clean").exists()


def test_respawn_restarts_a_dying_node(tmp_path):
    lx = ScriptLauncher([node(tmp_path, "flaky", "--exit-after", "0.3", "--code", "1", required=False,
                              respawn=True),
                         node(tmp_path, "main", "--exit-after", "1.6")], out=io.StringIO())
    lx.run()
    starts = (tmp_path / "flaky.starts").read_text().count("start")
    assert starts >= 3


def test_stubborn_node_is_escalated_to_sigterm_then_killed(tmp_path):
    out = io.StringIO()
    lx = ScriptLauncher([node(tmp_path, "stubborn", "--ignore-sigint", required=False),
                         node(tmp_path, "main", "--exit-after", "0.5")], out=out, grace_s=1.0)
    t0 = time.monotonic()
    lx.run()
    assert time.monotonic() - t0 < 8
    assert "sending SIGTERM" in out.getvalue()
    assert all(p.popen.poll() is not None for p in lx.procs)


def test_ctrl_c_on_the_cli_shuts_everything_down(tmp_path):
    """`robot-rl launch` in a real process, interrupted with SIGINT like Ctrl-C."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from test_launcher import ScriptLauncher, node\n"
        "from pathlib import Path\n"
        "import robot_rl.ros.launcher as L\n"
        "L.Launcher = ScriptLauncher\n"
        "from robot_rl.ros.graphs import GRAPHS, Graph\n"
        "GRAPHS['t'] = Graph('t', 'test', {}, lambda p: [node(Path(%r), 'x'), node(Path(%r), 'y')])\n"
        "sys.exit(L.launch('t'))\n" % (str(Path(__file__).parent), str(tmp_path), str(tmp_path)))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 20
    while not ((tmp_path / "x.starts").exists() and (tmp_path / "y.starts").exists()) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    assert (tmp_path / "x.clean").exists() and (tmp_path / "y.clean").exists()
    assert "SIGINT received" in out


def test_graph_definitions_and_parameters():
    nodes = GRAPHS["teleop_record"].nodes({"robot": "arm6", "episodes": "3", "bag": "out/b"})
    names = [n.name for n in nodes]
    assert names == ["robot", "recorder", "teleop"]
    teleop = nodes[2]
    assert "--episodes" in teleop.args and teleop.args[teleop.args.index("--episodes") + 1] == "3"
    assert "--bag" in nodes[1].args and nodes[0].args[nodes[0].args.index("--mode") + 1] == "lockstep"
    with pytest.raises(KeyError, match="no parameter"):
        GRAPHS["sim"].nodes({"nope": "1"})
    with pytest.raises(KeyError, match="needs bag"):
        GRAPHS["replay"].nodes({})


def test_launch_files_use_the_shared_graphs():
    import ast
    for f in Path(__file__).parents[1].joinpath("launch").glob("*.launch.py"):
        tree = ast.parse(f.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "generate"]
        assert calls and calls[0].args[0].value in GRAPHS, f
        assert f.name == f"{calls[0].args[0].value}.launch.py"


def test_hardware_graphs_start_the_driver_camera_nodes_and_the_leader():
    """teleop_record / deploy on a hardware driver: the robot node gets the port and the
    calibration, one camera node per source, the leader's teleop node, the `hardware`
    contract (no privileged keys) with the action mode; mistakes are one message."""
    from robot_rl.ros.graphs import GRAPHS
    p = {"driver": "feetech", "port": "/dev/ttyACM0", "calibration": "f.yaml", "device": "leader",
         "leader.port": "/dev/ttyACM1", "leader.calibration": "l.yaml", "events": "keyboard",
         "sources": "/dev/video0,/dev/video2", "cameras": "front,wrist", "rate": "30", "bag": "b"}
    nodes = {n.name: n for n in GRAPHS["teleop_record"].nodes(p)}
    assert set(nodes) == {"robot", "camera_front", "camera_wrist", "recorder", "teleop"}
    r = " ".join(nodes["robot"].args)
    assert "--driver feetech --mode realtime --cameras none --port /dev/ttyACM0 --calibration f.yaml" in r
    assert "--action-mode joint_pos" in r and "--task" not in r
    assert nodes["camera_wrist"].args == ("--name", "wrist", "--source", "/dev/video2")
    rec = " ".join(nodes["recorder"].args)
    assert "--contract hardware" in rec and "--action-mode joint_pos" in rec and "--cameras front,wrist" in rec
    t = " ".join(nodes["teleop"].args)
    assert "--device leader" in t and "--leader-port /dev/ttyACM1" in t and "--leader-calibration l.yaml" in t
    assert "teleop" not in {n.name for n in GRAPHS["teleop_record"].nodes({**p, "device": "none"})}
    dep = {n.name: n for n in GRAPHS["deploy"].nodes({"driver": "feetech", "port": "/dev/ttyACM0",
                                                      "calibration": "f.yaml", "checkpoint": "ck"})}
    assert "--seed" not in dep["robot"].args and "--port" in dep["robot"].args
    dep = {n.name: n for n in GRAPHS["deploy"].nodes({"driver": "feetech", "port": "/dev/ttyACM0", "calibration": "f.yaml",
                                                      "checkpoint": "ck", "cameras": "front,wrist",
                                                      "sources": "/dev/video0,/dev/video2"})}
    assert {"camera_front", "camera_wrist"} <= set(dep) and "--image-transport" in dep["inference"].args
    for bad, msg in (({**p, "device": "expert"}, "records a person"), ({**p, "port": ""}, "needs port="),
                     ({**p, "leader.port": ""}, "needs leader.port="), ({**p, "sources": "/dev/video0"}, "1 camera sources")):
        with pytest.raises(KeyError) as e:
            GRAPHS["teleop_record"].nodes(bad)
        assert msg in str(e.value), (msg, str(e.value))
