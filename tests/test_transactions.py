"""Transactions (device/transactions.py) and procedure response routing (ET59/ET85), through the
ports a client uses: the MEP session (MAK/MBK, ET52/ET53) and the optical port (MK, ET27/ET28).
The MEP guide's worked examples (reference/osgp-app-layer.md 11.1, MEP p.14-17, p.45-49, p.52-53)
run byte for byte on the ``mep-guide`` profile. Pages: MEP guide printed footers."""

from __future__ import annotations

import copy

import pytest
from conftest import MK, LinkClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_procedures_mep import Mep

from meter_emu.clock import ManualClock
from meter_emu.device import transactions
from meter_emu.device.meter import Meter, MeterState
from meter_emu.ports.mep import MepLink, MepSession
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.tables import bt, et
from meter_emu.tables.system import set_broadcast_groups

ET27, ET28, ET50, ET51, ET52, ET53, ET59, ET85 = (et(n) for n in (27, 28, 50, 51, 52, 53, 59,
                                                                   85))
EP17 = 2048 + 17
BP05 = 5
OK, ERR, IAR, BSY = 0x00, 0x01, 0x05, 0x06
RESPONSES, PARTIAL, GROUP, DENIED = 1, 2, 3, 4


def H(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# ---- building requests ------------------------------------------------------------------------

def pread(table: int, offset: int, count: int) -> bytes:
    return b"\x3F" + table.to_bytes(2, "big") + offset.to_bytes(3, "big") + count.to_bytes(2, "big")


def pwrite(table: int, offset: int, data: bytes) -> bytes:
    return (b"\x4F" + table.to_bytes(2, "big") + offset.to_bytes(3, "big")
            + len(data).to_bytes(2, "big") + data)


def fwrite(table: int, data: bytes) -> bytes:
    return b"\x40" + table.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def transaction(number: int, records, kind: int = 0, groups=None, closing=None) -> bytes:
    """A request table image: size, type, number, [groups], records, closing number."""
    body = b""
    if kind == GROUP:
        body += bytes([len(groups)]) + b"".join(g.to_bytes(2, "little") for g in groups)
    body += b"".join(len(r).to_bytes(2, "little") + r for r in records)
    tag = number.to_bytes(2, "little")
    size = 5 + len(body) + 2
    return size.to_bytes(2, "little") + bytes([kind]) + tag + body + (closing or tag)


def parse_response(image: bytes) -> tuple[int, int, list[bytes]]:
    """(type, number, response records) of a response table image; the closing number checked."""
    size, kind, number = int.from_bytes(image[0:2], "little"), image[2], image[3:5]
    assert image[size - 2:size] == number
    records, position = [], 5
    while position < size - 2:
        length = int.from_bytes(image[position:position + 2], "little")
        records.append(image[position + 2:position + 2 + length])
        position += 2 + length
    assert position == size - 2
    return kind, int.from_bytes(number, "little"), records


def durable(meter, now: float = 0.0) -> dict:
    """The meter's state without what the ET52/ET27 write itself changes: the request table,
    the engine's own record, the MEP sequence number, the write counters and its "Table Written
    To" event (and the alarm that event raises). Timed actions due by ``now`` are run first."""
    meter.advance(now)
    doc = copy.deepcopy(meter.state.to_doc())
    for table in (ET52, ET27):
        doc["tables"].pop(str(table), None)
    for name in ("transactions", "diagnostics"):
        doc["subsystems"].pop(name, None)
    for name in ("mep_sequence", "history_sequence"):
        doc.pop(name)
    doc["history"] = [entry[:1] + entry[2:] for entry in meter.state.history.entries
                      if entry[3:] not in ([10, ET52], [10, ET27])]
    doc["alarms"] = sorted(set(doc["alarms"]) - {"event_log_unread_entries"})
    return doc


@pytest.fixture
def mep(meter, clock):
    return Mep(meter, clock)


@pytest.fixture
def mk(client):
    client.logon(MK)
    return client


def mep_read(mep, table: int, offset: int, count: int) -> bytes:
    """A partial read over the MEP port, in pieces that fit a MEP message."""
    data = b""
    while len(data) < count:
        piece = min(count - len(data), 400)
        answer = mep.request(pread(table, offset + len(data), piece))
        assert answer[0] == OK, answer.hex()
        data += answer[3:]
    return data


def mep_response(mep) -> tuple[int, int, list[bytes]]:
    """ET53 as the guide's client reads it: the header, then the transaction's size (MEP p.47)."""
    size = int.from_bytes(mep_read(mep, ET53, 0, 5)[:2], "little")
    return parse_response(mep_read(mep, ET53, 0, size))


#: three writes a MAK may make: ET51 MEP health timeout 300 s, ET50 "ET59 Response" flag
HEALTH_300 = pwrite(ET51, 1, (300).to_bytes(2, "little"))
ET59_FLAG = pwrite(ET50, 30, b"\x02")
BAD_ET51 = pwrite(ET51, 0, b"\x70")  # unused flag bits: the table refuses it (ERR)


# ---- all or nothing ---------------------------------------------------------------------------

def test_a_committed_transaction_applies_every_record_in_order(meter, mep):
    assert mep.write(ET52, transaction(1, [HEALTH_300, ET59_FLAG, pread(ET51, 1, 2)])) == OK
    kind, number, records = mep_response(mep)
    assert (kind, number) == (RESPONSES, 1)
    assert records == [b"\x00", b"\x00", H("00 0002 2C01")]  # the read sees the first write
    assert mep.read(ET51)[1:3] == H("2C01") and mep.read(ET50)[30] == 0x02


def test_third_record_failing_leaves_no_write_of_the_first_two_mep(meter, mep, clock):
    before = durable(meter, clock.now())
    assert mep.write(ET52, transaction(2, [HEALTH_300, ET59_FLAG, BAD_ET51])) == OK
    kind, number, records = mep_response(mep)
    assert (kind, number, records) == (PARTIAL, 2, [b"\x00", b"\x00", bytes([ERR])])
    assert durable(meter, clock.now()) == before  # tables, logs, subsystems: as they were
    assert mep.read(ET51)[1:3] == (60).to_bytes(2, "little")  # the default health timeout


def test_third_record_failing_leaves_no_write_of_the_first_two_optical(meter, mk, clock):
    """ET27/ET28 from the optical port: the records run with the writer's MK."""
    before = durable(meter, clock.now())
    request = transaction(7, [HEALTH_300, ET59_FLAG, pread(0x0FFF, 0, 1)])  # no such table
    assert mk.write(ET27, request) == b"\x00"
    kind, number, records = parse_response(mk.read(ET28))
    assert (kind, number, records) == (PARTIAL, 7, [b"\x00", b"\x00", bytes([IAR])])
    assert durable(meter, clock.now()) == before
    assert mk.write(ET27, transaction(8, [HEALTH_300, ET59_FLAG])) == b"\x00"
    assert parse_response(mk.read(ET28))[:2] == (RESPONSES, 8)
    assert mk.read(ET51)[1:3] == H("2C01")


def test_a_failing_procedure_rolls_back_but_stays_posted(meter, mep, clock):
    """EP17 for a handle no device has: its result (not 0) cuts the transaction; BT08 still
    shows that result so the client can read why."""
    before = durable(meter, clock.now())
    call = fwrite(bt(7), EP17.to_bytes(2, "little") + b"\x21" + H("00 F803"))
    assert mep.write(ET52, transaction(3, [HEALTH_300, call, HEALTH_300])) == OK
    kind, _, records = mep_response(mep)
    assert (kind, records) == (PARTIAL, [b"\x00", b"\x00"])
    bt08 = mep.read(bt(8))
    assert bt08[:3] == EP17.to_bytes(2, "little") + b"\x21" and bt08[3] != 0
    after = durable(meter, clock.now())
    for doc in (before, after):
        doc.pop("procedure_response"), doc.pop("last_psn")
    assert after == before


def test_a_non_idempotent_procedure_is_refused_inside_a_transaction(meter, mk, clock):
    """MEP p.43 names BP05: its BT07 write answers IAR and the transaction is undone."""
    before = durable(meter, clock.now())
    call = fwrite(bt(7), BP05.to_bytes(2, "little") + b"\x09" + bytes(3))
    assert mk.write(ET27, transaction(4, [HEALTH_300, call])) == b"\x00"
    assert parse_response(mk.read(ET28))[::2] == (PARTIAL, [b"\x00", bytes([IAR])])
    assert durable(meter, clock.now()) == before


def test_events_of_a_rolled_back_transaction_are_not_published(meter, mep):
    published = []
    meter.event_listeners.append(lambda _meter, document: published.append(document["argument"]))
    assert mep.write(ET52, transaction(5, [HEALTH_300, BAD_ET51])) == OK
    assert published == [ET52]  # "Table Written To" ET52 only: ET51's write was undone
    assert mep.write(ET52, transaction(6, [HEALTH_300])) == OK
    assert published == [ET52, ET51, ET52]  # held back until the commit


# ---- types 1-4, limits ------------------------------------------------------------------------

@pytest.mark.parametrize("groups, runs", [
    ([0x1203], True),  # the meter's own group
    ([0x3401, 0x12FF], True),  # every sub-group of 0x12
    ([0xFF00], True), ([0xFFFF], True),  # everyone
    ([0x1204], False), ([0x0000], False), ([], False),  # 0x0000 is no group (MEP p.131)
])
def test_group_broadcast_runs_only_in_a_listed_group(meter, mep, groups, runs):
    set_broadcast_groups(meter, [0x1203])
    assert mep.write(ET52, transaction(9, [HEALTH_300], kind=GROUP, groups=groups)) == OK
    kind, number, records = mep_response(mep)
    assert number == 9
    if runs:
        assert (kind, records) == (RESPONSES, [b"\x00"])
        assert mep.read(ET51)[1:3] == H("2C01")
    else:
        assert (kind, records) == (DENIED, [])
        assert mep.read(ET51)[1:3] == H("3C00")  # the record did not run


def test_the_same_transaction_twice_in_a_row_runs_once(meter, mep):
    """MEP p.44: same number and CRC -> not run again (a retried write); another number runs."""
    request = transaction(10, [HEALTH_300])
    assert mep.write(ET52, request) == OK
    assert mep.write(ET51, (120).to_bytes(2, "little"), 1) == OK  # someone changes it since
    assert mep.write(ET52, request) == OK
    assert mep.read(ET51)[1:3] == (120).to_bytes(2, "little")  # not run again
    assert mep.write(ET52, transaction(11, [HEALTH_300])) == OK
    assert mep.read(ET51)[1:3] == H("2C01")
    assert mep.write(ET51, (120).to_bytes(2, "little"), 1) == OK
    assert mep.write(ET52, request) == OK  # not in a row any more
    assert mep.read(ET51)[1:3] == H("2C01")


def test_sizes_follow_et11(meter, mep):
    request_length = len(meter.table_bytes(ET52, 0.0))
    assert len(meter.table_bytes(ET53, 0.0)) == 1785  # ET11.9
    too_big = (request_length + 1).to_bytes(2, "little") + H("00 0100")
    assert mep.write(ET52, too_big) == ERR
    assert mep.write(ET52, H("0600 00 0100 0100")[:7]) == ERR  # size 6: no room for the closing
    # reads are held to ET53, not to the 476-byte MEP message
    big = [pread(bt(74), 0, 700), pread(bt(74), 0, 500)]
    assert mep.write(ET52, transaction(12, big)) == OK
    kind, _, records = mep_response(mep)
    assert kind == RESPONSES and [len(r) for r in records] == [703, 503]
    assert mep.write(ET52, transaction(13, big + [pread(bt(74), 0, 600)])) == OK
    kind, _, records = mep_response(mep)  # 5 + 705 + 505 + 605 + 2 > 1785
    assert kind == PARTIAL and len(records) == 2


def test_a_transaction_written_in_pieces_runs_when_the_closing_number_arrives(meter, mep):
    request = H("4300 00 0100 0800 3F080B0000000 00A 0800 3F00140000000 00A 0800 3F0015000000000A"
                " 0800 3F0804000037 0001 0800 3F080E000000000C 0800 3F080F000000001F 0100")
    assert mep.write(ET52, request[:30]) == OK
    assert mep.write(ET52, request[30:60], 30) == OK
    assert mep_read(mep, ET53, 0, 5) == bytes(5)  # nothing ran yet
    assert mep.write(ET52, request[60:], 60) == OK
    whole = Meter(load_profile())
    Mep(whole, ManualClock()).write(ET52, request)
    assert meter.table_bytes(ET53, 0.0) == whole.table_bytes(ET53, 0.0)
    assert mep_response(mep)[:2] == (RESPONSES, 1)


def test_a_record_writing_a_transaction_table_answers_busy(meter, mep, mk):
    assert mep.write(ET52, transaction(14, [HEALTH_300, pwrite(ET52, 0, bytes(7))])) == OK
    assert mep_response(mep)[::2] == (PARTIAL, [b"\x00", bytes([BSY])])
    assert mk.write(ET27, transaction(15, [pwrite(ET27, 0, bytes(7))])) == b"\x00"
    assert parse_response(mk.read(ET28))[::2] == (PARTIAL, [bytes([BSY])])


# ---- malformed requests -----------------------------------------------------------------------

@pytest.mark.parametrize("image", [
    H("0900 00 1500 0000 1500"),  # a zero record length (MEP p.131)
    H("1000 00 1500 0900 3F000100000000 1500"),  # a record longer than what is left
    H("0800 00 1500 08 1500"),  # one byte where a record length should be
    H("0B00 00 1500 0200 3F00 1500"),  # a record shorter than its service's header
    H("0C00 00 1500 0300 200001 1500"),  # not a table service
])
def test_malformed_records_answer_partial_and_change_nothing(meter, mep, image, clock):
    before = durable(meter, clock.now())
    assert mep.write(ET52, image) == OK
    kind, number, _ = mep_response(mep)
    assert (kind, number) == (PARTIAL, 0x15)
    assert durable(meter, clock.now()) == before


def test_malformed_requests_refused_as_writes(meter, mep):
    before = bytes(meter.table_bytes(ET52, 0.0))
    assert mep.write(ET52, transaction(16, [HEALTH_300], closing=H("1700"))) == ERR
    assert mep.write(ET52, transaction(16, [HEALTH_300], kind=RESPONSES)) == ERR
    assert meter.table_bytes(ET52, 0.0) == before and mep_read(mep, ET53, 0, 5) == bytes(5)
    # the header announces more than was written: the meter waits for the rest
    assert mep.write(ET52, H("4300 00 1800 0800") + pread(bt(1), 0, 4)) == OK
    assert mep_read(mep, ET53, 0, 5) == bytes(5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=60), number=st.integers(0, 0xFFFF))
