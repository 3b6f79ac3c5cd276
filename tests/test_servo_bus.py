"""The servo bus client against the servo-bus emulator, over real pseudo-terminals and
real pyserial, for both protocols (Feetech STS3215, Dynamixel XL330/XL430)."""
from __future__ import annotations

import os
import statistics
import time

import pytest
import serial

from robot_rl.drivers.servo import errors
from robot_rl.drivers.servo.bus import ServoBus, wire_time_s
from robot_rl.drivers.servo.protocols import get_protocol, get_table
from robot_rl.drivers.virtual.servo_bus import BusFaults, ServoBusEmulator, VirtualServo

MODEL = {"feetech": "sts3215", "dynamixel": "xl330-m288"}
IDS = [1, 2, 3, 4, 5, 6]
ALL = {p: {i: m for i in IDS} for p, m in MODEL.items()}  # the bus told the models (no discovery pings)


@pytest.fixture
def rig(request):
    """rig(protocol, ...) -> (emulator, open bus); both closed at the end of the test.
    The per-reply timeout is generous (50 ms): these tests are about semantics, and the
    machine they run on may be busy; the fault tests pass their own."""
    made = []

    def make(protocol, *, n=6, baud=1_000_000, bus_baud=None, faults=None, seed=0, models=None, retries=2,
             timeout_s=0.05, return_delay=0, servos=None, link=None):
        if servos is None:
            servos = [VirtualServo(i, MODEL[protocol], baudrate=baud) for i in range(1, n + 1)]
            for s in servos:
                s.set("Return_Delay_Time", return_delay)
        emu = ServoBusEmulator(protocol, servos, faults=faults, seed=seed, link=link)
        port = emu.start()
        bus = ServoBus(port, protocol, bus_baud or baud, retries=retries, timeout_s=timeout_s, models=models)
        made.append((emu, bus))
        bus.open()
        return emu, bus

    yield make
    for emu, bus in made:
        bus.close()
        emu.close()


both = pytest.mark.parametrize("proto", ["feetech", "dynamixel"])


# -- discovery -----------------------------------------------------------------------------
@both
def test_ping_and_scan(rig, proto):
    emu, bus = rig(proto)
    number = get_table(MODEL[proto]).model_number
    assert bus.ping(3) == number
    assert bus.scan(range(0, 10), timeout_s=0.05) == {i: number for i in IDS}
    assert bus.broadcast_ping() == {i: number for i in IDS}
    assert emu.stats()["instructions"]["ping"] >= 10 + 1


def test_table_found_by_model_number(rig):
    servos = [VirtualServo(1, "xl330-m288"), VirtualServo(2, "xl430-w250")]
    emu, bus = rig("dynamixel", servos=servos)
    assert bus.table(1).model == "xl330-m288"
    assert bus.table(2).model == "xl430-w250"
    assert bus.scan(range(0, 4), timeout_s=0.05) == {1: 1200, 2: 1060}
    # registers that exist on one model only
    assert bus.read(1, "Current_Limit") == 1750
    with pytest.raises(KeyError, match="Current_Limit"):
        bus.read(2, "Current_Limit")


@both
def test_missing_id_times_out_naming_it(rig, proto):
    emu, bus = rig(proto, retries=1)
    with pytest.raises(errors.ServoTimeout) as e:
        bus.ping(42)
    assert e.value.ids == (42,)
    assert "42" in str(e.value) and "baud" in str(e.value)
    with pytest.raises(errors.ServoTimeout) as e:
        bus.sync_read("Present_Position", [1, 2, 42])
    assert e.value.ids == (42,)
    st = bus.stats()
    assert st["timeouts"] >= 4 and st["retries"] >= 2


