"""The wired M-Bus (device/mbus.py), the profile's start-up history (device/setup.py), the
demand set-up and reset lockout, and the MEP guide's worked example 6 (MEP p.48; reference/
osgp-app-layer.md 11.1) byte for byte on the ``mep-guide-p45`` profile, in process and through
``meter-emu run`` over TCP and a pty. Pages: MEP guide printed footers."""

from __future__ import annotations

import datetime as dt

import pytest
from e2e import start_emulator  # noqa: F401 - the fixture
from hypothesis import given, settings
from hypothesis import strategies as st
from test_e2e_mep_guide import MepClient
from test_transactions import GUIDE, H, parse_response, replay

from meter_emu.clock import ManualClock
from meter_emu.device import mbus
from meter_emu.device.access import Key
from meter_emu.device.meter import Meter, MeterState
from meter_emu.ports.mep import MepLink, MepSession
from meter_emu.profile import ProfileError, load_profile
from meter_emu.tables import bt, et
from meter_emu.tables.catalog import WriteContext

P45 = "mep-guide-p45"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
EP19, EP34, BP09 = 2048 + 19, 2048 + 34, 9
ET14, ET15, ET16 = et(14), et(15), et(16)


def p45(sequence: int = GUIDE[4][0], *overrides: str, now: float = T0) -> Meter:
    return Meter(load_profile(P45, [f"mep.sequence_number={sequence:#x}", *overrides]), now=now)


class Procedures:
    """BT07 writes with the MK, as the optical port makes them; results from BT08."""

    def __init__(self, meter: Meter):
        self.meter, self.psn = meter, 0

    def run(self, number: int, params: bytes, now: float, size: int = 0) -> tuple[int, bytes]:
        """(result code, the first ``size`` bytes of the response data: BT08 is fixed-size)"""
        self.psn += 1
        word = number.to_bytes(2, "little")
        self.meter.write_table(bt(7), word + bytes([self.psn]) + params,
                               WriteContext(Key.MK, now, 1, "test optical"))
        answer = self.meter.table_bytes(bt(8), now)
        assert answer[:3] == word + bytes([self.psn])
        return answer[3], answer[4:4 + size]


def billing_read(transaction: int, handle: int = 1) -> bytes:
    return transaction.to_bytes(2, "little") + handle.to_bytes(2, "little") + b"\x02"


# ---- frames and the simulated device (EN 13757-2/-3) -------------------------------------------

def test_frames_byte_exact():
    """REQ_UD2 to address 1 is 10 5B 01 5C 16 (checksum = C + A); a long frame counts L over
    C, A, CI and data and sums them for the checksum."""
    assert mbus.short_frame(mbus.REQ_UD2, 1) == H("10 5B 01 5C 16")
    assert mbus.long_frame(0x53, 1, 0x50, b"") == H("68 03 03 68 53 01 50 A4 16")
    assert mbus.parse_frame(H("68 03 03 68 53 01 50 A4 16")) == (0x53, 1, 0x50, b"")
    for broken in ("10 5B 01 5D 16", "68 03 03 68 53 01 50 A5 16", "68 03 04 68 53 01 50 A4 16",
                   "68 03 03 68 53 01 50 A4 17", ""):
        with pytest.raises(mbus.MbusError):
            mbus.parse_frame(H(broken))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_parsers_survive_any_bytes(raw):
    try:
        mbus.parse_frame(raw)
    except mbus.MbusError:
        pass
    device = mbus.Device(dict(address=1, serial="1", manufacturer="EMU", version=1, medium=7,
                              volume_l=0, flow_l_per_h=0.0, since=0.0, access=0, status=0))
    answer = device.answer(raw, T0, dt.datetime(2026, 1, 1))
    assert answer in (None, mbus.ACK) or mbus.parse_frame(answer)[0] == mbus.RSP_UD
    assert mbus._telegram(raw, 1) is None or len(mbus._telegram(raw, 1)) >= 12


def test_data_types():
    """Manufacturer 'EMU' = (5*32 + 13)*32 + 21; type F/G carry the year in two bit groups."""
    assert mbus.manufacturer_code("EMU") == 5557
    assert mbus.type_f(dt.datetime(2026, 3, 15, 13, 7)) == bytes([7, 13, 15 | 2 << 5, 3 | 3 << 4])
    assert mbus.type_g(dt.date(2026, 3, 1)) == bytes([1 | 2 << 5, 3 | 3 << 4])
    assert mbus.bcd("12345678") == H("78 56 34 12")


