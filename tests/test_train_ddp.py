"""`robot-rl train nproc=N` and torchrun: DistributedDataParallel training with real gloo
processes on loopback -- one model on every rank, rank 0 alone writes, the batch is the
global one, resume, refusals, and a rank that dies ends the run (no hang)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from robot_rl.cli.main import main
from robot_rl.learn.distributed import state_digest

RUN_TIMEOUT_S = 120  # a hang fails the test instead of blocking the suite


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Six real pick_cube expert episodes, state only."""
    path = tmp_path_factory.mktemp("ddp") / "pick.zarr"
    assert main(["record", "sim", "task=pick_cube", "episodes=6", "cameras=[]", f"out={path}", "progress=false"]) == 0
    return path


def cli(*args: str, torchrun: bool = False, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`robot-rl train ...` (or under torchrun) in a process group of its own, killed whole on timeout."""
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
            "robot_rl.cli.main"] if torchrun else [sys.executable, "-m", "robot_rl.cli.main"]
    p = subprocess.Popen([*head, "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env={**os.environ, "GLOO_SOCKET_IFNAME": "lo"})
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"train did not end within {timeout} s (hang?)\n{out[-2000:]}\n{err[-4000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def common(store, out, *extra):
    return ["policy=mlp_bc", f"dataset={store}", "batch_size=32", "log_every=10", f"out={out}", "progress=false",
            "save_every=20", *extra]


def loss_steps(out):
    return [int(r["step"]) for r in csv.DictReader(open(out / "log.csv")) if r["loss"]]


def saved_state(out):
    from safetensors.torch import load_file
    t = load_file(str(out / "train_state" / "state.safetensors"))
    return t, json.loads((out / "train_state" / "state.json").read_text())


@pytest.fixture(scope="module")
def ddp_run(store, tmp_path_factory):
    """40 steps with nproc=2, an evaluation at step 20 and a final one (rank 0), states saved."""
    out = tmp_path_factory.mktemp("ddp_run") / "bc"
    r = cli(*common(store, out, "steps=40", "nproc=2", "eval_every=20", "eval_episodes=2", "eval_n_envs=2",
                    "eval_videos=0"))
    assert r.returncode == 0, r.stderr[-4000:]
    return out, r


def test_two_processes_train_one_model_and_rank0_alone_writes(ddp_run):
    out, r = ddp_run
    assert r.stdout.count("2 processes (DDP, gloo") == 1 and "batch 32 = 2 x 16" in r.stdout
    assert r.stdout.count("trained mlp_bc on pick_cube: 40 steps") == 1 and "eval: success" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    # the batch is the global one: 40 steps of 32 windows, 16 from each rank
    assert s["world_size"] == 2 and s["batch_size"] == 32 and s["ddp"]["batch_size_per_rank"] == 16
    assert s["samples"] == 40 * 32
    # both ranks ended with bit-identical weights, and they are the ones rank 0 saved
    d = s["ddp"]["replica_digests"]
    assert len(d) == 2 and d[0] == d[1] and s["ddp"]["replicas_identical"]
    t, st = saved_state(out)
    assert state_digest({k[6:]: v for k, v in t.items() if k.startswith("model.")}) == d[0]
    assert st["step"] == 40 and st["ema_updates"] == 40 and float(t["opt.0.step"]) == 40
    # one writer: every log row once, one TensorBoard file, the evaluations of rank 0 only
    assert loss_steps(out) == [10, 20, 30, 40]
    assert [int(r["step"]) for r in csv.DictReader(open(out / "log.csv")) if r["eval_success"]] == [20, 40]
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["step_0000020", "step_0000040"]
    for c in ("last", "best"):
        assert (out / "checkpoints" / c / "model.safetensors").exists()


def test_the_ranks_split_the_batches_one_process_would_train_on(ddp_run, store, tmp_path):
    """Same seed, same global batch: one process and two see the same batches, so the logged
    losses (each the global batch's) agree; the first row before rounding could drift. Not
    to the bit: the masked loss is normalised per rank, and DDP averages the two halves."""
    out, _ = ddp_run
    one = tmp_path / "one"
    assert main(["train", *common(store, one, "steps=40", "eval_final=false")]) == 0

    def losses(o):
        return [float(r["loss"]) for r in csv.DictReader(open(o / "log.csv")) if r["loss"]]
    a, b = losses(one), losses(out)
    assert len(a) == len(b) == 4
    assert b[0] == pytest.approx(a[0], rel=2e-3)  # steps 1-10
    assert b == pytest.approx(a, rel=3e-2)


def test_resume_under_torchrun(ddp_run, store):
    """The same run continued to step 60 by torchrun's two processes: each loads the state."""
    out, _ = ddp_run
    r = cli(*common(store, out, "steps=60", "resume=true", "eval_final=false"), torchrun=True)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.count("resumed from") == 1 and r.stdout.count("trained mlp_bc") == 1
    assert loss_steps(out) == [10, 20, 30, 40, 50, 60]
    t, st = saved_state(out)
    assert st["step"] == 60 and st["ema_updates"] == 60 and float(t["opt.0.step"]) == 60
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 60 and s["samples"] == 20 * 32 and s["ddp"]["replicas_identical"]


def test_refusals(store, tmp_path, capsys):
    for extra, msg in [(["nproc=2", "batch_size=33"], "batch_size=33 (the global batch of one optimiser step) "
                                                      "does not split evenly over 2 processes"),
                       (["nproc=0"], "nproc must be a whole number >= 1"),
                       (["nproc=two"], "nproc must be a whole number >= 1")]:
        rc = main(["train", "policy=mlp_bc", f"dataset={store}", "steps=5", f"out={tmp_path / 'x'}", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "x").exists()
    # an error inside the workers reaches the launcher as one line
    r = cli("policy=mlp_bc", f"dataset={store}", "steps=5", "task=push", "nproc=2", f"out={tmp_path / 'y'}")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert "robot-rl train: error: training process rank" in last and "no successful episodes of task 'push'" in last


def test_one_process_sets_up_no_process_group(store, tmp_path, capsys):
    assert main(["train", *common(store, tmp_path / "one", "steps=10", "eval_final=false")]) == 0
    assert not torch.distributed.is_initialized()
    s = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert s["world_size"] == 1 and "ddp" not in s and s["samples"] == 10 * 32
    assert "DDP" not in capsys.readouterr().out


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


def _rank(pid: int) -> str | None:
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    return next((e[5:].decode() for e in env if e.startswith(b"RANK=")), None)


def test_a_rank_that_dies_ends_the_run(store, tmp_path):
    """SIGKILL rank 1 mid-training: the launcher stops rank 0 and fails, naming rank 1."""
    out = tmp_path / "crash"
    p = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "train",
                          *common(store, out, "steps=1000000", "nproc=2", "eval_final=false", "save_every=0")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        t0 = time.monotonic()
        while not ((out / "log.csv").exists() and len((out / "log.csv").read_text().splitlines()) >= 3):
            assert p.poll() is None, p.communicate()[1][-4000:]
            assert time.monotonic() - t0 < RUN_TIMEOUT_S, "training did not start"
            time.sleep(0.2)
        workers = {_rank(c): c for c in _children(p.pid)}
        assert set(workers) == {"0", "1"}, workers
        os.kill(workers["1"], signal.SIGKILL)
        _, err = p.communicate(timeout=60)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    assert p.returncode == 2
    assert "robot-rl train: error: training process rank 1 of 2 failed: killed by SIGKILL" in err
    for pid in workers.values():  # rank 0 was stopped too: nothing left running
        assert not os.path.exists(f"/proc/{pid}"), pid
