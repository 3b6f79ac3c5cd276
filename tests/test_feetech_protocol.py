"""Feetech STS/SMS codec: hand-checked frames, sign-magnitude registers, stream
resynchronisation, status flags, the STS3215 control table, and every instruction
byte for byte against the vendor SDK (feetech-servo-sdk)."""
from __future__ import annotations

import random
import sys

import pytest

from robot_rl.drivers.feetech import protocol as fp
from robot_rl.drivers.feetech.protocol import FeetechProtocol
from robot_rl.drivers.feetech.tables import MODELS, STS3215
from robot_rl.drivers.servo import errors
from robot_rl.drivers.servo.protocol import PING, READ, SYNC_READ, SYNC_WRITE, WRITE

P = FeetechProtocol()


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def drain(proto, stream: bytes, status: bool, chunk: int = 1):
    """Feed `stream` `chunk` bytes at a time, the way a reader sees a serial line."""
    buf, pkts, garbage, corrupt = bytearray(), [], 0, 0
    for k in range(0, len(stream), chunk):
        buf += stream[k:k + chunk]
        while True:
            s = proto.scan(buf, status)
            garbage += s.garbage
            corrupt += s.corrupt
            assert 0 <= s.garbage <= s.consumed <= len(buf)
            del buf[:s.consumed]
            if s.packet is not None:
                pkts.append(s.packet)
            elif s.consumed == 0:
                break
    return pkts, garbage, corrupt, bytes(buf)


# -- hand-checked frames (checksum = ~(ID + LEN + INSTR + params) & 0xFF) -----------------------

@pytest.mark.parametrize("frame, expected", [
    (P.ping(1), "ff ff 01 02 01 fb"),  # 1+2+1 = 0x04 -> 0xfb
    (P.read(1, 0x38, 2), "ff ff 01 04 02 38 02 be"),  # Present_Position of servo 1
    (P.write(1, 0x2A, b"\x00\x08"), "ff ff 01 05 03 2a 00 08 c4"),  # Goal_Position = 2048
    (P.reg_write(1, 0x2A, b"\x00\x08"), "ff ff 01 05 04 2a 00 08 c3"),
    (P.action(), "ff ff fe 02 05 fa"),
    (P.sync_read([1, 2, 3], 0x38, 2), "ff ff fe 07 82 38 02 01 02 03 38"),
    (P.sync_write(0x2A, 2, {1: b"\x00\x08", 2: b"\xff\x07"}), "ff ff fe 0a 83 2a 02 01 00 08 02 ff 07 37"),
    (P.status(1, 0, b"\x00\x08"), "ff ff 01 04 00 00 08 f2"),  # reply: position 2048
    (P.status(6, 0x20), "ff ff 06 02 20 d7"),  # overload, no data
])
def test_known_frames(frame, expected):
    assert frame == h(expected)


def test_instruction_codes_and_identity():
    assert P.name == "feetech" and P.broadcast_id == 0xFE and P.byteorder == "little"
    assert {k: P.instructions[k] for k in (PING, READ, WRITE, SYNC_READ, SYNC_WRITE)} == {
        PING: 0x01, READ: 0x02, WRITE: 0x03, SYNC_READ: 0x82, SYNC_WRITE: 0x83}
    assert P.instructions["reg_write"] == 0x04 and P.instructions["action"] == 0x05
    assert P.reset(1) == P.instruction(1, 0x06)
    assert FeetechProtocol(byteorder="big").byteorder == "big"  # SCS series
    with pytest.raises(ValueError, match="byteorder"):
        FeetechProtocol(byteorder="middle")


