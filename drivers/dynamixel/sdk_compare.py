"""Byte-for-byte comparison of our Dynamixel 2.0 codec with ROBOTIS' ``dynamixel_sdk``.

The SDK is driven exactly as an application drives it (``Protocol2PacketHandler``,
``GroupSyncRead``, ``GroupSyncWrite``, ``GroupBulkRead``, ``GroupBulkWrite``) on a
``PortHandler`` subclass whose ``writePort`` records the bytes and whose ``readPort``
serves a queued reply (nothing by default), so no serial port is needed.

One vendor bug is accounted for, not copied: ``Protocol2PacketHandler.txPacket`` calls
``self.addStuffing(txpacket)`` and ignores the result, and ``addStuffing`` returns a
*new* list whenever stuffing adds bytes -- so the Python SDK (4.1.0, and upstream at the
time of writing) sends frames that need stuffing *unstuffed* (un-stuffed LENGTH, CRC
over the unstuffed bytes; a servo would misread such a frame at the FF FF FD). For those
frames the reference is what the vendor's own ``addStuffing`` returns for the SDK's
frame, with the vendor's ``updateCRC`` over it -- i.e. what ``txPacket`` meant to send.
``sdk_unstuffed_on_wire`` counts them; ``wire_identical`` counts frames equal to the
SDK's raw output (all the others).

The reverse direction is checked too ("STATUS"): status packets built by our codec are
fed to the SDK's ``readTxRx`` / ``ping`` / ``GroupSyncRead.rxPacket``, which must decode
the same id, error and data.

``python -m robot_rl.drivers.dynamixel.sdk_compare [n] [seed]`` prints the result.
"""
from __future__ import annotations

import json
import random
import sys

from .protocol import BROADCAST_ID, MAX_ID, Dynamixel2Protocol

INSTRUCTIONS = ("PING", "READ", "WRITE", "REG_WRITE", "ACTION", "REBOOT", "FACTORY_RESET",
                "SYNC_READ", "SYNC_WRITE", "BULK_READ", "BULK_WRITE", "STATUS")


def _sdk():
    try:
        import dynamixel_sdk  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "the Dynamixel SDK comparison needs ROBOTIS' SDK (import name dynamixel_sdk): "
            "install it with `pip install dynamixel-sdk` (in this repo: `.venv/bin/pip install dynamixel-sdk`)"
        ) from e
    return dynamixel_sdk


def _recording_port(sdk):
    class RecordingPort(sdk.PortHandler):
        """A PortHandler with no serial port: writes are recorded, reads served from `rx`."""

        def __init__(self):
            super().__init__("sdk-compare")
            self.is_open = True
            self.baudrate = 1_000_000
            self.tx_time_per_byte = 0.01
            self.written: list[bytes] = []
            self.rx = bytearray()

        def clearPort(self):
            pass

        def writePort(self, packet):
            self.written.append(bytes(packet))
            return len(packet)

        def readPort(self, length):
            out = bytes(self.rx[:length])
            del self.rx[:length]
            return out

        def isPacketTimeout(self):  # never wait: what is queued is all there is
            return True

        def take(self) -> bytes:
            self.is_using = False  # *Tx calls leave the port 'busy' until their *Rx
            if len(self.written) != 1:
                raise AssertionError(f"the SDK wrote {len(self.written)} frames, expected 1")
            return self.written.pop()

    return RecordingPort()


def _vendor_reference(ph, wire: bytes) -> bytes:
    """What the SDK's txPacket intends to send for `wire` (its own output): the vendor's
    addStuffing result, with the vendor's CRC over it. Equal to `wire` unless stuffing
    was needed (see the module docstring)."""
    stuffed = ph.addStuffing(list(wire))
    total = (stuffed[5] | (stuffed[6] << 8)) + 7
    stuffed = list(stuffed[:total])
    crc = ph.updateCRC(0, stuffed, total - 2)
    stuffed[total - 2], stuffed[total - 1] = crc & 0xFF, crc >> 8
    return bytes(stuffed)