def test_arbitrary_records_never_break_the_meter(body, number):
    meter, clock = Meter(load_profile()), ManualClock()
    mep = Mep(meter, clock)
    before = durable(meter, clock.now())
    tag = number.to_bytes(2, "little")
    answer = mep.write(ET52, (len(body) + 7).to_bytes(2, "little") + b"\x00" + tag + body + tag)
    assert answer == OK
    kind, got, _ = parse_response(meter.table_bytes(ET53, 0.0))
    assert got == number and kind in (RESPONSES, PARTIAL)
    if kind == PARTIAL:
        assert durable(meter, clock.now()) == before


# ---- power cycle ------------------------------------------------------------------------------

def _interrupted(profile, request: bytes) -> MeterState:
    """A meter whose power failed after the request was kept as executing, before any record
    ran: the state the store saved, loaded into a new meter."""
    meter = Meter(profile)
    meter.state.tables[ET52] = request.ljust(len(meter.table_bytes(ET52, 0.0)), b"\0")
    transactions.begin(meter, ET52, dict(key="MAK", user_id=0, port="meter-1 mep"))
    return MeterState.from_doc(copy.deepcopy(meter.state.to_doc()))


def test_an_interrupted_transaction_runs_again_at_power_up_once():
    profile = load_profile()
    state = _interrupted(profile, transaction(20, [HEALTH_300, pread(ET51, 1, 2)]))
    meter = Meter(profile, state)
    assert transactions.resume(meter, 1000.0)
    assert parse_response(meter.table_bytes(ET53, 0.0)) == (
        RESPONSES, 20, [b"\x00", H("00 0002 2C01")])
    assert meter.state.subsystems["transactions"]["executing"] is None
    assert not transactions.resume(meter, 1001.0)  # once
    again = Meter(profile, MeterState.from_doc(meter.state.to_doc()))
    assert not transactions.resume(again, 1002.0)