# -- registers -------------------------------------------------------------------------------
@both
def test_register_kinds_round_trip(rig, proto):
    emu, bus = rig(proto)
    s = emu.servo(2)
    t = s.table
    cases = {  # register -> value; checked in the emulator's register file byte for byte
        "feetech": {"Homing_Offset": -1000, "Goal_Velocity": -500, "Return_Delay_Time": 7,
                    "Max_Position_Limit": 3900, "Acceleration": 254},
        "dynamixel": {"Homing_Offset": -100_000, "Goal_Velocity": -200, "Return_Delay_Time": 7,
                      "Profile_Velocity": 70_000, "Goal_PWM": -300},
    }[proto]
    for reg, value in cases.items():
        bus.write(2, reg, value)
        assert s.get(reg) == value, reg
        assert bus.read(2, reg) == value, reg
    r = t["Homing_Offset"]
    raw = int.from_bytes(s.regs[r.addr:r.addr + r.size], "little")
    if proto == "feetech":  # sign-magnitude, sign bit 11
        assert raw == 1000 | (1 << 11)
        r = t["Goal_Velocity"]
        assert int.from_bytes(s.regs[r.addr:r.addr + r.size], "little") == 500 | (1 << 15)
    else:  # two's complement over 4 bytes
        assert raw == (-100_000) & 0xFFFFFFFF
    # the emulator side writes, the bus reads
    s.set("Present_Temperature", 41)
    s.state["temperature"] = 41
    assert bus.read(2, "Present_Temperature") == 41
    # raw access
    addr = t["Return_Delay_Time"].addr
    bus.write_raw(2, addr, bytes([9]))
    assert bus.read_raw(2, addr, 1) == bytes([9])


@both
def test_sync_read_and_sync_write_six_servos(rig, proto):
    emu, bus = rig(proto, models=ALL[proto])
    bus.sync_write("Torque_Enable", {i: 1 for i in IDS})
    goals = {i: 1000 + 300 * i for i in IDS}
    bus.sync_write("Goal_Position", goals)
    time.sleep(0.01)
    assert emu.stats()["replies"] == 0  # SYNC_WRITE is not answered
    assert bus.sync_read("Present_Position", IDS) == goals
    assert bus.sync_read("Goal_Position", list(reversed(IDS))) == goals
    assert all(emu.servo(i).get("Goal_Position") == goals[i] for i in IDS)
    st = emu.stats()
    assert st["instructions"]["sync_write"] == 2
    assert bus.stats()["latency"]["sync_read"]["n"] == 2


@both
def test_sync_read_replies_in_request_order_on_the_wire(rig, proto):
    """Raw pyserial: each servo answers with its own status packet, in the listed order."""
    emu, bus = rig(proto)
    bus.close()
    p = get_protocol(proto)
    addr = get_table(MODEL[proto])["Present_Position"].addr
    order = [5, 2, 6, 1]
    with serial.Serial(emu.port, 1_000_000, timeout=0.2) as ser:
        ser.write(p.sync_read(order, addr, 2))
        buf = bytearray()
        end = time.monotonic() + 1
        got = []
        while len(got) < len(order) and time.monotonic() < end:
            buf += ser.read(ser.in_waiting or 1)
            while True:
                pkt, consumed, _ = p.find_packet(buf, True)
                del buf[:consumed]
                if pkt is None:
                    if not consumed:
                        break
                    continue
                got.append(pkt.id)
    assert got == order


# -- firmware semantics ---------------------------------------------------------------------------
def test_feetech_homing_offset_and_limits(rig):
    emu, bus = rig("feetech")
    s = emu.servo(1)
    s.state["position"] = 3000  # the arm where it is (raw encoder)
    assert bus.read(1, "Present_Position") == 3000
    bus.write(1, "Homing_Offset", 1000)
    assert bus.read(1, "Present_Position") == 2000
    bus.write(1, "Homing_Offset", -1500)
    assert bus.read(1, "Present_Position") == (3000 + 1500) % 4096
    # calibration: the offset that makes this pose read 2047
    bus.write(1, "Homing_Offset", 3000 - 2047)
    assert bus.read(1, "Present_Position") == 2047
    # goals go through the offset the other way
    bus.write(1, "Homing_Offset", 1000)
    bus.write(1, "Torque_Enable", 1)
    assert bus.read(1, "Goal_Position") == 2000  # torque on holds where it is
    bus.write(1, "Goal_Position", 100)
    assert s.state["position"] == 1100
    assert bus.read(1, "Present_Position") == 100
    # goals are clamped to the position limits
    bus.write(1, "Torque_Enable", 0)
    bus.write(1, "Min_Position_Limit", 500)
    bus.write(1, "Max_Position_Limit", 3000)
    bus.write(1, "Torque_Enable", 1)
    bus.write(1, "Goal_Position", 3500)
    assert bus.read(1, "Goal_Position") == 3000
    assert bus.read(1, "Present_Position") == 3000
    bus.write(1, "Goal_Position", 10)
    assert bus.read(1, "Present_Position") == 500


