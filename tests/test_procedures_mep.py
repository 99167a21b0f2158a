"""MEP procedures (EP17, EP18, EP19, EP24, EP39, EP50, EP61) through the ports a client uses:
the optical port (C12.18, keys MK/PK/RK) and the MEP port (OMA digest, keys MAK/MBK). Every
effect is checked in the tables a client reads. Pages: MEP guide printed footers.

Set-up of a registered MEP client: the client writes ET50 "MEP Device Registered" over the MEP
port, exactly as the guide's client does (MEP p.17), and the test then calls
``mep_devices.register`` -- the server's discovery step that the MEP engine will run on that
write (ET50 registration is the MEP engine's work). An M-Bus device is installed the same way,
standing in for the M-Bus engine's auto-discovery.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest
from conftest import MK, RK, LinkClient

from meter_emu.clock import ManualClock
from meter_emu.device.alarms import ALARMS
from meter_emu.device.meter import Meter
from meter_emu.events import USER_MEP
from meter_emu.ports.mep import MepLink, MepSession
from meter_emu.ports.optical import optical_protocol
from meter_emu.procedures import PROCEDURES
from meter_emu.profile import load_profile
from meter_emu.security import OmaKey
from meter_emu.tables import CATALOG, bt, et, mep_client, mep_devices

EP17, EP18, EP19, EP24, EP39, EP50, EP61 = (2048 + n for n in (17, 18, 19, 24, 39, 50, 61))
ET13, ET14, ET15, ET16, ET19, ET20, ET31 = (et(n) for n in (13, 14, 15, 16, 19, 20, 31))
ET45, ET50, ET52 = et(45), et(50), et(52)
OK, ERR = 0x00, 0x01
HANDLE = 0x03F8  # the MEP guide's example handle (MEP p.53)
GEN4 = "identity.firmware_version=4.30.01"
_psn = itertools.count(10)


def bt07(number: int, psn: int, params: bytes = b"") -> bytes:
    return number.to_bytes(2, "little") + bytes([psn]) + params


def parse(meter, table_id: int, raw: bytes):
    return CATALOG[table_id].layout_for(meter).parse(raw)


def events(meter, number: int) -> list[list[int]]:
    """BT74 entries [time, sequence, user, event, argument] of one event."""
    return [entry for entry in meter.state.history.entries if entry[3] == number]


def bt03_bit(raw: bytes, name: str) -> bool:
    offset, bit = ALARMS[name]
    return bool(raw[offset] >> bit & 1)


class Mep:
    """A MEP client on one of the meter's MEP ports (channel 2: the session named 'mep2')."""

    def __init__(self, meter, clock, key: str = "mak", channel: int = 1, raw_key=None):
        suffix = "mep2" if channel == 2 else "mep"
        self.link = MepLink(MepSession(meter, clock, port=f"{meter.id} {suffix}"))
        self.meter, self.clock = meter, clock
        self.key = raw_key or meter.profile.key(key)[:16]
        #: where this client's procedure results land (MEP p.50): ET85 for MEP client 2
        self.responses = et(85) if channel == 2 else bt(8)

    def request(self, apdu: bytes) -> bytes:
        body = apdu + self.meter.mep_sequence.to_bytes(4, "big")
        message = body + OmaKey(self.key).digest(body)
        out = self.link.receive(len(message).to_bytes(2, "big") + message, self.clock.now())
        return out[2:-8]

    def write(self, table_id: int, data: bytes, offset: int = 0) -> int:
        head = b"\x4F" + table_id.to_bytes(2, "big") + offset.to_bytes(3, "big")
        return self.request(head + len(data).to_bytes(2, "big") + data)[0]

    def read(self, table_id: int) -> bytes:
        answer = self.request(b"\x30" + table_id.to_bytes(2, "big") + b"\x01\xDC")
        assert answer[0] == OK, answer.hex()
        return answer[3:]

    def call(self, number: int, params: bytes = b"") -> tuple[int, bytes]:
        assert self.write(bt(7), bt07(number, next(_psn) % 250, params)) == OK
        return procedure_result(self.read(self.responses), number)


