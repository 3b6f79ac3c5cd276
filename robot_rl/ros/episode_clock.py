"""Timed episodes without a teleop device: ``start`` / ``success`` on /teleop/event.

    python -m robot_rl.ros.episode_clock --episodes 3 --seconds 20 [--task camera_session]

Waits until something (a recorder) subscribes to the event topic and every ``--wait-for``
topic has a publisher (the cameras), then sends ``start
task=<task>``, waits ``--seconds``, sends ``success``, ``--gap`` s between episodes, and
exits 0 after the last one (which ends a launched graph). For recording cameras alone, or
any contract, on a fixed schedule.
"""
from __future__ import annotations

import argparse
import sys
import time

from robot_rl.ros import topics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="episode_clock", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each episode")
    p.add_argument("--gap", type=float, default=1.0, help="s between episodes")
    p.add_argument("--task", default="", help="task= of each start event (empty: the recorder's --task)")
    p.add_argument("--wait", type=float, default=60.0, help="s to wait for a subscriber (a recorder)")
    p.add_argument("--wait-for", action="append", default=[], metavar="TOPIC",
                   help="also wait until TOPIC has a publisher (repeatable)")
    p.add_argument("--settle", type=float, default=2.5,
                   help="s to wait after that (a camera's stamp clock locks on in its first 2 s)")
    a = p.parse_args(argv)
    if a.episodes < 1 or not a.seconds > 0:
        print("episode_clock: --episodes must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    import signal

    import rclpy
    from std_msgs.msg import String

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored)
        signal.signal(sig, interrupt)
    from rclpy.signals import SignalHandlerOptions
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("episode_clock")
    pub = node.create_publisher(String, topics.TELEOP_EVENT, topics.reliable_qos(50))
    try:
        end = time.monotonic() + a.wait
        while pub.get_subscription_count() == 0:
            if time.monotonic() > end:
                print(f"episode_clock: nobody subscribed to {topics.TELEOP_EVENT} in {a.wait:g} s "
                      "(is the recorder running?)", file=sys.stderr)
                return 1
            rclpy.spin_once(node, timeout_sec=0.1)
        for topic in a.wait_for:
            while node.count_publishers(topic) == 0:
                if time.monotonic() > end:
                    print(f"episode_clock: nothing publishes {topic} after {a.wait:g} s", file=sys.stderr)
                    return 1
                rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(a.settle)

        def send(text: str) -> None:
            pub.publish(String(data=text))
            node.get_logger().info(text)

        for e in range(a.episodes):
            send("start" + (f" task={a.task}" if a.task else ""))
            time.sleep(a.seconds)
            send("success")
            if e + 1 < a.episodes:
                time.sleep(a.gap)
        time.sleep(1.0)  # let the last event reach the recorder before the graph stops
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