class _Gen:
    """Random ids / addresses / data, biased towards bytes that exercise stuffing."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def byte(self) -> int:
        r = self.r
        return r.choice((0xFF, 0xFF, 0xFD, 0x00)) if r.random() < 0.35 else r.randrange(256)

    def data(self, n: int) -> bytes:
        out = bytearray(self.byte() for _ in range(n))
        if n >= 3 and self.r.random() < 0.3:  # plant a header-like run somewhere
            i = self.r.randrange(n - 2)
            out[i:i + 3] = b"\xff\xff\xfd"
        return bytes(out)

    def u16(self) -> int:
        r = self.r
        if r.random() < 0.3:
            return self.byte() | (self.byte() << 8)
        return r.choice((r.randrange(0, 256), r.randrange(0, 700), r.randrange(0, 65536)))

    def sid(self, broadcast: bool = False) -> int:
        if broadcast and self.r.random() < 0.1:
            return BROADCAST_ID
        return self.r.choice((self.r.randrange(0, MAX_ID + 1), 0xFC, 0xFB, 0, 1))

    def ids(self) -> list[int]:
        k = self.r.choice((1, 2, 3, 6, self.r.randrange(1, 40)))
        return self.r.sample(range(MAX_ID + 1), k)

    def length(self) -> int:
        return self.r.choice((1, 2, 4, self.r.randrange(1, 24)))


def compare(n: int = 1000, seed: int = 0) -> dict:
    """Build `n` random frames per instruction with our codec and with the vendor SDK.

    Returns ``{instruction: {"frames": n, "identical": k, "wire_identical": w,
    "sdk_unstuffed_on_wire": u, "first_mismatch": None | {...}}}`` for the instruction
    packets (``identical``: equal to the vendor reference, see the module docstring) and
    ``{"frames", "identical", "first_mismatch"}`` for "STATUS" (the SDK decodes our status
    packets to the same id / error / data)."""
    sdk = _sdk()
    ph = sdk.Protocol2PacketHandler()
    port = _recording_port(sdk)
    ours = Dynamixel2Protocol()
    g = _Gen(seed)
    results: dict[str, dict] = {}

    def record(name: str, mine: bytes, wire: bytes, case: dict) -> None:
        res = results.setdefault(name, {"frames": 0, "identical": 0, "wire_identical": 0,
                                        "sdk_unstuffed_on_wire": 0, "first_mismatch": None})
        ref = _vendor_reference(ph, wire)
        res["frames"] += 1
        res["wire_identical"] += mine == wire
        res["sdk_unstuffed_on_wire"] += ref != wire
        if mine == ref:
            res["identical"] += 1
        elif res["first_mismatch"] is None:
            res["first_mismatch"] = {**case, "ours": mine.hex(" "), "sdk": ref.hex(" "),
                                     "sdk_wire": wire.hex(" ")}

    for _ in range(n):
        # PING (the SDK waits for a reply: serve one built by our codec and check it decodes)
        sid = g.sid()
        model, fw = g.r.randrange(65536), g.r.randrange(256)
        reply = ours.status(sid, 0, ours.ping_params(model, fw))
        port.rx[:] = reply
        got_model, res_code, _err = ph.ping(port, sid)
        record("PING", ours.ping(sid), port.take(), {"id": sid})
        _status_check(results, ph, "PING reply", [(sid, 0, ours.ping_params(model, fw))], [reply],
                      res_code == sdk.COMM_SUCCESS and got_model == model,
                      {"id": sid, "model": model, "sdk_model": got_model, "sdk_result": res_code})

        # READ
        sid, addr, length = g.sid(), g.u16(), g.u16()
        ph.readTx(port, sid, addr, length)
        record("READ", ours.read(sid, addr, length), port.take(), {"id": sid, "addr": addr, "length": length})

        # WRITE / REG_WRITE (broadcast allowed)
        sid, addr, data = g.sid(broadcast=True), g.u16(), g.data(g.length())
        ph.writeTxOnly(port, sid, addr, len(data), list(data))
        record("WRITE", ours.write(sid, addr, data), port.take(), {"id": sid, "addr": addr, "data": data.hex()})
        sid, addr, data = g.sid(broadcast=True), g.u16(), g.data(g.length())
        ph.regWriteTxOnly(port, sid, addr, len(data), list(data))
        record("REG_WRITE", ours.reg_write(sid, addr, data), port.take(),
               {"id": sid, "addr": addr, "data": data.hex()})

        # ACTION / REBOOT / FACTORY_RESET (no reply queued: the SDK gives up at once)
        sid = g.sid(broadcast=True)
        ph.action(port, sid)
        record("ACTION", ours.action(sid), port.take(), {"id": sid})
        sid = g.sid(broadcast=True)
        ph.reboot(port, sid)
        record("REBOOT", ours.reboot(sid), port.take(), {"id": sid})
        sid, opt = g.sid(broadcast=True), g.r.choice((0xFF, 0x01, 0x02))
        ph.factoryReset(port, sid, opt)
        record("FACTORY_RESET", ours.factory_reset(sid, opt), port.take(), {"id": sid, "option": opt})

        # SYNC_READ (+ the replies, built by our codec, decoded by the SDK)
        ids, addr, length = g.ids(), g.u16(), g.length()
        gsr = sdk.GroupSyncRead(port, ph, addr, length)
        for i in ids:
            gsr.addParam(i)
        gsr.txPacket()
        record("SYNC_READ", ours.sync_read(ids, addr, length), port.take(),
               {"ids": ids, "addr": addr, "length": length})
        replies = {i: g.data(length) for i in ids}
        frames = [ours.status(i, 0, replies[i]) for i in ids]
        port.rx[:] = b"".join(frames)
        res_code = gsr.rxPacket()
        decoded = {i: bytes(gsr.data_dict[i]) for i in ids}
        _status_check(results, ph, "SYNC_READ replies", [(i, 0, replies[i]) for i in ids], frames,
                      res_code == sdk.COMM_SUCCESS and decoded == replies,
                      {"ids": ids, "sdk_result": res_code,
                       "sent": {i: d.hex() for i, d in replies.items()},
                       "sdk_decoded": {i: d.hex() for i, d in decoded.items()}})

        # SYNC_WRITE
        ids, addr, length = g.ids(), g.u16(), g.length()
        values = {i: g.data(length) for i in ids}
        gsw = sdk.GroupSyncWrite(port, ph, addr, length)
        for i, d in values.items():
            gsw.addParam(i, list(d))
        gsw.txPacket()
        record("SYNC_WRITE", ours.sync_write(addr, length, values), port.take(),
               {"addr": addr, "length": length, "data": {i: d.hex() for i, d in values.items()}})

        # BULK_READ / BULK_WRITE
        entries = [(i, g.u16(), g.length()) for i in g.ids()]
        gbr = sdk.GroupBulkRead(port, ph)
        for i, a, ln in entries:
            gbr.addParam(i, a, ln)
        gbr.txPacket()
        record("BULK_READ", ours.bulk_read(entries), port.take(), {"entries": entries})
        wentries = [(i, g.u16(), g.data(g.length())) for i in g.ids()]
        gbw = sdk.GroupBulkWrite(port, ph)
        for i, a, d in wentries:
            gbw.addParam(i, a, len(d), list(d))
        gbw.txPacket()
        record("BULK_WRITE", ours.bulk_write(wentries), port.take(),
               {"entries": [(i, a, d.hex()) for i, a, d in wentries]})

        # READ reply with an error byte (status direction)
        sid, err, data = g.sid(), g.r.choice((0, 0, 0x80, 0x07, 0x84)), g.data(g.length())
        reply = ours.status(sid, err, data)
        port.rx[:] = reply
        got, res_code, got_err = ph.readTxRx(port, sid, g.u16(), len(data))
        port.take()
        _status_check(results, ph, "READ reply", [(sid, err, data)], [reply],
                      res_code == sdk.COMM_SUCCESS and bytes(got) == data and got_err == err,
                      {"id": sid, "error": err, "data": data.hex(), "sdk_result": res_code,
                       "sdk_error": got_err, "sdk_data": bytes(got).hex()})

    return {k: results[k] for k in INSTRUCTIONS}


def _vendor_status_frame(ph, sid: int, err: int, data: bytes) -> bytes:
    """A status packet built only by vendor code: the plain frame, the SDK's addStuffing,
    the SDK's updateCRC."""
    plain = bytes((0xFF, 0xFF, 0xFD, 0x00, sid)) + (len(data) + 4).to_bytes(2, "little") \
        + bytes((0x55, err)) + data + b"\x00\x00"
    return _vendor_reference(ph, plain)