def test_device_answers_its_address_only_and_counts_its_access_number():
    doc = dict(address=5, serial="12345678", manufacturer="EMU", version=2, medium=7,
               volume_l=1000, flow_l_per_h=36.0, since=T0, access=0xFF, status=0x04)
    device = mbus.Device(doc)
    local = dt.datetime(2026, 1, 1, 1, 0)
    assert device.answer(mbus.short_frame(mbus.REQ_UD2, 4), T0 + 3600, local) is None
    assert device.answer(mbus.short_frame(mbus.SND_NKE, 5), T0, local) == mbus.ACK
    control, address, ci, data = mbus.parse_frame(
        device.answer(mbus.short_frame(mbus.REQ_UD2, 5), T0 + 3600, local))
    assert (control, address, ci) == (mbus.RSP_UD, 5, 0x72)
    assert data[:12] == H("78 56 34 12 B5 15 02 07 FF 04 00 00")  # access number before +1
    assert data[12:18] == H("04 13") + (1000 + 36).to_bytes(4, "little")  # one hour at 36 l/h
    assert data[18:24] == H("04 6D") + mbus.type_f(local)
    assert data[24:30] == H("44 13") + (1000).to_bytes(4, "little")  # due date before start
    assert data[30:] == H("42 6C") + mbus.type_g(dt.date(2026, 1, 1)) + H("01 FD 17 04")
    assert len(data) == 12 + 26 and doc["access"] == 0


# ---- the guide's meter (profile mep-guide-p45) --------------------------------------------

def test_worked_example_6_byte_for_byte_in_process():
    meter = p45()
    link = MepLink(MepSession(meter, ManualClock(), port="mep-guide mep"))
    assert replay(link, 4, 5, 6) == [H(GUIDE[i][2]) for i in (4, 5, 6)]


def test_worked_example_7_removes_the_registered_client():
    meter = p45(GUIDE[7][0])
    link = MepLink(MepSession(meter, ManualClock(), port="mep-guide mep"))
    assert replay(link, 7) == [H(GUIDE[7][2])]
    assert meter.table_bytes(bt(8), T0)[:4] == H("1108 07 00")  # EP17 completed
    assert meter.table_bytes(ET14, T0)[5] == 0x01  # only the M-Bus device is left


def test_commissioned_device_and_its_last_billing_read():
    """ET14 slot 1 as the guide shows it plus the primary address; ET16 slot 1: timestamp,
    Response Info 0 (variable structure), L = 39 (12 header + 26 record bytes + the zero
    terminator), the device's serial first, the terminator last (MEP p.92-94)."""
    meter = p45()
    et14 = meter.table_bytes(ET14, T0)
    assert et14[:12] == H("00 00000000 11 0100 01 04 2F00")
    assert et14[6 + 16] == 1  # MBus Primary Address
    assert int.from_bytes(et14[6 + 10:6 + 14], "little") == 4  # Read Answers
    et16 = meter.table_bytes(ET16, T0)
    assert et16[:5] == bytes([26, 1, 1, 0, 59])  # local time (UTC+1) just before the start
    assert et16[6:8] == H("00 27") and et16[8:12] == H("78 56 34 12")
    assert et16[8 + 38] == 0 and et16[6 + 41:517] == bytes(517 - 47)
    assert et16[8 + 8] == 3  # the device's access number: the 4th answer (3 after 0, 1, 2)


def test_on_demand_read_at_run_time_waits_for_the_bus():
    """EP19 queues the read (result 0); the 2400 Bd exchange (designed: 52 bytes at 11 bits +
    330 bit times + 50 ms = 0.426 s) ends it with success, a new read in ET16 with the volume
    grown by the flow, the read count and the device's access number one up."""
    meter = p45()
    now = T0 + 3600.0
    code, index = Procedures(meter).run(EP19, billing_read(0x100), now, 1)
    assert (code, index) == (0, b"\x00")
    entry = meter.read_table(ET15, Key.MK, now, 1, 6)
    assert entry == H("0001 0100 02 00")
    took = mbus.exchange_seconds(2400)
    assert took == pytest.approx((52 * 11 + 330) / 2400 + 0.05)
    assert meter.next_deadline() == pytest.approx(now + took)
    assert meter.read_table(ET15, Key.MK, now + took - 0.01, 1, 6)[5] == 0
    assert meter.read_table(ET15, Key.MK, now + took, 1, 6) == H("0001 0100 02 01")
    et16 = meter.table_bytes(ET16, now + took)
    assert et16[8 + 8] == 4  # access number
    volume = int.from_bytes(et16[8 + 14:8 + 18], "little")
    assert volume == 123456 + int(12.5 * (3600 + took + 5 * (mbus.exchange_seconds(300) + 1))
                                  / 3600)


def test_a_silent_device_ends_the_request_as_no_response():
    meter = p45()
    meter.state.subsystems[mbus.SUBSYSTEM]["devices"].clear()  # unplugged
    Procedures(meter).run(EP19, billing_read(0x101), T0)
    assert meter.read_table(ET15, Key.MK, T0 + 1.0, 1, 6) == H("0101 0100 02 02")
    et14 = meter.table_bytes(ET14, T0 + 1.0)
    assert int.from_bytes(et14[6 + 14:6 + 16], "little") & 0x10  # Failed Comms On Read
    assert "mbus_alarm" in meter.state.alarms


