"""Servo buses: the codecs against the vendor SDKs, and SYNC_READ latency on the virtual bus.

(a) ``codec``: ``robot_rl.drivers.{feetech,dynamixel}.sdk_compare.compare(n)`` builds n
    random frames per instruction with our codec and with the vendor SDK (scservo_sdk,
    dynamixel_sdk) and counts the identical ones (status packets: the SDK decodes ours).
(b) ``sync_read``: one 6-servo SYNC_READ of Present_Position at 1 Mbaud through the real
    client (``ServoBus``, pyserial) and the servo-bus emulator on a pty, N times, per
    protocol: Return_Delay_Time 0 (what LeRobot configures) and the model's factory value.
    The emulator runs in a child process (like a real servo, nothing shares our GIL) or,
    with ``--emulator thread``, in this process (how the tests use it). The theoretical
    wire time (request + 6 replies at 10 bits/byte + 6 return delays) is the floor.

    .venv/bin/python benchmarks/bench_servo.py [--n-codec 1000] [--n 2000] [--baud 1000000]
        [--emulator process|thread|both] [--out benchmarks/results/servo.json]

No ROS needed.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json  # noqa: E402

from robot_rl.drivers.servo.bus import ServoBus, wire_time_s  # noqa: E402
from robot_rl.drivers.servo.protocols import get_protocol, get_table  # noqa: E402
from robot_rl.drivers.virtual.servo_bus import ServoBusEmulator, VirtualServo  # noqa: E402

MODELS = {"feetech": "sts3215", "dynamixel": "xl330-m288"}
IDS = [1, 2, 3, 4, 5, 6]
REG = "Present_Position"


# -- (a) codec vs vendor SDK ----------------------------------------------------------------
def bench_codec(n: int) -> list[dict]:
    from robot_rl.drivers.dynamixel.sdk_compare import compare as dxl_compare
    from robot_rl.drivers.feetech.sdk_compare import compare as feetech_compare

    rows = []
    for proto, fn in (("feetech", feetech_compare), ("dynamixel", dxl_compare)):
        t = time.perf_counter()
        result = fn(n)
        dt = time.perf_counter() - t
        for instr, r in result.items():
            rows.append({"protocol": proto, "instruction": instr, "frames": r["frames"],
                         "identical": r["identical"], "all_identical": r["identical"] == r["frames"],
                         **{k: v for k, v in r.items() if k not in ("frames", "identical") and
                            not isinstance(v, dict) and v is not None}})
        rows.append({"protocol": proto, "instruction": "(compare wall s)", "frames": None, "identical": None,
                     "wall_s": round(dt, 3)})
    return rows


# -- (b) SYNC_READ latency ------------------------------------------------------------------
def _make_emulator(proto: str, baud: int, return_delay: int) -> ServoBusEmulator:
    servos = [VirtualServo(i, MODELS[proto], baudrate=baud) for i in IDS]
    for s in servos:
        s.set("Return_Delay_Time", return_delay)
    return ServoBusEmulator(proto, servos)


def _emulator_process(proto: str, baud: int, return_delay: int, conn) -> None:
    emu = _make_emulator(proto, baud, return_delay)
    conn.send(emu.start())
    conn.recv()  # until the parent is done
    conn.send(emu.stats())
    emu.close()


class Emulator:
    """The emulator in this process (thread) or in a child process."""

    def __init__(self, mode: str, proto: str, baud: int, return_delay: int):
        self.mode = mode
        if mode == "thread":
            self.emu = _make_emulator(proto, baud, return_delay)
            self.port = self.emu.start()
        else:
            ctx = mp.get_context("fork")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_emulator_process, args=(proto, baud, return_delay, child), daemon=True)
            self.proc.start()
            self.port = self.conn.recv()

    def close(self) -> dict:
        if self.mode == "thread":
            st = self.emu.stats()
            self.emu.close()
            return st
        self.conn.send("stop")
        st = self.conn.recv()
        self.proc.join(5)
        return st


def theoretical_ms(proto: str, return_delay: int, baud: int) -> float:
    p, t = get_protocol(proto), get_table(MODELS[proto])
    r = t[REG]
    n_bytes = len(p.sync_read(IDS, r.addr, r.size)) + len(IDS) * len(p.status(1, 0, bytes(r.size)))
    return (wire_time_s(n_bytes, baud) + len(IDS) * return_delay * 2e-6) * 1e3


def bench_sync_read(proto: str, return_delay: int, n: int, baud: int, mode: str, warmup: int = 100) -> dict:
    emu = Emulator(mode, proto, baud, return_delay)
    try:
        # generous timeout: a stalled machine shows up as latency (max_ms), not as a failed run
        with ServoBus(emu.port, proto, baud, timeout_s=0.1, retries=10, models={i: MODELS[proto] for i in IDS}) as bus:
            for _ in range(warmup):
                bus.sync_read(REG, IDS)
            bus.reset_stats()
            ts = []
            for _ in range(n):
                t = time.perf_counter()
                values = bus.sync_read(REG, IDS)
                ts.append(time.perf_counter() - t)
            assert len(values) == len(IDS)
            st = bus.stats()
    finally:
        est = emu.close()
    ts.sort()

    def pct(q):
        return ts[min(len(ts) - 1, int(round(q * (len(ts) - 1))))] * 1e3

    wire = theoretical_ms(proto, return_delay, baud)
    return {"protocol": proto, "emulator": mode, "return_delay_us": 2 * return_delay, "n": n,
            "wire_ms": round(wire, 4), "p50_ms": round(pct(0.5), 4), "p99_ms": round(pct(0.99), 4),
            "max_ms": round(ts[-1] * 1e3, 4), "mean_ms": round(sum(ts) / len(ts) * 1e3, 4),
            "p50_over_wire_ms": round(pct(0.5) - wire, 4), "retries": st["retries"], "timeouts": st["timeouts"],
            "bus_p99_ms": round(st["latency"]["sync_read"]["p99_ms"], 4), "emu_replies": est["replies"]}


def timer_noise(n: int) -> dict:
    """How late ``time.sleep(1 ms)`` wakes up on this machine: the floor under p99/max
    (each transaction needs two wake-ups: the emulator's and the client's)."""
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        time.sleep(0.001)
        xs.append(time.perf_counter() - t - 0.001)
    xs.sort()
    return {"what": "sleep(1 ms) overshoot", "n": n, "p50_ms": round(xs[n // 2] * 1e3, 4),
            "p99_ms": round(xs[int(0.99 * (n - 1))] * 1e3, 4), "max_ms": round(xs[-1] * 1e3, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-codec", type=int, default=1000, help="random frames per instruction for the SDK comparison")
    ap.add_argument("--n", type=int, default=2000, help="SYNC_READ transactions per row")
    ap.add_argument("--baud", type=int, default=1_000_000)
    ap.add_argument("--emulator", choices=("process", "thread", "both"), default="both")
    ap.add_argument("--skip-codec", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "servo.json"), help="JSON path")
    a = ap.parse_args(argv)

    out: dict = {"config": vars(a), "loadavg_start": os.getloadavg()}
    if not a.skip_codec:
        rows = bench_codec(a.n_codec)
        print_table(rows, ["protocol", "instruction", "frames", "identical", "all_identical", "refused",
                           "wire_identical", "sdk_unstuffed_on_wire", "sdk_unstuff_lossy", "wall_s"],
                    f"(a) codec vs vendor SDK, {a.n_codec} random frames per instruction")
        out["codec"] = rows

    modes = ("process", "thread") if a.emulator == "both" else (a.emulator,)
    rows = []
    for proto in MODELS:
        factory = get_table(MODELS[proto])["Return_Delay_Time"].default
        for mode in modes:
            for rd in dict.fromkeys((0, factory)):
                rows.append(bench_sync_read(proto, rd, a.n, a.baud, mode))
    print_table(rows, ["protocol", "emulator", "return_delay_us", "n", "wire_ms", "p50_ms", "p99_ms", "max_ms",
                       "p50_over_wire_ms", "retries"],
                f"(b) 6-servo SYNC_READ of {REG} at {a.baud} baud through ServoBus + emulator (pty)")
    out["sync_read"] = rows
    noise = timer_noise(a.n)
    print_table([noise], ["what", "n", "p50_ms", "p99_ms", "max_ms"], "timer wake-up noise on this machine")
    out["timer_noise"] = noise
    out["loadavg_end"] = os.getloadavg()
    print(f"\nload average: start {out['loadavg_start'][0]:.2f}, end {out['loadavg_end'][0]:.2f} "
          f"(p99/max are sensitive to other work on the machine)")
    write_json("bench_servo", out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