def _vendor_unstuff_lossy(ph, sid: int, err: int, data: bytes) -> bool:
    """True when the SDK's own removeStuffing(addStuffing(packet)) loses or changes bytes
    (a vendor bug: removeStuffing compacts in place and then tests bytes it already
    overwrote)."""
    r = ph.removeStuffing(list(_vendor_status_frame(ph, sid, err, data)))
    length = r[5] | (r[6] << 8)
    return bytes(r[7:7 + length - 2]) != bytes((0x55, err)) + data


def _status_check(results: dict, ph, what: str, packets: list[tuple[int, int, bytes]],
                  ours: list[bytes], decoded_ok: bool, case: dict) -> None:
    """`packets` (id, error, data) were sent as `ours` (our codec's bytes); `decoded_ok`:
    the SDK decoded them to the same values."""
    res = results.setdefault("STATUS", {"frames": 0, "identical": 0, "sdk_unstuff_lossy": 0,
                                        "first_mismatch": None, "first_sdk_lossy": None})
    res["frames"] += 1
    encoded_ok = all(_vendor_status_frame(ph, *p) == o for p, o in zip(packets, ours))
    if encoded_ok and decoded_ok:
        res["identical"] += 1
        return
    if encoded_ok and any(_vendor_unstuff_lossy(ph, *p) for p in packets):
        res["sdk_unstuff_lossy"] += 1
        if res["first_sdk_lossy"] is None:
            res["first_sdk_lossy"] = {"what": what, **case}
        return
    if res["first_mismatch"] is None:
        res["first_mismatch"] = {"what": what, "encoded_ok": encoded_ok, "decoded_ok": decoded_ok, **case}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 1000
    seed = int(argv[1]) if len(argv) > 1 else 0
    res = compare(n, seed)
    print(json.dumps(res, indent=2, default=str))
    # every frame identical, or (STATUS) explained by the SDK's lossy removeStuffing
    return 0 if all(r["first_mismatch"] is None for r in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
