"""The vendors' own Python SDKs, as independent clients, against the servo-bus emulator.

``scservo_sdk`` (PyPI ``feetech-servo-sdk``) and ``dynamixel_sdk`` (PyPI ``dynamixel-sdk``)
open the emulator's pty with pyserial like a USB adapter and ping, read, write, sync-read
and sync-write; every value is checked against the emulator's register file. If the
emulator or the codecs disagreed with the vendors on framing, checksums, byte order or
status packets, these calls would fail."""
from __future__ import annotations

import pytest

from robot_rl.drivers.virtual.servo_bus import ServoBusEmulator, VirtualServo

IDS = [1, 2, 3, 4, 5, 6]


@pytest.fixture
def emulator():
    made = []

    def make(protocol, model, **kw):
        servos = [VirtualServo(i, model) for i in IDS]
        for s in servos:
            s.set("Return_Delay_Time", 0)
        emu = ServoBusEmulator(protocol, servos, **kw)
        emu.start()
        made.append(emu)
        return emu

    yield make
    for emu in made:
        emu.close()


# -- Feetech ---------------------------------------------------------------------------------
@pytest.fixture
def scs():
    return pytest.importorskip("scservo_sdk", reason="the Feetech SDK is missing: .venv/bin/pip install "
                                                      "feetech-servo-sdk")


@pytest.fixture
def feetech(emulator, scs, monkeypatch):
    # the SDK's reply timeout is 2 x LATENCY_TIMER + 2 ms (its knob for slow USB adapters);
    # 16 -> 100 so a busy test machine does not turn a late reply into a failure
    monkeypatch.setattr(scs.port_handler, "LATENCY_TIMER", 100)
    emu = emulator("feetech", "sts3215")
    port = scs.PortHandler(emu.port)
    assert port.openPort() and port.setBaudRate(1_000_000)
    ph = scs.PacketHandler(0)  # STS: little-endian
    yield emu, port, ph
    port.closePort()


def test_scservo_ping_read_write(feetech, scs):
    emu, port, ph = feetech
    model, result, error = ph.ping(port, 3)
    assert (result, error) == (scs.COMM_SUCCESS, 0) and model == 777
    _, result, _ = ph.ping(port, 42)
    assert result == scs.COMM_RX_TIMEOUT
    s = emu.servo(3)
    t = s.table
    # 1-byte write / read
    result, error = ph.write1ByteTxRx(port, 3, t["Acceleration"].addr, 99)
    assert (result, error) == (scs.COMM_SUCCESS, 0) and s.get("Acceleration") == 99
    value, result, error = ph.read1ByteTxRx(port, 3, t["Acceleration"].addr)
    assert (value, result, error) == (99, scs.COMM_SUCCESS, 0)
    # 2-byte, sign-magnitude: the SDK's own encoding (SCS_TOSCS) lands as our decoding
    result, error = ph.write2ByteTxRx(port, 3, t["Homing_Offset"].addr, scs.SCS_TOSCS(-321, 11))
    assert result == scs.COMM_SUCCESS and s.get("Homing_Offset") == -321
    value, result, _ = ph.read2ByteTxRx(port, 3, t["Homing_Offset"].addr)
    assert scs.SCS_TOHOST(value, 11) == -321
    # Present_Position follows the offset (firmware semantics seen through the SDK)
    s.state["position"] = 1000
    value, result, _ = ph.read2ByteTxRx(port, 3, t["Present_Position"].addr)
    assert value == (1000 + 321) % 4096
    # 4 bytes: Goal_Position + Goal_Time in one write
    result, error = ph.write4ByteTxRx(port, 3, t["Goal_Position"].addr, (500 << 16) | 1234)
    assert result == scs.COMM_SUCCESS and s.get("Goal_Position") == 1234 and s.get("Goal_Time") == 500
    value, result, _ = ph.read4ByteTxRx(port, 3, t["Goal_Position"].addr)
    assert value == (500 << 16) | 1234
    # the Lock rule: EEPROM writes are ignored while locked
    ph.write1ByteTxRx(port, 3, t["Lock"].addr, 1)
    ph.write1ByteTxRx(port, 3, t["Return_Delay_Time"].addr, 50)
    assert s.get("Return_Delay_Time") == 0


def test_scservo_status_error_byte(feetech, scs):
    emu, port, ph = feetech
    emu.inject_error(2, ["overload"])
    value, result, error = ph.read2ByteTxRx(port, 2, emu.servo(2).table["Present_Position"].addr)
    assert result == scs.COMM_SUCCESS and value == 2048
    assert error == 0x20 and "Overload" in ph.getRxPacketError(error)


def test_scservo_group_sync_read_write(feetech, scs):
    emu, port, ph = feetech
    t = emu.servos[0].table
    for i in IDS:
        emu.servo(i).set("Torque_Enable", 1)
    gsw = scs.GroupSyncWrite(port, ph, t["Goal_Position"].addr, 2)
    goals = {i: 700 + 250 * i for i in IDS}
    for i, g in goals.items():
        assert gsw.addParam(i, [scs.SCS_LOBYTE(g), scs.SCS_HIBYTE(g)])
    assert gsw.txPacket() == scs.COMM_SUCCESS
    gsr = scs.GroupSyncRead(port, ph, t["Present_Position"].addr, 2)
    for i in IDS:
        assert gsr.addParam(i)
    assert gsr.txRxPacket() == scs.COMM_SUCCESS
    got = {i: gsr.getData(i, t["Present_Position"].addr, 2) for i in IDS}
    assert got == goals
    assert {i: emu.servo(i).get("Goal_Position") for i in IDS} == goals
    assert emu.stats()["instructions"]["sync_read"] == 1