def test_decode_what_we_encode():
    pkt, used, junk = P.find_packet(P.sync_write(0x2A, 2, {5: b"\x01\x02", 9: b"\x03\x04"}), status=False)
    assert (pkt.id, pkt.code, junk) == (0xFE, 0x83, 0) and used == len(pkt.raw)
    assert P.parse_sync_write(pkt.params) == (0x2A, 2, {5: b"\x01\x02", 9: b"\x03\x04"})
    pkt, _, _ = P.find_packet(P.sync_read([7, 3, 200], 56, 8), status=False)
    assert P.parse_sync_read(pkt.params) == (56, 8, [7, 3, 200])
    pkt, _, _ = P.find_packet(P.read(4, 56, 2), status=False)
    assert (pkt.id, pkt.code, P.parse_read(pkt.params)) == (4, 0x02, (56, 2))
    pkt, _, _ = P.find_packet(P.write(0xFE, 40, b"\x00"), status=False)  # broadcast torque off
    assert (pkt.id, P.parse_write(pkt.params)) == (0xFE, (40, b"\x00"))
    pkt, _, _ = P.find_packet(P.status(3, 0x04, b"\x10\x20\x30"), status=True)
    assert (pkt.id, pkt.code, pkt.params) == (3, 0x04, b"\x10\x20\x30")
    with pytest.raises(ValueError, match="blocks"):
        P.parse_sync_write(bytes((0x2A, 2, 1, 0)))


@pytest.mark.parametrize("build, match", [
    (lambda: P.read(0xFE, 56, 2), "READ"),  # nobody answers a broadcast READ
    (lambda: P.read(1, 56, 0), "length"),
    (lambda: P.write(1, 42, b""), "data byte"),
    (lambda: P.instruction(0xFF, 1), "servo id"),
    (lambda: P.write(1, 256, b"\x00"), "address"),
    (lambda: P.sync_write(42, 2, {1: b"\x00"}), "exactly 2"),
    (lambda: P.sync_write(42, 2, {}), "at least one"),
    (lambda: P.sync_read([], 56, 2), "at least one"),
    (lambda: P.sync_read([1, 1], 56, 2), "twice"),
    (lambda: P.sync_read([0xFE], 56, 2), "servo id"),
    (lambda: P.status(0xFE, 0), "servo id"),
    (lambda: P.write(1, 0, bytes(244)), "too long"),  # LEN 247 > 246: 251 bytes on the wire
])
def test_bad_requests_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_longest_packet_fits_the_vendor_buffer():
    assert len(P.write(1, 0, bytes(243))) == fp.MAX_PACKET == 250


# -- sign-magnitude registers -------------------------------------------------------------------

@pytest.mark.parametrize("reg, value, raw", [
    ("Homing_Offset", -1, "01 08"),
    ("Homing_Offset", 2047, "ff 07"),
    ("Homing_Offset", -2047, "ff 0f"),
    ("Present_Position", -1, "01 80"),
    ("Goal_Position", 4095, "ff 0f"),
    ("Goal_Velocity", -32767, "ff ff"),
    ("Present_Velocity", -50, "32 80"),
    ("Present_Load", -1000, "e8 07"),
    ("Present_Load", 1000, "e8 03"),
    ("Present_Current", -3, "03 80"),
    ("Model_Number", 777, "09 03"),
])
def test_sign_magnitude_known_bytes(reg, value, raw):
    assert STS3215.encode(reg, value) == h(raw)
    assert STS3215.decode(reg, h(raw)) == value


def test_sign_magnitude_round_trips_and_edges():
    for v in range(-2047, 2048):
        assert STS3215.decode("Homing_Offset", STS3215.encode("Homing_Offset", v)) == v
    for reg, bit in (("Goal_Position", 15), ("Present_Load", 10), ("Homing_Offset", 11)):
        top = (1 << bit) - 1
        for v in (0, 1, -1, top, -top):
            assert STS3215.decode(reg, STS3215.encode(reg, v)) == v
        for v in (top + 1, -top - 1):
            with pytest.raises(ValueError, match="sign bit"):
                STS3215.encode(reg, v)
    assert STS3215.decode("Homing_Offset", h("00 08")) == 0  # "-0" reads as 0
    assert STS3215.decode("Homing_Offset", h("ff f7")) == 2047  # bits above the sign bit are ignored
    with pytest.raises(ValueError):
        STS3215.encode("ID", 256)


# -- the STS3215 control table ---------------------------------------------------------------

