"""ET36 and ET42 describe the other tables' dimensions (MEP p.107-118): read through the optical
port, their bytes must agree with the tables they describe, also after a reconfiguration."""

from __future__ import annotations

import pytest

from conftest import MK, LinkClient
from meter_emu.clock import ManualClock
from meter_emu.device.meter import Meter
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.tables.catalog import et

ET21, ET36, ET42 = et(21), et(36), et(42)
LOGS = (31, 32, 38, 41, 45, 75, 81)


def u16(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at:at + 2], "little")


def u32(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at:at + 4], "little")


def connect(*overrides: str) -> tuple[Meter, LinkClient]:
    meter = Meter(load_profile(overrides=list(overrides)))
    client = LinkClient(optical_protocol(meter, ManualClock()))
    client.logon(MK)
    return meter, client


def et36_records(raw: bytes) -> list[tuple[int, int, int, int]]:
    """(table ID word, entry size, max entries, current entries) per 17-byte record."""
    assert raw[0] == len(LOGS)
    return [(u16(raw, 1 + 17 * i), u16(raw, 3 + 17 * i), u16(raw, 5 + 17 * i),
             u16(raw, 7 + 17 * i)) for i in range(raw[0])]


def test_et36_default_dimensions_are_the_guides(client):
    client.logon(MK)
    raw = client.read(ET36)
    assert len(raw) == 1 + 7 * 17 + 1
    records = et36_records(raw)
    # MEP p.108-109: ET38 35-byte entries; ET32/ET45 525; ET75 143; ET81 12; maxima and defaults
    assert [r[0] for r in records] == [n | 0x800 for n in LOGS]  # bit 11: extended table
    assert [r[2] for r in records] == [255, 255, 255, 255, 253, 253, 253]
    assert [r[3] for r in records] == [2, 8, 10, 0, 0, 0, 0]
    sizes = dict(zip(LOGS, (r[1] for r in records)))
    assert (sizes[32], sizes[38], sizes[45], sizes[75], sizes[81]) == (525, 35, 525, 143, 12)
    assert raw[-1] == 0  # no log has unread entries


def test_et36_matches_the_log_tables_it_describes(client):
    client.logon(MK)
    for number, (_, size, _, current) in zip(LOGS, et36_records(client.read(ET36))):
        assert len(client.read(et(number), 0, 6000)) == 6000  # readable
        table = client.read(et(number))
        assert len(table) == 6 + size * current, f"ET{number}"


@pytest.mark.parametrize("overrides", [
    (),
    ("load_profile.channels=6", "load_profile.sources=[0,1,2,3,26,27]",
     "load_profile.interval_minutes=5", "load_profile.blocks=10"),
    ("identity.firmware_version=4.30.01", "load_profile.data_sets=2",
     "load_profile.channels=2", "load_profile.sources=[1,0]"),
    ("load_profile.channels=12", "load_profile.sources=[0,1,2,3,4,5,6,7,26,27,28,108]"),
    ("identity.firmware_version=2.10.00",),  # ET21 without sources 8-15, options, block start
])
def test_et42_agrees_with_the_root_tables(overrides):
    meter, client = connect(*overrides)
    raw = client.read(ET42)
    assert u16(raw, 0) == len(raw)  # Table Length
    fsl = raw[2]
    assert fsl == 41 and raw[3] == len(LOGS)
    bt21, bt61, bt71 = client.read(21), client.read(61), client.read(71)
    assert raw[11:19] == bt21[2:10]  # BT21.2 .. BT21.9
    assert u16(raw, 21) == 4 * bt21[3]  # one BT23 tier: the summations, INT32 each
    et21 = client.read(ET21)
    lp = meter.profile.load_profile
    # Load profile data set 1: ET21.8 block size, BT61.7 blocks, channels, interval, ET21.25 size
    assert u32(raw, 23) == u32(et21, 8)
    assert u16(raw, 27) == u16(bt61, 7) == lp.blocks
    assert raw[29] == bt61[11] == et21[28] == lp.channels
    assert raw[30] == bt61[12] == et21[29] == lp.interval_minutes
    assert raw[31] == et21[25]
    assert u16(raw, 33) == u16(bt61, 9) == 1440 // lp.interval_minutes
    # the block size is what BT64 really holds per block
    assert len(client.read(64, 0, 1)) == 1
    assert meter.table_bytes(64, 0).__len__() == u32(raw, 23) * lp.blocks
    assert raw[37] == bt71[0] and u16(raw, 38) == u16(bt71, 5) and raw[40] == bt71[3]
    # the log list repeats ET36
    records = et36_records(client.read(ET36))
    for i, (_, size, _, current) in enumerate(records):
        assert raw[fsl + 3 * i] == current and u16(raw, fsl + 3 * i + 1) == size
    sources = fsl + 3 * len(LOGS)  # no demand or coincident sources (BT21.4 = BT21.5 = 0)
    assert [u16(raw, sources + 2 * i) for i in range(lp.channels)] == lp.sources


def test_a_changed_interface_bumps_the_idt_version_and_raises_dimension_change():
    """MEP p.110: any change of ET42 increments ET04.116 and sets BT03 "Dimension Change"."""
    from meter_emu.device.meter import MeterState

    first = Meter(load_profile())
    assert "dimension_change" not in first.state.alarms
    saved = first.state.to_doc()

    same = Meter(load_profile(), MeterState.from_doc(saved))  # a plain restart changes nothing
    assert same.system_info().idt_version == 0 and not same.state.alarms

    reconfigured = Meter(load_profile(overrides=["load_profile.interval_minutes=5"]),
                         MeterState.from_doc(saved))
    assert reconfigured.system_info().idt_version == 1
    client = LinkClient(optical_protocol(reconfigured, ManualClock()))
    client.logon(MK)
    assert client.read(3)[7] & 0x01  # BT03 byte 7 bit 0: Dimension Change (OPG p.47)
    assert client.read(et(4), 116, 1) == b"\x01"