def procedure_result(bt08: bytes, number: int) -> tuple[int, bytes]:
    assert int.from_bytes(bt08[:2], "little") == number
    return bt08[3], bt08[4:]


def call(client: LinkClient, number: int, params: bytes = b"") -> tuple[int, bytes]:
    """A procedure over the optical port: BT07 write, BT08 read."""
    assert client.write(bt(7), bt07(number, next(_psn) % 250, params)) == b"\x00"
    return procedure_result(client.read(bt(8)), number)


def register(meter, clock, channel: int = 1, handle: int | None = HANDLE) -> int:
    """The MEP client registers (ET50 over the MEP port), then the server's discovery step."""
    client = Mep(meter, clock, channel=channel)
    assert client.write(ET50, b"\x01", offset=(channel - 1) * 71 + 30) == OK
    slot = mep_devices.mep_slot(meter, channel)
    return mep_devices.register(meter, slot, clock.now(), handle=handle, user_id=USER_MEP)


def install_mbus(meter, clock, slot: int = 0, handle: int = 7) -> int:
    return mep_devices.register(meter, slot, clock.now(), handle=handle)


@pytest.fixture
def mk(client):
    client.logon(MK)
    return client


@pytest.fixture
def mep(meter, clock):
    return Mep(meter, clock)


def test_the_seven_procedures_are_declared_with_their_effects():
    for number, name in ((EP17, "Remove MEP Device"), (EP18, "Clear MEP Alarms"),
                         (EP19, "Post On-demand M-Bus Request"),
                         (EP24, "Post One-time-read Request"), (EP39, "Post MEP Data"),
                         (EP50, "Post External Measurements"),
                         (EP61, "MEP Transaction Lock Control")):
        proc = PROCEDURES[number]
        assert proc.name == name and proc.effect and proc.provenance.source
    assert not PROCEDURES[EP19].idempotent and PROCEDURES[EP39].idempotent  # MEP p.43, p.51


# ---- EP17 Remove MEP Device ----------------------------------------------------------------

def assert_removed(meter, now, user_id):
    et14 = parse(meter, ET14, meter.table_bytes(ET14, now))
    assert et14.device_occupancy == frozenset()
    assert meter.table_bytes(ET14, now)[6 + 4 * 36:6 + 5 * 36] == bytes(36)  # record cleared
    assert not parse(meter, ET50, meter.table_bytes(ET50, now)).clients[0].flags[
        "mep_device_registered"]
    removed = events(meter, 96)[-1]
    assert removed[4] == 5 << 13 | 4 and removed[2] == user_id  # device index 5, "removed"
    assert bt03_bit(meter.table_bytes(3, now), "mep_installed_or_removed")


def test_ep17_the_guides_frame_byte_for_byte():
    # MEP p.53 (reference/osgp-app-layer.md 11.1 item 7): key 16 x 0x01, sequence 0x5B4E4309
    meter = Meter(load_profile(overrides=["keys.mak=hex:" + "01" * 16,
                                          "mep.sequence_number=0x5B4E4308"]))
    clock = ManualClock()
    assert register(meter, clock) == HANDLE  # uses sequence number 0x5B4E4308
    assert meter.mep_sequence == 0x5B4E4309
    frame = bytes.fromhex("0017 4000070006 1108 07 00 F803 5B4E4309 697AB201497E9CF7")
    link = MepLink(MepSession(meter, clock, port="meter-1 mep"))
    assert link.receive(frame, clock.now()) == bytes.fromhex("0009 00 697AB201497E9CF7")
    assert meter.table_bytes(bt(8), clock.now())[:4] == bytes.fromhex("11080700")
    assert_removed(meter, clock.now(), USER_MEP)