def test_status_time_sync_and_reset_requests():
    meter = p45()
    procedures = Procedures(meter)
    for number, kind in ((0x200, 3), (0x201, 5), (0x202, 1)):
        procedures.run(EP19, number.to_bytes(2, "little") + b"\x01\x00" + bytes([kind]), T0)
    assert meter.read_table(ET15, Key.MK, T0 + 5.0, 1, 18) == H(
        "0002 0100 03 01  0102 0100 05 01  0202 0100 01 01")


def test_the_history_is_not_replayed_on_a_restart():
    meter = p45()
    saved = MeterState.from_doc(meter.state.to_doc())
    again = Meter(meter.profile, saved, now=T0 + 10)
    assert again.table_bytes(ET15, T0 + 10) == meter.table_bytes(ET15, T0 + 10)
    assert len(again.state.subsystems[mbus.SUBSYSTEM]["devices"]) == 1


# ---- demand -------------------------------------------------------------------------------

def test_demand_dimensions_and_default_profile_unchanged():
    """BT21 is the guide's on the p45 profile, and BT28 carries the 8 present demands; the
    default profile publishes what it did before (no demands, no present demands)."""
    meter = p45()
    assert meter.table_bytes(bt(21), T0) == H("3F 0E 0C 0F 08 00 01 04 08 1A")
    assert meter.table_bytes(bt(13), T0)[0] == 15  # reset exclusion, minutes
    assert len(meter.table_bytes(bt(28), T0)) == 4 * (8 + 26)
    default = Meter(load_profile())
    assert default.table_bytes(bt(21), T0) == H("03 0C 00 0F 00 00 01 04 00 29")
    assert default.table_bytes(bt(13), T0) == bytes(4)
    assert default.table_bytes(ET14, T0)[5] == 0 and "mbus" not in default.state.subsystems


def test_demand_reset_lockout():
    """A demand reset within BT13's 15 minutes of the last is refused with result 4 and changes
    nothing (BT23's reset counter, the first byte once demand is configured); BP09 refuses the
    whole reset, its self read too; after the lockout the reset runs."""
    meter = p45()
    procedures = Procedures(meter)
    assert procedures.run(EP34, b"", T0, 2) == (0, H("0100"))
    assert procedures.run(EP34, b"", T0 + 899) == (4, b"")
    self_reads = meter.table_bytes(bt(26), T0 + 899)
    assert procedures.run(BP09, b"\x03", T0 + 899)[0] == 4  # demand reset + self read
    assert meter.table_bytes(bt(26), T0 + 899) == self_reads
    assert meter.table_bytes(bt(23), T0 + 899)[0] == 1
    assert procedures.run(EP34, b"", T0 + 900, 2) == (0, H("0200"))
    assert meter.table_bytes(bt(23), T0 + 900)[0] == 2


def test_no_lockout_without_a_reset_exclusion():
    meter = p45(GUIDE[4][0], "demand.reset_exclusion_minutes=0")
    procedures = Procedures(meter)
    assert [procedures.run(EP34, b"", T0 + s)[0] for s in (0, 1)] == [0, 0]
    assert meter.table_bytes(bt(21), T0)[0] == 0x37  # bit 3 clear


# ---- bad profiles -------------------------------------------------------------------------

@pytest.mark.parametrize("override, words", [
    ('mbus.devices=[{address = 0, serial = "1", manufacturer = "EMU"}]', "address"),
    ('mbus.devices=[{address = 1, serial = "1", manufacturer = "EMU", colour = 1}]', "colour"),
    ('mbus.devices=[{address = 1, serial = "x", manufacturer = "EMU"}]', "serial"),
    ("mep.client_handle=999", "client_handle"),
    ("mep.on_demand_history=[[1]]", "on_demand_history"),
    ("demand.sub_interval_minutes=7", "sub_interval"),
])
def test_bad_profile_values_are_refused_by_name(override, words):
    with pytest.raises(ProfileError, match=words):
        load_profile(P45, [override])


def test_a_history_entry_that_cannot_be_served_is_refused():
    with pytest.raises(ProfileError, match="0x7, 9"):
        p45(GUIDE[4][0], "mep.on_demand_history=[[7, 9]]")


# ---- end to end ---------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["tcp://127.0.0.1:0", "pty"])
def test_worked_example_6_through_meter_emu_run(start_emulator, transport):  # noqa: F811
    emu = start_emulator("--profile", P45, "--set", f"mep.sequence_number={GUIDE[4][0]:#x}",
                         mep=transport)
    client = MepClient(emu.ready["ports"]["mep"])
    try:
        answers = [client.exchange(H(GUIDE[item][1])) for item in (4, 5, 6)]
    finally:
        client.close()
    assert answers == [H(GUIDE[item][2]) for item in (4, 5, 6)]
    records = parse_response(answers[2][5:5 + 0x6F])[2]
    assert records[5][3:] == H(GUIDE[6][2])[-10 - 31:-10]  # ET15 as the guide shows it