def test_a_new_meter_runs_the_interrupted_transaction_by_itself():
    profile = load_profile()
    meter = Meter(profile, _interrupted(profile, transaction(21, [HEALTH_300])), now=1000.0)
    meter.advance(1000.0)
    assert parse_response(meter.table_bytes(ET53, 0.0))[:2] == (RESPONSES, 21)


# ---- ET59 / ET85 ------------------------------------------------------------------------------

def test_procedure_responses_go_where_each_client_reads_them(clock):
    gen4 = Meter(load_profile(overrides=["identity.firmware_version=4.30.01"]))
    first, second = Mep(gen4, clock), Mep(gen4, clock, channel=2)
    optical = LinkClient(optical_protocol(gen4, clock))
    optical.logon(MK)
    lock = (2048 + 61).to_bytes(2, "little")  # EP61 "lock" (parameter 1)
    assert first.write(bt(7), lock + b"\x31\x01") == OK
    assert gen4.table_bytes(bt(8), 0.0)[:4] == lock + b"\x31\x00"  # flag clear: BT08
    assert first.write(ET50, b"\x02", 30) == OK  # ET50 "ET59 Response" (MEP p.124)
    assert first.write(bt(7), lock + b"\x32\x01") == OK
    assert first.read(ET59)[:4] == lock + b"\x32\x00"
    assert gen4.table_bytes(bt(8), 0.0)[:4] == lock + b"\x31\x00"
    assert second.write(bt(7), lock + b"\x33\x01") == OK  # MEP client 2: always ET85
    assert second.read(ET85)[:4] == lock + b"\x33\x03"  # client 1 holds the lock: conflict
    assert optical.write(bt(7), (2048 + 3).to_bytes(2, "little") + b"\x34") == b"\x00"
    assert optical.read(bt(8))[:3] == (2048 + 3).to_bytes(2, "little") + b"\x34"
    assert first.read(ET59)[:4] == lock + b"\x32\x00"