def test_sts3215_table():
    t = MODELS["sts3215"]
    assert t is STS3215 and t.model == "sts3215" and t.model_number == 777
    assert t.byteorder == "little" and t.resolution == 4096
    assert t.baudrates == {0: 1_000_000, 1: 500_000, 2: 250_000, 3: 128_000, 4: 115_200,
                           5: 76_800, 6: 57_600, 7: 38_400}
    used = bytearray(t.size)
    for r in t.registers.values():
        assert r.addr + r.size <= t.size, r.name
        assert not any(used[r.addr:r.addr + r.size]), f"{r.name} overlaps another register"
        used[r.addr:r.addr + r.size] = b"\x01" * r.size
        assert r.eeprom == (r.addr < 40 or r.addr >= 80), r.name
        assert r.access in ("R", "RW") and not r.signed
    signs = {n: r.sign_bit for n, r in t.registers.items() if r.sign_bit is not None}
    assert signs == {"Homing_Offset": 11, "Goal_Position": 15, "Goal_Velocity": 15, "Present_Position": 15,
                     "Present_Velocity": 15, "Present_Load": 10, "Present_Current": 15}
    want = {"Model_Number": (3, 2, 777), "ID": (5, 1, 1), "Baud_Rate": (6, 1, 0), "Return_Delay_Time": (7, 1, 0),
            "Min_Position_Limit": (9, 2, 0), "Max_Position_Limit": (11, 2, 4095), "Homing_Offset": (31, 2, 0),
            "Operating_Mode": (33, 1, 0), "Torque_Enable": (40, 1, 0), "Acceleration": (41, 1, 0),
            "Goal_Position": (42, 2, 0), "Goal_Velocity": (46, 2, 0), "Torque_Limit": (48, 2, 1000),
            "Lock": (55, 1, 0), "Present_Position": (56, 2, 0), "Present_Velocity": (58, 2, 0),
            "Present_Load": (60, 2, 0), "Present_Voltage": (62, 1, 0), "Present_Temperature": (63, 1, 0),
            "Status": (65, 1, 0), "Moving": (66, 1, 0), "Present_Current": (69, 2, 0),
            "Max_Torque_Limit": (16, 2, 1000), "P_Coefficient": (21, 1, 32), "D_Coefficient": (22, 1, 32),
            "I_Coefficient": (23, 1, 0), "Protection_Current": (28, 2, 500), "Overload_Torque": (36, 1, 80),
            "Maximum_Acceleration": (85, 1, 0)}
    assert {n: (t[n].addr, t[n].size, t[n].default) for n in want} == want
    assert all(t[n].access == "R" for n in ("Model_Number", "Present_Position", "Present_Load", "Status", "Moving"))
    assert all(t[n].eeprom for n in ("ID", "Baud_Rate", "Homing_Offset", "Min_Position_Limit", "Return_Delay_Time"))
    # a factory-new register file, read back register by register, gives the defaults
    regs = bytearray(t.size)
    for r in t.registers.values():
        regs[r.addr:r.addr + r.size] = t.encode(r.name, r.default)
    assert regs[3:5] == b"\x09\x03"  # servo main version 9, sub version 3
    assert {n: t.decode(n, regs[r.addr:r.addr + r.size]) for n, r in t.registers.items()} == {
        n: r.default for n, r in t.registers.items()}
    with pytest.raises(KeyError, match="Goal_Speed"):
        t["Goal_Speed"]


# -- finding packets in a stream -------------------------------------------------------------------

def test_find_packet_clean_and_need_more():
    frame = P.status(1, 0, b"\x00\x08")
    pkt, used, junk = P.find_packet(frame, status=True)
    assert (pkt.id, pkt.code, pkt.params, pkt.raw, used, junk) == (1, 0, b"\x00\x08", frame, len(frame), 0)
    for k in range(len(frame)):  # every prefix: wait, throw nothing away
        assert P.find_packet(frame[:k], status=True) == (None, 0, 0)
    assert P.find_packet(b"", status=True) == (None, 0, 0)