def test_ep17_the_same_bt07_bytes_over_the_optical_port(mk, meter, clock):
    register(meter, clock)
    assert mk.write(bt(7), bytes.fromhex("1108 07 00 F803")) == b"\x00"
    assert mk.read(bt(8))[:4] == bytes.fromhex("1108 07 00")  # EP17, PSN 7, completed
    assert mk.read(ET14)[5] == 0  # occupancy
    assert_removed(meter, clock.now(), 1)  # the optical user ID


def test_ep17_keeps_et16_and_fails_the_devices_requests(mk, meter, clock, mep):
    register(meter, clock)
    assert mep.call(EP39, bytes.fromhex("03 01 0300 AABBCC"))[0] == OK  # a read in ET16
    et16 = mk.read(ET16)
    assert call(mk, EP19, bytes.fromhex("0004 F803 02"))[0] == OK  # billing read waits
    assert mep_devices.alert_flags(meter, 1, clock.now())["on_demand_request"] == 1
    assert call(mk, EP17, bytes.fromhex("00 F803"))[0] == OK
    assert mk.read(ET16) == et16  # "All data in ET16 is left intact" (MEP p.36)
    queue = parse(meter, ET15, mk.read(ET15))
    assert queue.request_queue[0].result == mep_devices.FAILED  # in-process request shut down
    assert queue.pointers["read_pointer"] == queue.pointers["write_pointer"] == 1
    assert mep_devices.alert_flags(meter, 1, clock.now())["on_demand_request"] == 0


def test_ep17_refusals(mk, meter, clock):
    register(meter, clock)
    install_mbus(meter, clock)
    assert call(mk, EP17, bytes.fromhex("02 F803"))[0] == 2  # Action 0 or 1 only
    assert call(mk, EP17, bytes.fromhex("00 F903"))[0] == 3  # no installed device
    assert call(mk, EP17, bytes.fromhex("00"))[0] == 2  # parameters cut short
    mbk = Mep(meter, clock, key="mbk")
    assert mbk.call(EP17, bytes.fromhex("00 0700"))[0] == 5  # the MBK: MEP clients only
    assert mbk.call(EP17, bytes.fromhex("00 FFFF"))[0] == 5
    assert parse(meter, ET14, mk.read(ET14)).device_occupancy == {0, 4}  # nothing removed
    assert mbk.call(EP17, bytes.fromhex("01 F803"))[0] == OK  # its own MEP client
    assert parse(meter, ET14, mk.read(ET14)).device_occupancy == {0}


def test_ep17_all_devices_and_the_key_rules(client, meter, clock):
    register(meter, clock)
    install_mbus(meter, clock)
    client.logon(RK)
    assert call(client, EP17, bytes.fromhex("00 FFFF"))[0] == 5  # RK: no actions
    client.logon(MK)
    assert call(client, EP17, bytes.fromhex("00 FFFF"))[0] == OK
    assert client.read(ET14)[5] == 0
    assert [entry[4] for entry in events(meter, 96)][-2:] == [1 << 13 | 4, 5 << 13 | 4]


# ---- EP18 Clear MEP Alarms ----------------------------------------------------------------

def test_ep18_clears_latched_et14_alarms_and_the_bt03_alarm(mk, meter, clock, mep):
    register(meter, clock)
    assert mep.call(EP39, bytes.fromhex("04 01 0300 05 1122"))[0] == OK
    device = parse(meter, ET14, mk.read(ET14)).devices[4]
    assert device.mep_alarms["billing_data_collected"] and device.mep_alarms["new_device_alarm"]
    assert device.mep_device_alarms == 0x05
    assert bt03_bit(mk.read(3), "mbus_alarm")
    assert call(mk, EP18, bytes.fromhex("F903"))[0] == 3  # no such device
    assert call(mk, EP18, b"")[0] == 2
    assert call(mk, EP18, bytes.fromhex("F803"))[0] == OK
    device = parse(meter, ET14, mk.read(ET14)).devices[4]
    assert not any(device.mep_alarms.values()) and device.mep_device_alarms == 0
    assert device.device_handle == HANDLE  # only the alarms are cleared
    assert not bt03_bit(mk.read(3), "mbus_alarm")