# ---- the MEP guide's worked examples (reference/osgp-app-layer.md 11.1) ------------------------

GUIDE = {  # item: (sequence number the meter expects, request, response)
    1: (0x77635B90, "0014 3F0017000000002C 01020304 74861F6D7658DD56",
        "000D 0C77635B90 35863C1DF5B91482"),
    2: (None, "0014 3F0017000000002C 77635B91 13DB85A135A0575E",
        "0037 00002C 00000000000000000000000000000000 08000000 03000000 0000000000000000"
        "0000000000000000 06000000 ADDCB82C3D417F91"),
    3: (0x77636E2F, "0015 4F083200001E000101 77636E2F 86E50E2667D1E63C",
        "0009 00 86E50E2667D1E63C"),
    4: (0x5B4E42E6, "0057 4F083400000000434300000100080 03F080B000000000A08003F0014000000000A"
        "08003F0015000000000A08003F080400003700010800 3F080E000000000C08003F080F000000001F"
        "0100 5B4E42E6 ED6A9CEFF4CC0E39", "0009 00 ED6A9CEFF4CC0E39"),
    5: (None, "0014 3F0835000000 0005 5B4E42E7 489775DAD853E3A3",
        "0010 000005 6F00010100 974B99CAA3314519"),
    6: (None, "0014 3F0835000000006F 5B4E42E8 1B32044974 45A87A",
        "007A 00006F 6F00010100 0D0000000A 0542240506050201 03F9 0D0000000A 3F0EFD0F08100104081A"
        " 0D0000000A 3F0E0C0F08000104081A 040000000104 0F0000000C 000000000011010001042F00"
        " 220000001F 0042000100020145000100020148000100020103 00F8030201 4B0001000201 0100"
        " BFD4EBF2B7E01F43"),
    7: (0x5B4E4309, "0017 4000070006 1108 07 00 F803 5B4E4309 697AB201497E9CF7",
        "0009 00 697AB201497E9CF7"),
}