def test_garbage_before_a_header_is_skipped():
    frame = P.status(2, 0, b"\x2a")
    pkt, used, junk = P.find_packet(b"\x00\x13\x37" + frame, status=True)
    assert pkt.id == 2 and used == 3 + len(frame) and junk == 3
    assert P.find_packet(b"\x01\x02\x03", status=True) == (None, 3, 3)
    assert P.find_packet(b"\x01\x02\xff", status=True) == (None, 2, 2)  # keep a possible half header
    # junk ending in 0xFF right before the header: FF FF FF 02 ... (0xFF is never an id)
    pkt, used, junk = P.find_packet(b"\xff" + frame, status=True)
    assert pkt.id == 2 and junk == 1
    pkt, used, junk = P.find_packet(b"\x05\xff\xff" + frame, status=True)
    assert pkt.id == 2 and junk == 3


def test_corrupted_checksum_is_dropped_and_flagged():
    good = P.status(1, 0, b"\x00\x08")
    bad = good[:-1] + bytes((good[-1] ^ 0x01,))
    s = P.scan(bad + good, status=True)
    assert s.packet is None and s.consumed == s.garbage == len(bad) and s.corrupt
    pkts, garbage, corrupt, rest = drain(P, bad + good, status=True, chunk=3)
    assert [p.raw for p in pkts] == [good] and garbage == len(bad) and corrupt == 1 and rest == b""
    flipped = bytearray(good)
    flipped[5] ^= 0x40  # a data byte flipped on the line
    pkts, garbage, corrupt, _ = drain(P, bytes(flipped) + good, status=True)
    assert [p.raw for p in pkts] == [good] and corrupt == 1


def test_split_and_back_to_back_packets():
    frames = [P.status(i, 0, bytes(range(i))) for i in range(1, 6)]
    stream = b"".join(frames)
    for chunk in (1, 2, 3, 7, len(stream)):
        pkts, garbage, corrupt, rest = drain(P, stream, status=True, chunk=chunk)
        assert [p.raw for p in pkts] == frames and garbage == 0 and corrupt == 0 and rest == b""
    pkt, used, junk = P.find_packet(stream, status=True)
    assert pkt.raw == frames[0] and used == len(frames[0]) and junk == 0


def test_absurd_headers_are_junk():
    frame = P.status(1, 0, b"\x00\x08")
    for junk in (h("ff ff 01 ff"), h("ff ff 01 00"), h("ff ff 01 01"), h("ff ff fe 02 00 ff")):
        pkts, garbage, corrupt, rest = drain(P, junk + frame, status=True)
        assert [p.raw for p in pkts] == [frame] and garbage == len(junk) and rest == b"", junk.hex()
    # a stray header with a plausible but long LEN does not hold up the real reply behind it
    stray = h("ff ff 05 f0 00")
    pkt, used, junk = P.find_packet(stray + frame, status=True)
    assert pkt.raw == frame and junk == len(stray) and used == len(stray) + len(frame)
    assert P.find_packet(stray, status=True) == (None, 0, 0)  # alone, it may be a real long packet
    # a broadcast header is an instruction, never a status packet
    sync = P.sync_read([1, 2], 56, 2)
    assert P.find_packet(sync, status=False)[0].id == 0xFE
    assert P.find_packet(sync, status=True)[0] is None


def test_resync_fuzz():
    rng = random.Random(7)
    frames, stream = [], bytearray()
    for _ in range(300):
        junk = bytes(rng.choice(range(0xFF)) for _ in range(rng.choice((0, 0, 0, 1, 2, 5))))  # no 0xFF in junk
        frame = P.status(rng.randint(0, 0xFD), rng.randint(0, 0x7F),
                         bytes(rng.randrange(256) for _ in range(rng.randint(0, 12))))
        frames.append(frame)
        stream += junk + frame
    pkts, garbage, corrupt, rest = drain(P, bytes(stream), status=True, chunk=5)
    assert [p.raw for p in pkts] == frames and corrupt == 0 and rest == b""
    assert garbage == len(stream) - sum(map(len, frames))


# -- status error byte -----------------------------------------------------------------------------