# -- Dynamixel -------------------------------------------------------------------------------
@pytest.fixture
def dxl():
    return pytest.importorskip("dynamixel_sdk", reason="the ROBOTIS SDK is missing: .venv/bin/pip install "
                                                        "dynamixel-sdk")


@pytest.fixture
def dynamixel(emulator, dxl, monkeypatch):
    monkeypatch.setattr(dxl.port_handler, "LATENCY_TIMER", 100)  # see `feetech`
    emu = emulator("dynamixel", "xl330-m288")
    port = dxl.PortHandler(emu.port)
    assert port.openPort() and port.setBaudRate(1_000_000)
    ph = dxl.PacketHandler(2.0)
    yield emu, port, ph
    port.closePort()


def test_dynamixel_sdk_ping_read_write(dynamixel, dxl):
    emu, port, ph = dynamixel
    model, result, error = ph.ping(port, 4)
    assert (model, result, error) == (1200, dxl.COMM_SUCCESS, 0)
    _, result, _ = ph.ping(port, 42)
    assert result == dxl.COMM_RX_TIMEOUT
    s = emu.servo(4)
    t = s.table
    result, error = ph.write1ByteTxRx(port, 4, t["Return_Delay_Time"].addr, 3)
    assert (result, error) == (dxl.COMM_SUCCESS, 0) and s.get("Return_Delay_Time") == 3
    result, error = ph.write2ByteTxRx(port, 4, t["Goal_PWM"].addr, (-300) & 0xFFFF)
    assert result == dxl.COMM_SUCCESS and s.get("Goal_PWM") == -300
    value, result, _ = ph.read2ByteTxRx(port, 4, t["Goal_PWM"].addr)
    assert value == (-300) & 0xFFFF
    result, error = ph.write4ByteTxRx(port, 4, t["Homing_Offset"].addr, (-5000) & 0xFFFFFFFF)
    assert result == dxl.COMM_SUCCESS and s.get("Homing_Offset") == -5000
    s.state["position"] = 3000
    value, result, _ = ph.read4ByteTxRx(port, 4, t["Present_Position"].addr)
    assert value == (3000 - 5000) & 0xFFFFFFFF  # raw + offset, two's complement
    value, result, _ = ph.read1ByteTxRx(port, 4, t["ID"].addr)
    assert value == 4
    # EEPROM while torque is on: the SDK sees the access error in the status packet
    ph.write1ByteTxRx(port, 4, t["Torque_Enable"].addr, 1)
    result, error = ph.write4ByteTxRx(port, 4, t["Homing_Offset"].addr, 0)
    assert result == dxl.COMM_SUCCESS and error == dxl.ERRNUM_ACCESS == 7
    assert s.get("Homing_Offset") == -5000


def test_dynamixel_sdk_hardware_alert(dynamixel, dxl):
    emu, port, ph = dynamixel
    emu.inject_error(5, ["overheat"])
    value, result, error = ph.read4ByteTxRx(port, 5, emu.servo(5).table["Present_Position"].addr)
    assert result == dxl.COMM_SUCCESS and value == 2048 and error & 0x80
    hes, result, _ = ph.read1ByteTxRx(port, 5, emu.servo(5).table["Hardware_Error_Status"].addr)
    assert hes == 1 << 2
    # REBOOT clears it, as on the real servo
    result, error = ph.reboot(port, 5)
    assert result == dxl.COMM_SUCCESS
    hes, result, error = ph.read1ByteTxRx(port, 5, emu.servo(5).table["Hardware_Error_Status"].addr)
    assert (hes, error) == (0, 0)


def test_dynamixel_sdk_group_sync_read_write(dynamixel, dxl):
    emu, port, ph = dynamixel
    t = emu.servos[0].table
    for i in IDS:
        emu.servo(i).set("Torque_Enable", 1)
    addr = t["Goal_Position"].addr
    gsw = dxl.GroupSyncWrite(port, ph, addr, 4)
    goals = {i: 1500 + 111 * i for i in IDS}
    for i, g in goals.items():
        assert gsw.addParam(i, list(int(g).to_bytes(4, "little")))
    assert gsw.txPacket() == dxl.COMM_SUCCESS
    paddr = t["Present_Position"].addr
    gsr = dxl.GroupSyncRead(port, ph, paddr, 4)
    for i in IDS:
        assert gsr.addParam(i)
    assert gsr.txRxPacket() == dxl.COMM_SUCCESS
    assert all(gsr.isAvailable(i, paddr, 4) for i in IDS)
    assert {i: gsr.getData(i, paddr, 4) for i in IDS} == goals
    assert {i: emu.servo(i).get("Goal_Position") for i in IDS} == goals