def test_ep18_all_devices_and_keys(client, meter, clock, mep):
    register(meter, clock)
    assert mep.call(EP39, bytes.fromhex("04 01 0100 01"))[0] == OK
    assert Mep(meter, clock, key="mbk").call(EP18, bytes.fromhex("FFFF"))[0] == 5  # p.13
    client.logon(MK)
    assert call(client, EP18, bytes.fromhex("FFFF"))[0] == OK
    assert parse(meter, ET14, client.read(ET14)).devices[4].mep_device_alarms == 0


# ---- EP19 Post On-demand M-Bus Request -----------------------------------------------------

def test_ep19_billing_read_to_a_mep_client(mk, meter, clock):
    register(meter, clock)
    clock.advance(5)
    result, data = call(mk, EP19, bytes.fromhex("3000 F803 02"))
    assert (result, data[:1]) == (OK, b"\x00")  # Entry index 0 (MEP p.246)
    et15 = parse(meter, ET15, mk.read(ET15))
    entry = et15.request_queue[0]
    assert (entry.transaction_number, entry.device_handle, entry.request_type, entry.result) \
        == (0x30, HANDLE, 2, 0)
    assert et15.pointers == dict(write_pointer=1, read_pointer=0)
    assert mk.read(ET13, 4 * 66 + 8, 1) == b"\x02"  # "On-demand Request in ET15" alert
    device = parse(meter, ET14, mk.read(ET14)).devices[4]
    assert device.read_attempts == 1
    assert device.last_read_attempt == meter.local(clock.now())


def test_ep19_write_data_and_write_by_index(mk, meter, clock):
    register(meter, clock)
    assert call(mk, EP19, bytes.fromhex("3100 F803 04 03 C0FFEE"))[1][:1] == b"\x00"
    result, data = call(mk, EP19, bytes.fromhex("3200 1000 0A 02 ABCD"))  # bit 4: index 5
    assert (result, data[:1]) == (OK, b"\x01")
    et15 = parse(meter, ET15, mk.read(ET15))
    assert et15.write_messages[0].length == 3 and et15.write_messages[0].data[:3] == b"\xC0\xFF\xEE"
    second = et15.request_queue[1]
    assert (second.device_handle, second.request_type) == (HANDLE, 4)  # recorded as a write
    assert et15.write_messages[1].data[:2] == b"\xAB\xCD"


def test_ep19_multicast_to_an_mbus_group(mk, meter, clock):
    install_mbus(meter, clock, slot=1, handle=9)
    assert mk.write(et(34), b"\x04", 22 + 2) == b"\x00"  # ET34 group mask of device 2
    assert call(mk, EP19, bytes.fromhex("0005 0800 06 02 4410"))[0] == 3  # no device in 0x08
    assert call(mk, EP19, bytes.fromhex("0005 0400 06 02 4410"))[0] == OK
    et15 = parse(meter, ET15, mk.read(ET15))
    assert et15.request_queue[0].device_handle == 0x0004  # the group mask (MEP p.90)
    assert et15.multicast_data.length == 2 and et15.multicast_data.message[:2] == b"\x44\x10"


@pytest.mark.parametrize("params, result", [
    ("0004 F803 00", 2), ("0004 F803 07", 2), ("0004 F803 08", 2),  # internal types
    ("0004 F803 0B", 2),  # no type 11
    ("0004 F803 01", 2), ("0004 F803 03", 2), ("0004 F803 05", 2),  # not for MEP clients
    ("0004 F903 02", 3), ("0004 0100 0A 00", 3), ("0004 FFFF 06 00", 3),  # nobody there
    ("0004 F803 04", 2), ("0004 F803 04 19" + "00" * 25, 2), ("0004 F803 04 03 0102", 2),
    ("0004", 2),
])
def test_ep19_refusals(mk, meter, clock, params, result):
    register(meter, clock)
    assert call(mk, EP19, bytes.fromhex(params))[0] == result
    assert meter.table_bytes(ET15, clock.now()) == bytes(221)  # nothing queued