def test_error_names():
    assert P.error_names(0) == ()
    assert P.error_names(0x01) == ("voltage",)
    assert P.error_names(0x02) == ("angle",)
    assert P.error_names(0x04) == ("overheat",)
    assert P.error_names(0x08) == ("overcurrent",)
    assert P.error_names(0x20) == ("overload",)
    assert P.error_names(0x2C) == ("overheat", "overcurrent", "overload")
    assert P.error_names(0x10) == P.error_names(0x40) == P.error_names(0xD0) == ("hardware",)
    for names in (("voltage",), ("overheat", "overload"), ("hardware",), ("angle", "overcurrent")):
        bits = P.error_byte(names)
        assert bits <= 0x7F and P.error_names(bits) == names
    with pytest.raises(ValueError, match="known flags"):
        P.error_byte(["melted"])
    assert all(n in errors.STATUS_CLASSES for n in fp.ERROR_BITS)
    exc = errors.status_error(3, 0x21, P.error_names(0x21), "write Goal_Position")
    assert isinstance(exc, errors.ServoVoltageError) and exc.names == ("voltage", "overload")
    assert isinstance(errors.status_error(3, 0x08, P.error_names(0x08)), errors.ServoHardwareError)
    assert isinstance(errors.status_error(3, 0x20, P.error_names(0x20)), errors.ServoOverloadError)


# -- against the vendor SDK ----------------------------------------------------------------------------

def test_compare_with_vendor_sdk():
    pytest.importorskip("scservo_sdk", reason="vendor reference missing: pip install feetech-servo-sdk")
    from robot_rl.drivers.feetech.sdk_compare import INSTRUCTIONS, compare
    result = compare(n=1000, seed=0)
    assert set(result) == set(INSTRUCTIONS)
    for name, r in result.items():
        assert r["frames"] == 1000 and r["identical"] == 1000 and r["first_mismatch"] is None, (name, r)
    # too-long frames were tried, and both sides refused them
    assert all(result[n]["refused"] > 0 for n in ("WRITE", "SYNC_READ", "SYNC_WRITE"))


def test_compare_catches_a_wrong_codec():
    pytest.importorskip("scservo_sdk", reason="vendor reference missing: pip install feetech-servo-sdk")
    from robot_rl.drivers.feetech.sdk_compare import compare

    class SortedSyncWrite(FeetechProtocol):  # a plausible mistake: ids reordered
        def sync_write(self, addr, length, data):
            return super().sync_write(addr, length, dict(sorted(data.items())))

    class OffByOne(FeetechProtocol):  # checksum over the header too
        def _packet(self, servo_id, code, params):
            raw = bytearray(super()._packet(servo_id, code, params))
            raw[-1] = ~(sum(raw[:-1])) & 0xFF
            return bytes(raw)

    r = compare(n=50, seed=1, protocol=SortedSyncWrite())
    assert r["SYNC_WRITE"]["identical"] < 50 and r["SYNC_WRITE"]["first_mismatch"]["sdk"] != \
        r["SYNC_WRITE"]["first_mismatch"]["ours"]
    assert r["PING"]["identical"] == 50
    r = compare(n=20, seed=2, protocol=OffByOne())
    assert all(r[n]["identical"] == 0 for n in ("PING", "READ", "STATUS"))


def test_compare_without_the_sdk_says_how_to_get_it(monkeypatch):
    from robot_rl.drivers.feetech import sdk_compare
    monkeypatch.setitem(sys.modules, "scservo_sdk", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install feetech-servo-sdk"):
        sdk_compare.compare(n=1)


def test_a_garbled_length_ending_inside_the_next_header_does_not_lose_the_next_reply():
    """A corrupt reply whose LEN is one too long ends its window on the first FF of the next
    packet's header: the resync must keep that FF."""
    from robot_rl.drivers.feetech.protocol import FeetechProtocol
    p = FeetechProtocol()
    good = p.status(1, 0, b"\x10\x20")
    bad = bytearray(p.status(2, 0, b"\x01\x02\x03"))
    bad[3] += 1  # LEN one too long
    bad[5] ^= 0x40  # and a flipped bit, so the checksum fails
    buf = bytes(bad) + good
    pk, consumed, _ = p.find_packet(buf, True)
    assert pk is None and consumed == len(bad)  # up to, not into, the next header
    pk, _, _ = p.find_packet(buf[consumed:], True)
    assert pk is not None and pk.id == 1 and pk.params == b"\x10\x20"
