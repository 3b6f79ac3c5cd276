"""A stand-in node process for launcher tests: runs until told to stop, then writes a marker.

    python tests/_launch_dummy_node.py MARKER_DIR NAME [--exit-after S] [--code N] [--ignore-sigint]
"""
import argparse
import signal
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("name")
ap.add_argument("--exit-after", type=float, default=None)
ap.add_argument("--code", type=int, default=0)
ap.add_argument("--ignore-sigint", action="store_true")
a = ap.parse_args()
d = Path(a.dir)
stop = False


def on_int(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGINT, signal.SIG_IGN if a.ignore_sigint else on_int)
with open(d / f"{a.name}.starts", "a") as f:
    f.write("start\n")
print(f"{a.name} up", flush=True)
t0 = time.monotonic()
while not stop:
    if a.exit_after is not None and time.monotonic() - t0 > a.exit_after:
        sys.exit(a.code)
    time.sleep(0.02)
(d / f"{a.name}.clean").write_text("closed cleanly\n")
print(f"{a.name} closed", flush=True)
