"""Feetech control tables (register names as LeRobot / the vendor spell them).

Facts and where they come from (facts carry over; nobody's code does):
- Addresses and sizes: the Feetech SMS/STS memory table (STS3215 "memory register map",
  firmware 3.x), which LeRobot's ``STS_SMS_SERIES_CONTROL_TABLE`` mirrors. The factory
  area 80..86 is not in the official memory table; LeRobot lists it (and writes
  ``Maximum_Acceleration`` there), so it is here too.
- Defaults: the memory table's "initial value" column; where a real STS3215 reads
  otherwise the real value wins (``Velocity_closed_loop_I_integral_coefficient`` reads
  200 on SO-101 servos, the table says 10). ``Return_Delay_Time`` is 0 (2 us) in the
  memory table; LeRobot's "500 us (250) by default" comment is copied from its Dynamixel
  bus. ``Max_Voltage_Limit`` 80 (8.0 V) is the 7.4 V STS3215's value (SO-101 servos read
  80); the 12 V variants ship with a higher limit.
- Model_Number 777: address 3 holds 9 (servo main version), address 4 holds 3 (sub
  version); read as one little-endian word that is 3 * 256 + 9 = 777 (LeRobot agrees).
- Sign-magnitude registers (``Register.sign_bit``): the vendor SDK's SMS_STS class
  encodes positions and speeds with bit 15 (``WritePosEx``/``WriteSpe``/``ReadPos``/
  ``ReadSpeed``), the load with bit 10 (``ReadLoad``) and the current with bit 15
  (``ReadCurrent``); the memory table gives bit 11 for the homing offset (Homing_Offset,
  "position correction"). Goal_Time doubles as the PWM output in Operating_Mode 2, where
  it is sign-magnitude with bit 10 (``WritePWM``); in position mode it is an unsigned time,
  so it is left unsigned here.
- Baud_Rate values: 0:1M, 1:500k, 2:250k, 3:128k, 4:115200, 5:76800, 6:57600, 7:38400
  (the vendor SDK's ``SMS_STS_1M .. SMS_STS_38400`` constants and the memory table).
  LeRobot's table says 5:57600, 6:38400, 7:19200; the vendor is followed here.
- Lock (55): 0 = EEPROM writes are stored, 1 = not; initial value 0.
"""
from __future__ import annotations

from ..servo.table import ControlTable, Register

# register value -> baud (vendor SDK SMS_STS_* constants)
STS_BAUDRATES: dict[int, int] = {
    0: 1_000_000, 1: 500_000, 2: 250_000, 3: 128_000, 4: 115_200, 5: 76_800, 6: 57_600, 7: 38_400,
}


def _table(model: str, model_number: int, rows, size: int, byteorder: str = "little",
           resolution: int = 4096, baudrates: dict[int, int] | None = None) -> ControlTable:
    regs: dict[str, Register] = {}
    for name, addr, nbytes, access, eeprom, default, sign_bit in rows:
        if name in regs:
            raise ValueError(f"{model}: register {name} listed twice")
        regs[name] = Register(name, addr, nbytes, sign_bit=sign_bit, access=access, eeprom=eeprom, default=default)
    return ControlTable(model=model, model_number=model_number, registers=regs, size=size, resolution=resolution,
                        byteorder=byteorder, baudrates=dict(baudrates or STS_BAUDRATES))