def test_dynamixel_homing_offset_and_limits(rig):
    emu, bus = rig("dynamixel")
    s = emu.servo(1)
    s.state["position"] = 3000
    bus.write(1, "Homing_Offset", 1000)
    assert bus.read(1, "Present_Position") == 4000  # raw + offset, not wrapped
    bus.write(1, "Homing_Offset", -1000)
    assert bus.read(1, "Present_Position") == 2000
    bus.write(1, "Torque_Enable", 1)
    assert bus.read(1, "Goal_Position") == 2000
    bus.write(1, "Goal_Position", 3500)
    assert s.state["position"] == 4500  # goal - offset
    assert bus.read(1, "Present_Position") == 3500
    with pytest.raises(errors.ServoInstructionError) as e:  # outside Max_Position_Limit: range error
        bus.write(1, "Goal_Position", 5000)
    assert e.value.names == ("range",)
    assert bus.read(1, "Goal_Position") == 3500


def test_feetech_lock_and_read_only(rig):
    emu, bus = rig("feetech")
    s = emu.servo(4)
    bus.write(4, "Lock", 1)
    bus.write(4, "Max_Position_Limit", 3333)  # EEPROM, locked: ignored silently
    bus.write(4, "Homing_Offset", 77)
    assert s.get("Max_Position_Limit") == 4095 and s.get("Homing_Offset") == 0
    bus.write(4, "Goal_Velocity", 123)  # SRAM: fine while locked
    assert s.get("Goal_Velocity") == 123
    bus.write(4, "Lock", 0)
    bus.write(4, "Max_Position_Limit", 3333)
    assert bus.read(4, "Max_Position_Limit") == 3333
    before = bus.read(4, "Present_Position")
    bus.write(4, "Present_Position", (before + 100) % 4096)  # read-only: ignored
    assert bus.read(4, "Present_Position") == before
    bus.write(4, "Model_Number", 1)
    assert bus.ping(4) == 777


def test_dynamixel_eeprom_needs_torque_off(rig):
    emu, bus = rig("dynamixel")
    s = emu.servo(4)
    bus.write(4, "Homing_Offset", 10)
    bus.write(4, "Torque_Enable", 1)
    with pytest.raises(errors.ServoInstructionError) as e:
        bus.write(4, "Homing_Offset", 20)
    assert e.value.names == ("access",) and e.value.servo_id == 4
    assert s.get("Homing_Offset") == 10
    with pytest.raises(errors.ServoInstructionError, match="access"):
        bus.write(4, "Present_Position", 5)
    bus.write(4, "Torque_Enable", 0)
    bus.write(4, "Homing_Offset", 20)
    assert bus.read(4, "Homing_Offset") == 20
    assert bus.stats()["status_errors"] == 2


@both
def test_id_change_takes_effect_after_the_reply(rig, proto):
    emu, bus = rig(proto, models={i: MODEL[proto] for i in IDS})
    bus.write(2, "ID", 12)  # answered from id 2 (no timeout)
    assert bus.stats()["timeouts"] == 0
    assert bus.ping(12) == get_table(MODEL[proto]).model_number
    with pytest.raises(errors.ServoTimeout):
        bus.ping(2)
    bus.set_model(12, MODEL[proto])
    assert bus.read(12, "ID") == 12


