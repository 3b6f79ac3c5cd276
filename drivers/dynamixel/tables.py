"""Dynamixel X-series control tables (Protocol 2.0): XL330-M288-T and XL430-W250-T.

Facts from the ROBOTIS e-manual (emanual.robotis.com/docs/en/dxl/x/xl330-m288/ and
.../xl430-w250/, "Control Table of EEPROM Area" / "RAM Area"); register names follow
the vendor / LeRobot spelling (``Present_Input_Voltage``, ``Hardware_Error_Status``...).

* Addresses 0..63 are EEPROM: writable only while ``Torque_Enable`` == 0 (the servo
  answers an access error otherwise).
* Multi-byte registers are little-endian. Registers that hold signed values use two's
  complement over their width (``signed=True``): Homing_Offset, Goal_PWM, Goal_Current,
  Goal_Velocity, Goal_Position, Present_PWM, Present_Current / Present_Load,
  Present_Velocity, Present_Position, Velocity_Trajectory, Position_Trajectory.
* ``default`` is the e-manual's "Initial Value"; registers the manual leaves as "-"
  (live readings, goals) start at 0. Firmware_Version is not in the manual's table: 52
  is a plausible recent X-series firmware, used only by emulators.
* The XL330 has Current_Limit / Goal_Current / Present_Current and PWM_Slope; the XL430
  has none of those and reports Present_Load (0.1 % of max torque) at 126 instead.
* Baud_Rate: XL330 accepts 0..6, XL430 0..7 (7 = 4.5 Mbps).
"""
from __future__ import annotations

from ..servo.table import ControlTable, Register

# Baud_Rate register value -> baud (e-manual "Baud Rate(8)")
X_BAUDRATES = {0: 9_600, 1: 57_600, 2: 115_200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000,
               6: 4_000_000, 7: 4_500_000}
XL330_BAUDRATES = {k: v for k, v in X_BAUDRATES.items() if k <= 6}

FIRMWARE_VERSION = 52

EEPROM_END = 64  # addresses below this are EEPROM on the X series

# (name, addr, size, access, default, signed) -- common to XL330 and XL430 unless noted
_COMMON_EEPROM = [
    ("Model_Number", 0, 2, "R", None, False),          # per model
    ("Model_Information", 2, 4, "R", 0, False),
    ("Firmware_Version", 6, 1, "R", FIRMWARE_VERSION, False),
    ("ID", 7, 1, "RW", 1, False),
    ("Baud_Rate", 8, 1, "RW", 1, False),               # 1 = 57600
    ("Return_Delay_Time", 9, 1, "RW", 250, False),     # 2 us per unit
    ("Drive_Mode", 10, 1, "RW", 0, False),
    ("Operating_Mode", 11, 1, "RW", 3, False),         # 3 = position control
    ("Secondary_ID", 12, 1, "RW", 255, False),
    ("Protocol_Type", 13, 1, "RW", 2, False),
    ("Homing_Offset", 20, 4, "RW", 0, True),
    ("Moving_Threshold", 24, 4, "RW", 10, False),
]


def _ram(model: str) -> list[tuple]:
    xl330 = model == "xl330-m288"
    regs = [
        ("Torque_Enable", 64, 1, "RW", 0, False),
        ("LED", 65, 1, "RW", 0, False),
        ("Status_Return_Level", 68, 1, "RW", 2, False),
        ("Registered_Instruction", 69, 1, "R", 0, False),
        ("Hardware_Error_Status", 70, 1, "R", 0, False),
        ("Velocity_I_Gain", 76, 2, "RW", 1600 if xl330 else 1000, False),
        ("Velocity_P_Gain", 78, 2, "RW", 180 if xl330 else 100, False),
        ("Position_D_Gain", 80, 2, "RW", 0 if xl330 else 4000, False),
        ("Position_I_Gain", 82, 2, "RW", 0, False),
        ("Position_P_Gain", 84, 2, "RW", 400 if xl330 else 640, False),
        ("Feedforward_2nd_Gain", 88, 2, "RW", 0, False),
        ("Feedforward_1st_Gain", 90, 2, "RW", 0, False),
        ("Bus_Watchdog", 98, 1, "RW", 0, False),
        ("Goal_PWM", 100, 2, "RW", 0, True),
    ]
    if xl330:
        regs.append(("Goal_Current", 102, 2, "RW", 0, True))
    regs += [
        ("Goal_Velocity", 104, 4, "RW", 0, True),
        ("Profile_Acceleration", 108, 4, "RW", 0, False),
        ("Profile_Velocity", 112, 4, "RW", 0, False),
        ("Goal_Position", 116, 4, "RW", 0, True),
        ("Realtime_Tick", 120, 2, "R", 0, False),
        ("Moving", 122, 1, "R", 0, False),
        ("Moving_Status", 123, 1, "R", 0, False),
        ("Present_PWM", 124, 2, "R", 0, True),
        ("Present_Current" if xl330 else "Present_Load", 126, 2, "R", 0, True),
        ("Present_Velocity", 128, 4, "R", 0, True),
        ("Present_Position", 132, 4, "R", 0, True),
        ("Velocity_Trajectory", 136, 4, "R", 0, True),
        ("Position_Trajectory", 140, 4, "R", 0, True),
        ("Present_Input_Voltage", 144, 2, "R", 0, False),
        ("Present_Temperature", 146, 1, "R", 0, False),
        ("Backup_Ready", 147, 1, "R", 0, False),
    ]
    return regs