def guide_link(sequence: int) -> tuple[Meter, MepLink]:
    meter = Meter(load_profile("mep-guide", [f"mep.sequence_number={sequence:#x}"]))
    return meter, MepLink(MepSession(meter, ManualClock(), port="mep-guide mep"))


def replay(link, *items: int) -> list[bytes]:
    return [link.receive(H(GUIDE[item][1]), 1.0) for item in items]


def test_guide_items_1_and_2_partial_read_after_a_wrong_sequence_number():
    _, link = guide_link(GUIDE[1][0])
    assert replay(link, 1, 2) == [H(GUIDE[1][2]), H(GUIDE[2][2])]


def test_guide_item_3_et50_registration_write():
    meter, link = guide_link(GUIDE[3][0])
    assert replay(link, 3) == [H(GUIDE[3][2])]
    assert meter.table_bytes(ET50, 0.0)[30] == 0x01  # "MEP Device Registered"


def test_guide_items_4_and_5_the_transaction_and_its_header():
    meter, link = guide_link(GUIDE[4][0])
    assert replay(link, 4, 5) == [H(GUIDE[4][2]), H(GUIDE[5][2])]
    kind, number, records = parse_response(meter.table_bytes(ET53, 0.0))
    assert (kind, number) == (RESPONSES, 1)
    guide = parse_response(H(GUIDE[6][2])[5:5 + 0x6F])
    assert [len(r) for r in records] == [len(r) for r in guide[2]]  # 13, 13, 13, 4, 15, 34
    # what the profile reproduces: ET11 (.7 = 769), BT20 (present values 26), ET04[55]
    assert [records[i] for i in (0, 1, 3)] == [guide[2][i] for i in (0, 1, 3)]