def test_ep19_queue_full_and_the_on_demand_timeout(mk, meter, clock):
    register(meter, clock)
    for n in range(5):
        assert call(mk, EP19, bytes.fromhex(f"{n:02X}04 F803 02"))[1][:1] == bytes([n])
    assert call(mk, EP19, bytes.fromhex("0504 F803 02"))[0] == 7  # queue full (MEP p.246)
    clock.advance(30)  # ET51 "On-demand Timeout", 30 s (MEP p.25, p.128)
    assert call(mk, EP19, bytes.fromhex("0604 F803 02"))[1][:1] == b"\x00"
    queue = parse(meter, ET15, mk.read(ET15)).request_queue
    assert [entry.result for entry in queue] == [0, 2, 2, 2, 2]  # the rest: no response
    assert queue[0].transaction_number == 0x0406


def test_ep19_keys(meter, clock):
    register(meter, clock)
    assert Mep(meter, clock, key="mbk").call(EP19, bytes.fromhex("0004 F803 02"))[0] == 5
    assert Mep(meter, clock).call(EP19, bytes.fromhex("0004 F803 02"))[0] == OK  # MAK


def test_ep19_switchover_carries_the_image_with_aes(mk, meter, clock):
    register(meter, clock)
    et04 = parse(meter, et(4), meter.table_bytes(et(4), clock.now()))
    et04.security_mode = 2  # commissioned for OSGP-AES-128-PSK (ET04.127 is the meter's)
    meter.state.tables[et(4)] = CATALOG[et(4)].layout_for(meter).build(et04)
    assert call(mk, EP19, bytes.fromhex("0004 F803 09 0010"))[0] == 2  # MAC missing
    image = bytes(range(20))
    assert call(mk, EP19, bytes.fromhex("0004 F803 09") + image)[0] == OK
    et15 = parse(meter, ET15, mk.read(ET15))
    assert et15.request_queue[0].request_type == 9
    assert et15.write_messages[0].data[:20] == image


# ---- EP24 Post One-time-read Request -------------------------------------------------------

def test_ep24_meter_one_time_read_lands_in_et31(mk, meter, clock):
    meter.state.registers["fwd_active_wh"] = 123456
    clock.advance(3600)
    bt23 = mk.read(bt(23))
    result, data = call(mk, EP24, bytes.fromhex("00 2A00 0000"))
    assert (result, data[:1]) == (OK, b"\x00")
    et31 = parse(meter, ET31, mk.read(ET31))
    assert (et31.valid_entries, et31.last_entry_element, et31.last_entry_sequence_number,
            et31.unread_entries) == (1, 0, 1, 1)
    entry = et31.entries[0]
    assert entry.time == meter.local(clock.now()).replace(second=0)  # BT55 time, STIME_DATE
    assert CATALOG[bt(23)].layout_for(meter).build(entry.register_data) == bt23
    assert entry.register_data.totals[0] == 123456
    et19 = parse(meter, ET19, mk.read(ET19)).entries[0]
    assert (et19.request_number, et19.status, et19.log_sequence_number) == (42, 3, 1)
    assert et19.completion_time == meter.local(clock.now())
    assert bt03_bit(mk.read(3), "mfg_log_entry_available")


def test_ep24_et31_is_circular_and_et19_full_refuses(mk, meter, clock):
    for n in range(3):
        meter.state.registers["fwd_active_wh"] = 1000 * (n + 1)
        assert call(mk, EP24, bytes([0, n, 0, 0, 0]))[1][:1] == bytes([n])
    et31 = parse(meter, ET31, mk.read(ET31))
    assert [e.register_data.totals[0] for e in et31.entries] == [3000, 2000]  # 3rd over 1st
    assert (et31.last_entry_element, et31.last_entry_sequence_number) == (0, 3)
    assert et31.flags["overflow"] == 1 and et31.unread_entries == 2
    pending = bytes([9, 0, 1]) + bytes(14)  # a client queues reads: status 1 pending
    assert mk.write(ET19, pending * 3) == b"\x00"
    assert call(mk, EP24, bytes.fromhex("00 0700 0000"))[0] == 7
    assert parse(meter, ET31, mk.read(ET31)).last_entry_sequence_number == 3