E, S = True, False  # EEPROM / SRAM
# name, address, size, access, eeprom, factory default, sign bit
_STS3215_ROWS = [
    # EEPROM, read only
    ("Firmware_Major_Version", 0, 1, "R", E, 3, None),
    ("Firmware_Minor_Version", 1, 1, "R", E, 6, None),
    ("Model_Number", 3, 2, "R", E, 777, None),
    # EEPROM, read/write (stored only while Lock == 0)
    ("ID", 5, 1, "RW", E, 1, None),
    ("Baud_Rate", 6, 1, "RW", E, 0, None),
    ("Return_Delay_Time", 7, 1, "RW", E, 0, None),  # units of 2 us
    ("Response_Status_Level", 8, 1, "RW", E, 1, None),  # 0: only READ/PING answer
    ("Min_Position_Limit", 9, 2, "RW", E, 0, None),
    ("Max_Position_Limit", 11, 2, "RW", E, 4095, None),
    ("Max_Temperature_Limit", 13, 1, "RW", E, 70, None),  # deg C
    ("Max_Voltage_Limit", 14, 1, "RW", E, 80, None),  # 0.1 V
    ("Min_Voltage_Limit", 15, 1, "RW", E, 40, None),  # 0.1 V
    ("Max_Torque_Limit", 16, 2, "RW", E, 1000, None),  # 0.1 % of stall torque; copied to Torque_Limit at power-on
    ("Phase", 18, 1, "RW", E, 12, None),
    ("Unloading_Condition", 19, 1, "RW", E, 44, None),  # status bits that cut torque: overheat|overcurrent|overload
    ("LED_Alarm_Condition", 20, 1, "RW", E, 47, None),
    ("P_Coefficient", 21, 1, "RW", E, 32, None),
    ("D_Coefficient", 22, 1, "RW", E, 32, None),
    ("I_Coefficient", 23, 1, "RW", E, 0, None),
    ("Minimum_Startup_Force", 24, 2, "RW", E, 16, None),
    ("CW_Dead_Zone", 26, 1, "RW", E, 1, None),
    ("CCW_Dead_Zone", 27, 1, "RW", E, 1, None),
    ("Protection_Current", 28, 2, "RW", E, 500, None),  # 6.5 mA units
    ("Angular_Resolution", 30, 1, "RW", E, 1, None),
    ("Homing_Offset", 31, 2, "RW", E, 0, 11),
    ("Operating_Mode", 33, 1, "RW", E, 0, None),  # 0 position, 1 velocity, 2 PWM, 3 step
    ("Protective_Torque", 34, 1, "RW", E, 20, None),  # %
    ("Protection_Time", 35, 1, "RW", E, 200, None),  # 10 ms units
    ("Overload_Torque", 36, 1, "RW", E, 80, None),  # %
    ("Velocity_closed_loop_P_proportional_coefficient", 37, 1, "RW", E, 10, None),
    ("Over_Current_Protection_Time", 38, 1, "RW", E, 200, None),  # 10 ms units
    ("Velocity_closed_loop_I_integral_coefficient", 39, 1, "RW", E, 200, None),
    # SRAM, read/write
    ("Torque_Enable", 40, 1, "RW", S, 0, None),  # 0 off, 1 on, 128: current position := 2048
    ("Acceleration", 41, 1, "RW", S, 0, None),  # 100 steps/s^2
    ("Goal_Position", 42, 2, "RW", S, 0, 15),
    ("Goal_Time", 44, 2, "RW", S, 0, None),  # PWM in mode 2 (sign bit 10 there)
    ("Goal_Velocity", 46, 2, "RW", S, 0, 15),  # steps/s
    ("Torque_Limit", 48, 2, "RW", S, 1000, None),
    ("Lock", 55, 1, "RW", S, 0, None),
    # SRAM, read only
    ("Present_Position", 56, 2, "R", S, 0, 15),
    ("Present_Velocity", 58, 2, "R", S, 0, 15),
    ("Present_Load", 60, 2, "R", S, 0, 10),  # 0.1 % of max drive duty
    ("Present_Voltage", 62, 1, "R", S, 0, None),  # 0.1 V
    ("Present_Temperature", 63, 1, "R", S, 0, None),  # deg C
    ("Async_Write_Flag", 64, 1, "R", S, 0, None),  # a REG_WRITE awaits ACTION (LeRobot SCS: Sync_Write_Flag)
    ("Status", 65, 1, "R", S, 0, None),  # the status error bits
    ("Moving", 66, 1, "R", S, 0, None),
    ("Present_Current", 69, 2, "R", S, 0, 15),  # 6.5 mA units
    ("Goal_Position_2", 71, 2, "R", S, 0, None),  # listed by LeRobot (read-only), undocumented
    # factory area (not in the official memory table; LeRobot's names; defaults undocumented -> 0)
    ("Moving_Velocity_Threshold", 80, 1, "RW", E, 0, None),
    ("DTs", 81, 1, "RW", E, 0, None),  # ms
    ("Velocity_Unit_factor", 82, 1, "RW", E, 0, None),
    ("Hts", 83, 1, "RW", E, 0, None),  # ns, firmware >= 2.54
    ("Maximum_Velocity_Limit", 84, 1, "RW", E, 0, None),
    ("Maximum_Acceleration", 85, 1, "RW", E, 0, None),
    ("Acceleration_Multiplier", 86, 1, "RW", E, 0, None),  # in effect while Acceleration == 0
]

STS3215 = _table("sts3215", 777, _STS3215_ROWS, size=87)

MODELS: dict[str, ControlTable] = {"sts3215": STS3215}