def _indirect(blocks: list[tuple[int, int, int, int]]) -> list[tuple]:
    """Indirect_Address_k (2 bytes, default = the address of Indirect_Data_k) and
    Indirect_Data_k (1 byte). blocks: (first k, count, address base, data base)."""
    regs = []
    for first, count, abase, dbase in blocks:
        for i in range(count):
            k = first + i
            regs.append((f"Indirect_Address_{k}", abase + 2 * i, 2, "RW", dbase + i, False))
        for i in range(count):
            regs.append((f"Indirect_Data_{first + i}", dbase + i, 1, "RW", 0, False))
    return regs


def _table(model: str, model_number: int, eeprom_extra: list[tuple], size: int,
           indirect: list[tuple[int, int, int, int]], baudrates: dict[int, int]) -> ControlTable:
    rows = _COMMON_EEPROM + eeprom_extra + _ram(model) + _indirect(indirect)
    regs: dict[str, Register] = {}
    for name, addr, nbytes, access, default, signed in sorted(rows, key=lambda r: r[1]):
        if name == "Model_Number":
            default = model_number
        regs[name] = Register(name, addr, nbytes, signed=signed, access=access,
                              eeprom=addr < EEPROM_END, default=default)
    return ControlTable(model=model, model_number=model_number, registers=regs, size=size,
                        resolution=4096, byteorder="little", baudrates=dict(baudrates))


XL330_M288 = _table(
    "xl330-m288", 1200,
    [
        ("Temperature_Limit", 31, 1, "RW", 70, False),
        ("Max_Voltage_Limit", 32, 2, "RW", 70, False),
        ("Min_Voltage_Limit", 34, 2, "RW", 35, False),
        ("PWM_Limit", 36, 2, "RW", 885, False),
        ("Current_Limit", 38, 2, "RW", 1750, False),
        ("Velocity_Limit", 44, 4, "RW", 445, False),
        ("Max_Position_Limit", 48, 4, "RW", 4095, False),
        ("Min_Position_Limit", 52, 4, "RW", 0, False),
        ("Startup_Configuration", 60, 1, "RW", 0, False),
        ("PWM_Slope", 62, 1, "RW", 140, False),
        ("Shutdown", 63, 1, "RW", 53, False),
    ],
    size=228,
    indirect=[(1, 20, 168, 208)],
    baudrates=XL330_BAUDRATES,
)

XL430_W250 = _table(
    "xl430-w250", 1060,
    [
        ("Temperature_Limit", 31, 1, "RW", 72, False),
        ("Max_Voltage_Limit", 32, 2, "RW", 140, False),
        ("Min_Voltage_Limit", 34, 2, "RW", 60, False),
        ("PWM_Limit", 36, 2, "RW", 885, False),
        ("Velocity_Limit", 44, 4, "RW", 265, False),
        ("Max_Position_Limit", 48, 4, "RW", 4095, False),
        ("Min_Position_Limit", 52, 4, "RW", 0, False),
        ("Startup_Configuration", 60, 1, "RW", 0, False),
        ("Shutdown", 63, 1, "RW", 52, False),
    ],
    size=662,
    indirect=[(1, 28, 168, 224), (29, 28, 578, 634)],
    baudrates=X_BAUDRATES,
)

MODELS: dict[str, ControlTable] = {"xl330-m288": XL330_M288, "xl430-w250": XL430_W250}
MODEL_NUMBERS: dict[int, str] = {t.model_number: name for name, t in MODELS.items()}


def get_table(model: str) -> ControlTable:
    try:
        return MODELS[model.lower()]
    except KeyError:
        raise KeyError(f"unknown Dynamixel model {model!r}; known: {', '.join(sorted(MODELS))}") from None


def defaults(table: ControlTable) -> bytearray:
    """A factory-new servo's register file (``table.size`` bytes)."""
    mem = bytearray(table.size)
    for reg in table.registers.values():
        mem[reg.addr:reg.addr + reg.size] = table.encode(reg.name, reg.default)
    return mem