def test_guide_item_6_with_the_client_registered():
    """Item 6 once the MEP client has registered (item 3's ET50 flag, set here through the
    optical port with MK, since item 3's sequence number lies above item 4's): ET11, BT20 and
    ET04[55] byte for byte, and ET14 shows the client's slot (5th, bit 4 of the occupancy byte)
    occupied as in the guide's 0x11 (the whole response is the next test's, on mep-guide-p45)."""
    meter, link = guide_link(GUIDE[4][0])
    optical = LinkClient(optical_protocol(meter, ManualClock()))
    optical.logon(MK)
    assert optical.write(ET50, b"\x01", 30) == b"\x00"
    got = parse_response(replay(link, 4, 5, 6)[2][5:5 + 0x6F])[2]
    want = parse_response(H(GUIDE[6][2])[5:5 + 0x6F])[2]
    assert [got[i] for i in (0, 1, 3)] == [want[i] for i in (0, 1, 3)]
    et14, guide_et14 = got[4][3:], want[4][3:]  # after response code and count
    assert et14[:5] == guide_et14[:5] == bytes(5)  # mode, reserved
    assert et14[5] == guide_et14[5] & 0x10 == 0x10  # the MEP client; bit 0 is the M-Bus device


def test_guide_item_6_the_whole_response_byte_for_byte():
    """On mep-guide-p45, the guide's meter of p.45-53 (demand, an M-Bus device, the client
    0x03F8 and five served on-demand reads; see that profile): items 1-2's BT23 (p.14) has no
    demand reset counter, item 6's BT21 says BT23 has one, so they are two states."""
    meter = Meter(load_profile("mep-guide-p45", [f"mep.sequence_number={GUIDE[4][0]:#x}"]))
    link = MepLink(MepSession(meter, ManualClock(), port="mep-guide mep"))
    assert replay(link, 4, 5, 6)[2] == H(GUIDE[6][2])


def test_guide_item_7_ep17_through_bt07():
    meter, link = guide_link(GUIDE[7][0])
    assert replay(link, 7) == [H(GUIDE[7][2])]
    assert meter.table_bytes(bt(8), 0.0)[:3] == H("1108 07")