def test_ep24_mbus_read_is_queued_in_et20(mk, meter, clock):
    register(meter, clock)
    assert call(mk, EP24, bytes.fromhex("01 0100 0700"))[0] == 3  # no M-Bus device 7
    assert call(mk, EP24, bytes.fromhex("01 0100 F803"))[0] == 3  # a MEP client, not M-Bus
    assert call(mk, EP24, bytes.fromhex("02 0100 0000"))[0] == 2
    install_mbus(meter, clock, handle=7)
    result, data = call(mk, EP24, bytes.fromhex("01 0100 0700"))
    assert (result, data[:1]) == (1, b"\x00")  # accepted, the M-Bus engine reads it
    entry = parse(meter, ET20, mk.read(ET20)).entries[0]
    assert (entry.request_number, entry.device_handle, entry.status) == (1, 7, 1)
    assert parse(meter, ET14, mk.read(ET14)).devices[0].read_attempts == 1


def test_ep24_keys(client, meter):
    client.logon(RK)
    assert call(client, EP24, bytes.fromhex("00 0100 0000"))[0] == 5
    assert meter.table_bytes(ET31, 0.0)[1] == 0


# ---- EP39 Post MEP Data --------------------------------------------------------------------

def test_ep39_daboard_scheduled_read_with_alarms(mk, meter, clock, mep):
    # DAB's call: type 4 "scheduled read data + alarms", result 1, length 6 (LSB first)
    register(meter, clock)
    mep_devices.set_alert_flags(meter, 1, clock.now(), scheduled_read_request=1)  # the schedule
    clock.advance(60)
    assert mep.call(EP39, bytes.fromhex("04 01 0600 010203040506")) == (OK, bytes(12))
    record = parse(meter, ET16, mk.read(ET16)).mep_clients[0]
    assert record.timestamp == meter.local(clock.now())
    assert (record.read_count, record.length, record.data[:5]) == (1, 5, bytes.fromhex(
        "0203040506"))
    device = parse(meter, ET14, mk.read(ET14)).devices[4]
    assert (device.read_answers, device.billing_read_length, device.mep_device_alarms) == \
        (1, 16, 0x01)
    assert device.status_read_time == meter.local(clock.now())
    assert mk.read(ET13, 4 * 66 + 8, 1) == b"\x00"  # scheduled read alert cleared
    assert bt03_bit(mk.read(3), "mbus_alarm")


def test_ep39_scheduled_reads_after_the_first_go_to_et45(monkeypatch, mk, meter, clock, mep):
    logs = mep_devices.RecurringReadLogs(entry_size=525, entries=3, extended_entries=0)
    monkeypatch.setattr(mep_devices, "RECURRING_READ_LOGS", logs)  # as EP37 would set
    register(meter, clock)
    assert mep.call(EP39, bytes.fromhex("03 01 0200 1111"))[0] == OK  # the first: ET16
    et16 = mk.read(ET16)
    assert mk.read(ET45)[1] == 0
    clock.advance(900)
    assert mep.call(EP39, bytes.fromhex("03 01 0300 222222"))[0] == OK
    first = parse(meter, ET16, et16).mep_clients[0]
    now = parse(meter, ET16, mk.read(ET16)).mep_clients[0]
    assert (now.timestamp, now.data) == (first.timestamp, first.data)  # the read stays
    assert (first.read_count, now.read_count) == (1, 2)  # scheduled reads count (MEP p.95)
    et45 = parse(meter, ET45, mk.read(ET45))
    assert (et45.valid_entries, et45.last_entry_element, et45.last_entry_sequence_number,
            et45.unread_entries) == (1, 0, 1, 1)
    entry = et45.entries[0]
    assert (entry.handle, entry.result, entry.length) == (HANDLE, 4, 6 + 11 + 3)
    assert entry.data.timestamp == meter.local(clock.now())
    assert entry.data.telegrams[:7] == bytes.fromhex("0200 0300 222222")  # count 2, length 3
    assert bt03_bit(mk.read(3), "mfg_log_entry_available")