@both
def test_baud_change_and_wrong_baud(rig, proto):
    emu, bus = rig(proto, retries=0)
    table = get_table(MODEL[proto])
    value = {b: v for v, b in table.baudrates.items()}[57_600]
    bus.write(5, "Baud_Rate", value)  # the reply still comes at the old baud
    assert emu.servo(5).baudrate == 57_600
    with pytest.raises(errors.ServoTimeout) as e:
        bus.ping(5)
    assert e.value.ids == (5,)
    assert emu.stats()["baud_mismatch"] >= 1
    bus.set_baudrate(57_600)
    assert bus.ping(5) == table.model_number
    with pytest.raises(errors.ServoTimeout):  # the others are still at 1 Mbaud
        bus.ping(1)


@both
def test_bus_at_wrong_baud_gets_no_reply(rig, proto):
    emu, bus = rig(proto, bus_baud=115_200, retries=1)
    with pytest.raises(errors.ServoTimeout, match="Baud_Rate"):
        bus.ping(1)
    assert emu.stats()["baud_mismatch"] == 2 and emu.stats()["replies"] == 0


@both
def test_attach_detach_and_link(rig, proto, tmp_path):
    link = str(tmp_path / "ttyARM")
    emu, bus = rig(proto, n=2, link=link)
    assert os.path.islink(link) and os.path.realpath(link) == emu.port
    with ServoBus(link, proto, exclusive=False) as other:  # the link opens like the device
        assert other.ping(1)
    s = emu.detach(2)
    with pytest.raises(errors.ServoTimeout):
        bus.ping(2)
    emu.attach(s)
    assert bus.ping(2)
    emu.close()
    assert not os.path.lexists(link)
    emu.close()  # idempotent


class RecordingPlant:
    """A minimal physical plant: the joint sits where it was last commanded, plus a
    disturbance; torque off leaves it where a hand put it."""

    def __init__(self):
        self.raw = 1500
        self.commands = []

    def sense(self, servo):
        return {"position": self.raw, "velocity": -120, "load": -300, "current": 130, "temperature": 35,
                "voltage": 72, "moving": 1}

    def command(self, servo, torque, goal_raw):
        self.commands.append((torque, goal_raw))
        if torque and goal_raw is not None:
            self.raw = goal_raw


@both
def test_plant_is_sensed_and_commanded(rig, proto):
    plant = RecordingPlant()
    servo = VirtualServo(1, MODEL[proto], plant)
    emu, bus = rig(proto, servos=[servo])
    bus.write(1, "Homing_Offset", 100)
    expect = (1500 - 100) % 4096 if proto == "feetech" else 1500 + 100
    assert bus.read(1, "Present_Position") == expect
    plant.raw = 1700  # moved by hand
    assert bus.read(1, "Present_Position") == expect + 200
    assert bus.read(1, "Present_Load" if proto == "feetech" else "Present_Current") == (
        -300 if proto == "feetech" else 130)
    assert bus.read(1, "Present_Temperature") == 35
    assert bus.read(1, "Moving") == 1
    if proto == "feetech":
        assert bus.read(1, "Present_Velocity") == -120
        assert bus.read(1, "Present_Current") == round(130 / 6.5)
        assert bus.read(1, "Present_Voltage") == 72
    else:
        assert bus.read(1, "Present_Velocity") == round(-120 * 60 / (0.229 * 4096))
        assert bus.read(1, "Present_Input_Voltage") == 72
    bus.write(1, "Torque_Enable", 1)
    assert plant.commands[-1] == (True, 1700)  # hold where it is
    bus.write(1, "Goal_Position", 2000)
    goal_raw = (2000 + 100) % 4096 if proto == "feetech" else 2000 - 100
    assert plant.commands[-1] == (True, goal_raw)
    bus.write(1, "Torque_Enable", 0)
    assert plant.commands[-1] == (False, None)


# -- faults ------------------------------------------------------------------------------------------
@both
def test_dropped_replies_are_retried_and_counted(rig, proto):
    emu, bus = rig(proto, faults=BusFaults(drop_reply=0.2), seed=3, retries=8, timeout_s=0.02, models=ALL[proto])
    for _ in range(20):
        assert bus.sync_read("Present_Position", IDS) == {i: 2048 for i in IDS}
    st, est = bus.stats(), emu.stats()
    assert est["dropped"] > 0
    assert st["timeouts"] > 0 and st["retries"] == st["timeouts"]
    # a retry asks only the servos still missing
    assert est["instructions"]["sync_read"] == 20 + st["retries"]
    assert 20 * 6 < est["sync_read_ids"] < 20 * 6 + 6 * st["retries"]


@both
def test_corrupt_replies_are_retried_then_raise(rig, proto):
    emu, bus = rig(proto, faults=BusFaults(corrupt_reply=0.3), seed=5, retries=8, timeout_s=0.02)
    for _ in range(20):
        assert bus.read(3, "Present_Position") == 2048
    st = bus.stats()
    assert emu.stats()["corrupted"] > 0
    assert st["corrupt"] > 0 and st["garbage_bytes"] > 0 and st["retries"] >= st["corrupt"]
    emu.faults.corrupt_reply = 1.0
    with pytest.raises(errors.ServoCorrupt, match="servo.*3") as e:
        bus.read(3, "Present_Position")
    assert e.value.ids == (3,)


@both
def test_garbage_before_replies_is_skipped(rig, proto):
    emu, bus = rig(proto, faults=BusFaults(garbage=0.5), seed=11, timeout_s=0.05)
    for _ in range(30):
        assert bus.sync_read("Present_Position", IDS) == {i: 2048 for i in IDS}
    st, est = bus.stats(), emu.stats()
    assert est["garbage_sent"] > 0
    assert st["garbage_bytes"] == est["garbage_sent"]
    assert st["retries"] == 0 and st["timeouts"] == 0 and st["corrupt"] == 0


@both
def test_all_replies_dropped_is_a_timeout(rig, proto):
    emu, bus = rig(proto, faults=BusFaults(drop_reply=1.0), retries=2, timeout_s=0.002, models=ALL[proto])
    with pytest.raises(errors.ServoTimeout) as e:
        bus.sync_read("Present_Position", [1, 2])
    assert e.value.ids == (1, 2)
    assert emu.stats()["dropped"] == 6  # 3 attempts x 2 servos


ALARMS = {
    "feetech": [("overload", errors.ServoOverloadError), ("overheat", errors.ServoOverheatError),
                ("voltage", errors.ServoVoltageError), ("angle", errors.ServoAngleError),
                ("overcurrent", errors.ServoHardwareError)],
    "dynamixel": [("overload", errors.ServoOverloadError), ("overheat", errors.ServoOverheatError),
                  ("voltage", errors.ServoVoltageError), ("electrical_shock", errors.ServoHardwareError),
                  ("encoder", errors.ServoHardwareError)],
}


@both
def test_status_error_bits_become_typed_exceptions(rig, proto):
    emu, bus = rig(proto)
    for flag, cls in ALARMS[proto]:
        emu.inject_error(3, [flag])
        with pytest.raises(cls) as e:
            bus.read(3, "Present_Position")
        assert e.value.servo_id == 3 and flag in e.value.names
        assert e.value.values == {3: 2048}
        with pytest.raises(cls) as e:  # the whole SYNC_READ is consumed first
            bus.sync_read("Present_Position", IDS)
        assert e.value.values == {i: 2048 for i in IDS}
        emu.clear_error(3)
        assert bus.sync_read("Present_Position", IDS) == {i: 2048 for i in IDS}  # stream still in sync
    assert bus.stats()["timeouts"] == 0