def test_ep39_answers_the_oldest_on_demand_request(mk, meter, clock, mep):
    register(meter, clock)
    assert mep.call(EP39, bytes.fromhex("01 01 0100 AA"))[0] == 3  # nothing asked yet
    assert call(mk, EP19, bytes.fromhex("0004 F803 02"))[0] == OK
    clock.advance(2)
    assert mep.call(EP39, bytes.fromhex("01 01 0400 CAFEBABE"))[0] == OK
    et15 = parse(meter, ET15, mk.read(ET15))
    assert et15.request_queue[0].result == 1  # success (MEP p.91)
    assert et15.pointers["read_pointer"] == et15.pointers["write_pointer"] == 1
    assert mk.read(ET13, 4 * 66 + 8, 1) == b"\x00"  # the on-demand alert is over
    record = parse(meter, ET16, mk.read(ET16)).mep_clients[0]
    assert record.data[:4] == bytes.fromhex("CAFEBABE") and record.length == 4
    assert parse(meter, ET14, mk.read(ET14)).devices[4].read_answers == 1


def test_ep39_urgent_device_alarms_log_event_99(mk, meter, clock, mep):
    register(meter, clock)
    assert mk.write(ET13, b"\x80", 4 * 66 + 7) == b"\x00"  # Device Alarm Bitmask: bit 7 urgent
    assert mep.call(EP39, bytes.fromhex("04 01 0100 01"))[0] == OK
    assert events(meter, 99) == []
    assert mep.call(EP39, bytes.fromhex("04 01 0100 81"))[0] == OK
    assert events(meter, 99)[-1][4] == HANDLE and events(meter, 99)[-1][2] == USER_MEP


def test_ep39_clears_the_delta_data_and_mbus_alerts(mk, meter, clock, mep):
    register(meter, clock)
    mep_devices.set_alert_flags(meter, 1, clock.now(), mbus_change=1, delta_data_alert=1)
    assert mk.read(ET13, 4 * 66 + 8, 1) == b"\x18"
    assert mep.call(EP39, bytes.fromhex("0C 00 0000"))[0] == OK  # MEP p.35
    assert mk.read(ET13, 4 * 66 + 8, 1) == b"\x08"
    assert mep.call(EP39, bytes.fromhex("80 00 0000"))[0] == OK  # Clear M-Bus Alert, p.18
    assert mk.read(ET13, 4 * 66 + 8, 1) == b"\x00"


@pytest.mark.parametrize("params", [
    "05 01 0000", "00 00 0000", "04 01", "0C", "03 00 0100 AA", "03 04 0100 AA",
    "03 01 0500 AABB", "04 01 0000",
])
def test_ep39_refuses_malformed_posts(meter, clock, mep, params):
    register(meter, clock)
    before = meter.table_bytes(ET16, clock.now())
    assert mep.call(EP39, bytes.fromhex(params))[0] == 2
    assert meter.table_bytes(ET16, clock.now()) == before


def test_ep39_needs_a_registered_mep_client(mk, meter, clock, mep):
    assert mep.call(EP39, bytes.fromhex("03 01 0100 AA"))[0] == 3  # never registered
    second = Mep(meter, clock, channel=2)  # firmware 3.10 has one MEP client
    assert second.call(EP39, bytes.fromhex("03 01 0100 AA"))[0] == 3
    register(meter, clock)
    assert call(mk, EP39, bytes.fromhex("03 01 0100 AA"))[0] == 3  # MK may; not a MEP client
    assert Mep(meter, clock, key="mbk").call(EP39, bytes.fromhex("03 01 0100 AA"))[0] == OK
    assert call(mk, EP17, bytes.fromhex("00 F803"))[0] == OK
    assert mep.call(EP39, bytes.fromhex("03 01 0100 BB"))[0] == 3  # removed: refused (p.36)