@both
def test_overload_cuts_torque(rig, proto):
    emu, bus = rig(proto)
    bus.write(2, "Torque_Enable", 1)
    emu.inject_error(2, ["overload"])
    assert emu.servo(2).get("Torque_Enable") == 0
    with pytest.raises(errors.ServoOverloadError):
        bus.write(2, "Torque_Enable", 1)
    assert emu.servo(2).get("Torque_Enable") == 0
    if proto == "dynamixel":  # the alarm stays until REBOOT
        bus.reboot(2)
        assert emu.servo(2).errors == set()
    else:
        emu.clear_error(2)
    bus.write(2, "Torque_Enable", 1)
    assert bus.read(2, "Torque_Enable") == 1


@both
def test_scheduled_error_bits(rig, proto):
    emu, bus = rig(proto, faults=BusFaults(error_bits={4: ("overheat", 0.15)}))
    assert bus.read(4, "Present_Position") == 2048
    time.sleep(0.2)
    with pytest.raises(errors.ServoOverheatError):
        bus.read(4, "Present_Position")


# -- the port ---------------------------------------------------------------------------------------------
def test_open_errors_name_the_cause(rig, tmp_path):
    missing = str(tmp_path / "ttyACM9")
    with pytest.raises(errors.PortError, match=r"cannot open .*ttyACM9.*no such port.*find-port"):
        ServoBus(missing, "feetech").open()
    emu, bus = rig("feetech", n=1)
    with pytest.raises(errors.PortError, match="in use"):
        ServoBus(emu.port, "feetech").open()


@both
def test_unplug_raises_port_error(rig, proto):
    emu, bus = rig(proto)
    assert bus.ping(1)
    emu.unplug()
    with pytest.raises(errors.PortError, match="disconnected"):
        bus.ping(1)
    assert not bus.is_open
    with pytest.raises(errors.PortError, match="not open"):
        bus.ping(1)
    with pytest.raises(errors.PortError, match="cannot open"):
        bus.open()
    emu.close()


@both
def test_scheduled_unplug(rig, proto):
    emu, bus = rig(proto, faults=BusFaults(unplug_at_s=0.1))
    end = time.monotonic() + 3
    with pytest.raises(errors.PortError, match="disconnected"):
        while time.monotonic() < end:
            bus.sync_read("Present_Position", IDS)
    assert emu.unplugged


# -- timing -----------------------------------------------------------------------------------------------
def test_wire_time_slows_low_baud_rates(rig):
    """The same READ at 57600 baud takes measurably longer than at 1 Mbaud (ratio, not absolute)."""
    def median_read_s(baud):
        emu, bus = rig("feetech", n=1, baud=baud, models={1: "sts3215"})
        ts = []
        for _ in range(15):
            t = time.perf_counter()
            bus.read(1, "Present_Position")
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    fast, slow = median_read_s(1_000_000), median_read_s(57_600)
    wire_slow = wire_time_s(8 + 8, 57_600)  # READ request 8 bytes + 2-byte reply 8 bytes
    assert slow >= 0.9 * wire_slow
    assert slow / fast > 4, (slow, fast)


@both
def test_latency_stats(rig, proto):
    emu, bus = rig(proto)
    for _ in range(50):
        bus.sync_read("Present_Position", IDS)
    lat = bus.stats()["latency"]["sync_read"]
    assert lat["n"] == 50
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    # at least the wire time of the request and six replies
    p = get_protocol(proto)
    n_bytes = len(p.sync_read(IDS, 56, 2 if proto == "feetech" else 4)) + 6 * len(
        p.status(1, 0, bytes(2 if proto == "feetech" else 4)))
    assert lat["p50_ms"] >= 0.95 * wire_time_s(n_bytes, 1_000_000) * 1e3
    bus.reset_stats()
    assert bus.stats()["latency"] == {} and bus.stats()["transactions"] == 0


def test_emulator_idles_without_burning_cpu(rig):
    emu, bus = rig("feetech", n=2)
    bus.ping(1)
    t_cpu, t = time.process_time(), time.perf_counter()
    time.sleep(0.5)
    assert time.process_time() - t_cpu < 0.05 * (time.perf_counter() - t)