# ---- EP50 ----------------------------------------------------------------------------------

def test_ep50_is_refused_by_a_metering_meter(client, meter, clock):
    client.logon(MK)
    pushed = [bt(3), bt(23), bt(28), et(29)]  # what measurements pushed in would change
    before = [client.read(table_id) for table_id in pushed], dict(meter.state.registers)
    assert call(client, EP50, bytes.fromhex("0100 E8030000"))[0] == 3
    assert ([client.read(table_id) for table_id in pushed], meter.state.registers) == before
    client.logon(RK)
    assert call(client, EP50, b"")[0] == 5


# ---- EP61 MEP Transaction Lock Control -----------------------------------------------------

@pytest.fixture
def gen4():
    return Meter(load_profile(overrides=[GEN4]))


def et52_request(number: int) -> bytes:
    """An empty transaction (no record), the closing number equal to the leading one."""
    tag = number.to_bytes(2, "little")
    return (7).to_bytes(2, "little") + b"\x00" + tag + tag


def test_ep61_locks_et52_against_the_other_mep_client(gen4):
    clock = ManualClock()
    first, second = Mep(gen4, clock), Mep(gen4, clock, channel=2)
    assert first.call(EP61, b"\x01")[0] == OK
    assert mep_client.transaction_lock(gen4, clock.now()) == 1
    assert second.write(ET52, et52_request(1)) == ERR  # the tables are MEP client 1's
    assert first.write(ET52, et52_request(1)) == OK
    assert second.call(EP61, b"\x01")[0] == 3  # T08_CONFLICT (MEP p.247)
    assert second.call(EP61, b"\x00")[0] == 3
    clock.advance(10)  # not unlocked: the lock ends after 10 s (MEP p.25)
    assert second.write(ET52, et52_request(2)) == OK
    assert second.call(EP61, b"\x01")[0] == OK
    assert mep_client.transaction_lock(gen4, clock.now()) == 2
    assert second.call(EP61, b"\x00")[0] == OK
    assert mep_client.transaction_lock(gen4, clock.now()) == 0
    assert first.write(ET52, et52_request(3)) == OK


def test_ep61_refusals(gen4, meter, clock):
    four = Mep(gen4, clock)
    assert four.call(EP61, b"\x02")[0] == 2
    assert Mep(meter, clock).call(EP61, b"\x01")[0] == 3  # firmware 3.10: one MEP port
    optical = LinkClient(optical_protocol(gen4, clock))
    optical.logon(MK)
    assert call(optical, EP61, b"\x01")[0] == 5  # T08_NO_AUTH: not a MEP client
    assert mep_client.transaction_lock(gen4, clock.now()) == 0
    assert Mep(gen4, clock, key="mbk").call(EP61, b"\x01")[0] == OK  # MBK, MAK (MEP p.247)


def test_state_survives_a_restart(mk, meter, clock, mep):
    register(meter, clock)
    assert call(mk, EP19, bytes.fromhex("0004 F803 02"))[0] == OK
    assert mep.call(EP39, bytes.fromhex("01 01 0100 AA"))[0] == OK
    assert call(mk, EP24, bytes.fromhex("00 0100 0000"))[0] == OK
    doc = json.loads(json.dumps(meter.state.to_doc()))  # what the store writes
    again = Meter(meter.profile, type(meter.state).from_doc(doc))
    for table_id in (ET13, ET14, ET15, ET16, ET19, ET31, ET50):
        assert again.table_bytes(table_id, clock.now()) == meter.table_bytes(table_id,
                                                                             clock.now())
    assert dt.datetime.fromisoformat(again.state.subsystems["mep_devices"]["reads"]["4"]["time"])
