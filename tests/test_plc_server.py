"""The meter's OSGP server on the power line (plc/server.py): secured unicast table services and
secure broadcast, driven with Indications built by hand (as the node delivers them)."""

from __future__ import annotations

import pytest

from meter_emu.clock import ManualClock
from meter_emu.device import firmware, keys
from meter_emu.device.access import Key
from meter_emu.device.meter import Meter
from meter_emu.events import POWER_UP
from meter_emu.lon.frame import Broadcast, Group, NeuronId, SubnetNode
from meter_emu.lon.node import Indication, LinkInfo, Service
from meter_emu.plc.secure import BroadcastSession, ClientSession, SecurityError
from meter_emu.plc.server import PlcServer, group_matches
from meter_emu.profile import load_profile
from meter_emu.security import OmaKey
from meter_emu.tables.extended import increment_idt_version

from conftest import bt07

KEY = b"OMA-emu-dflt"  # the default profile's keys.oma (12 bytes, RC4 mode)
AES_KEY = b"AES-key-for-emu!"
ET03, ET04, ET17, ET27, ET28 = (2048 + n for n in (3, 4, 17, 27, 28))
EP08, EP09, EP23, EP27 = (2048 + n for n in (8, 9, 23, 27))
BT23 = 23


def read(table, offset, count):
    return bytes([0x3F]) + table.to_bytes(2, "big") + offset.to_bytes(3, "big") \
        + count.to_bytes(2, "big")


def write(table, data, offset=None):
    if offset is None:
        return bytes([0x40]) + table.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
    return bytes([0x4F]) + table.to_bytes(2, "big") + offset.to_bytes(3, "big") \
        + len(data).to_bytes(2, "big") + data


def indication(message, dst=SubnetNode(1, 5), service=Service.REQUEST):
    return Indication(message, service, SubnetNode(1, 126), dst, b"\x4f", 0, False, False,
                      LinkInfo())


class Rig:
    """A meter, its PLC server and a head-end session."""

    def __init__(self, overrides=(), *, key=KEY, mode="rc4", encrypt=False):
        self.clock = ManualClock()
        self.meter = Meter(load_profile("default", list(overrides)))
        self.server = PlcServer(self.meter, self.clock)
        self.session = ClientSession(key, mode=mode, encrypt=encrypt)
        self.psn = 0

    def raw(self, message, dst=SubnetNode(1, 5)):
        return self.server.handle(indication(message, dst), self.clock.now())

    def ask(self, apdu):
        """One request; retried once after 0x0C / 0x1F, as a head-end does."""
        answer = self.session.response(self.raw(self.session.request(apdu)))
        if answer in (b"\x0c", b"\x1f"):
            answer = self.session.response(self.raw(self.session.request(apdu)))
        return answer

    def read(self, table, offset, count):
        answer = self.ask(read(table, offset, count))
        assert answer[:3] == b"\x00" + count.to_bytes(2, "big"), answer.hex()
        return answer[3:]

    def procedure(self, number, params=b""):
        self.psn = self.psn % 250 + 1
        assert self.ask(write(7, bt07(number, self.psn, params))) == b"\x00"
        bt08 = self.ask(bytes.fromhex("300008"))
        assert bt08[3:6] == number.to_bytes(2, "little") + bytes([self.psn])
        return bt08[6], bt08[7:]

    def window(self, base, delta):
        data = base.to_bytes(4, "little") + delta.to_bytes(2, "little")
        assert self.ask(write(ET04, data, 82)) == b"\x00"


@pytest.fixture
def rig():
    return Rig()


def test_partial_read_of_bt23_byte_exact(rig):
    """A hand-built Indication; the response is 00 ‖ count ‖ data ‖ digest over request ‖
    response (D1, D2), and the data are the meter's BT23."""
    request = bytes.fromhex("3F 0017 000000 0010 00000000")
    body = request
    message = body + OmaKey(KEY).digest(body)
    response = rig.raw(message)
    data = rig.meter.read_table(BT23, Key.PLC, rig.clock.now(), 0, 16)
    assert response == b"\x00\x00\x10" + data + OmaKey(KEY).digest(body + response[:-8])
    assert keys.usage(rig.meter) == (1, 0)
    # ET04.0 shows the next expected number (UINT32 LSB first)
    assert rig.meter.table_bytes(ET04, 0)[:4] == (1).to_bytes(4, "little")


def test_neuron_id_addressing_is_unicast_too(rig):
    answer = rig.raw(rig.session.request(read(BT23, 0, 4)), NeuronId(bytes(6)))
    assert rig.session.response(answer)[:3] == b"\x00\x00\x04"


def test_wrong_key_answers_0b_alone_and_counts_the_use(rig):
    intruder = ClientSession(b"not-the-key!")
    answer = rig.raw(intruder.request(read(BT23, 0, 4)))
    assert answer == b"\x0b"  # no digest: there is no key to compute one with
    assert keys.usage(rig.meter) == (1, 0)
    with pytest.raises(SecurityError):
        intruder.response(answer)
    assert rig.raw(b"\x3f\x00") == b"\x0b"  # too short to carry a digest
    assert keys.usage(rig.meter) == (2, 0)
    assert rig.ask(read(BT23, 0, 4))[0] == 0  # the right key still works, from sequence 0


def test_old_and_far_sequences_answer_0c_with_the_expected_number(rig):
    first = rig.session.request(read(BT23, 0, 4))
    assert rig.session.response(rig.raw(first))[0] == 0
    replayed = rig.raw(first)  # same sequence number again
    assert replayed[:5] == bytes.fromhex("0C 00000001")
    assert replayed[5:] == OmaKey(KEY).digest(first[:-8] + replayed[:5])  # signed
    far = ClientSession(KEY, sequence=1 + 9)  # 9 ahead: outside the window
    answer = rig.raw(far.request(read(BT23, 0, 4)))
    assert far.response(answer) == b"\x0c" and far.sequence == 1
    near = ClientSession(KEY, sequence=1 + 8)  # 8 ahead: accepted (D3)
    assert near.response(rig.raw(near.request(read(BT23, 0, 4))))[0] == 0
    assert rig.meter.table_bytes(ET04, 0)[:4] == (10).to_bytes(4, "little")


def test_idt_change_answers_interface_change_then_serves(rig):
    assert rig.ask(read(BT23, 0, 4))[0] == 0  # expected now 1
    increment_idt_version(rig.meter)
    answer = rig.session.response(rig.raw(rig.session.request(read(BT23, 0, 4))))
    assert answer == b"\x1f" and rig.session.sequence == 1 + 25  # D3's +25
    assert rig.session.response(rig.raw(rig.session.request(read(BT23, 0, 4))))[0] == 0


def test_plc_size_limits_answer_incompatible(rig):
    assert len(rig.read(ET04, 0, 84)) == 84
    assert rig.ask(read(ET04, 0, 85)) == b"\x1e"
    assert len(rig.session.request(write(ET03, bytes(75), 0))) == 95  # D1's 95-byte APDU
    rig.session.sequence -= 1
    assert rig.ask(write(ET03, bytes(75), 0)) == b"\x00"
    assert rig.ask(write(ET03, bytes(76), 0)) == b"\x1e"
    assert rig.ask(bytes.fromhex("300804")) == b"\x1e"  # ET04 (140 bytes) full: too big
    bt01 = rig.ask(bytes.fromhex("300001"))  # PLC dialect: 30 TT TT, no length, no checksum
    assert bt01[0] == 0 and len(bt01) == 3 + int.from_bytes(bt01[1:3], "big")
    assert rig.ask(bytes.fromhex("30000100FF")) == b"\x01"  # MEP's length field: malformed
    assert rig.ask(b"\x35\x00\x01") == b"\x02"  # not a table service


def test_rc4_encrypted_exchange_and_key_usage(rig):
    rig.session.encrypt = True
    request = rig.session.request(read(BT23, 0, 8))
    assert read(BT23, 0, 8) not in request
    answer = rig.raw(request)
    data = rig.meter.read_table(BT23, Key.PLC, rig.clock.now(), 0, 8)
    assert data not in answer  # encrypted, continuing the request's stream
    assert rig.session.response(answer) == b"\x00\x00\x08" + data


def test_aes_mode_end_to_end():
    rig = Rig(['security.mode="aes"', f'keys.oma="{AES_KEY.decode()}"',
               'identity.firmware_version="3.80.01"'], key=AES_KEY, mode="aes")
    assert rig.read(BT23, 0, 8) == rig.meter.read_table(BT23, Key.PLC, rig.clock.now(), 0, 8)
    rc4 = ClientSession(AES_KEY[:12])  # an RC4 message to an AES meter
    assert rig.raw(rc4.request(read(BT23, 0, 8))) == b"\x0b"
    replay = ClientSession(AES_KEY, mode="aes", sequence=0).request(read(BT23, 0, 8))
    answer = rig.raw(replay)  # sequence 0 again: the authenticated resync frame
    assert answer[:5] == bytes.fromhex("0C 00000001") and len(answer) == 13
    increment_idt_version(rig.meter)
    assert rig.session.response(rig.raw(rig.session.request(read(BT23, 0, 8)))) == b"\x1f"
    assert rig.read(BT23, 0, 8)


def test_device_busy_within_power_up_wait_time(rig):
    assert rig.ask(write(ET04, b"\x0a", 122)) == b"\x00"  # ET04.122 = 10 s
    assert rig.ask(read(BT23, 0, 4))[0] == 0  # no power-up logged yet
    rig.meter.log_event(POWER_UP.number, 0, rig.clock.now())
    rig.clock.advance(3)
    assert rig.ask(read(BT23, 0, 4)) == b"\x06"
    rig.clock.advance(8)
    assert rig.ask(read(BT23, 0, 4))[0] == 0


def test_transaction_through_et27_et28_with_the_plc_key(rig):
    record = read(BT23, 0, 4)
    body = len(record).to_bytes(2, "little") + record
    number = (0x0101).to_bytes(2, "little")
    size = 5 + len(body) + 2
    image = size.to_bytes(2, "little") + b"\x00" + number + body + number
    assert rig.ask(write(ET27, image)) == b"\x00"
    et28 = rig.read(ET28, 0, 5 + 2 + 7)
    assert et28[2] == 1 and et28[3:5] == number  # type 1: every response
    assert et28[5:7] == (7).to_bytes(2, "little") and et28[7:10] == b"\x00\x00\x04"


def test_non_requests_get_no_answer_but_bad_input_never_raises(rig):
    message = rig.session.request(read(BT23, 0, 4))
    ind = indication(message, service=Service.ACKD)
    assert rig.server.handle(ind, 0) is None
    for junk in (b"", b"\x3f", bytes(13), bytes(200)):
        assert rig.raw(junk) == b"\x0b"
        assert rig.server.handle(indication(junk, Broadcast(0)), 0) is None


# ---- secure broadcast ------------------------------------------------------------------------

def test_group_matching_follows_the_transaction_wildcards():
    mine = [0x1234, 0x5601]
    assert group_matches(0x1234, mine) and not group_matches(0x1235, mine)
    assert group_matches(0x12FF, mine) and group_matches(0x56FF, mine)
    assert not group_matches(0x13FF, mine)
    assert group_matches(0xFFFF, []) and group_matches(0xFF07, [])
    assert not group_matches(0x0000, mine)


def broadcast_rig(groups=(0x1234,)):
    rig = Rig()
    for group in groups:
        assert rig.procedure(EP27, b"\x01" + group.to_bytes(2, "little"))[0] == 0
    rig.window(1000, 50)
    return rig


def procedures_run(meter):
    """EP29's diagnostic count of procedures run (BT07 writes)."""
    return meter.state.subsystems.get("diagnostics", {}).get("procedures", 0)


def relay_command(action, psn=9):
    return write(7, bt07(EP23, psn, bytes([action])))


def test_group_broadcast_accepted_once_and_rejected_on_replay():
    rig = broadcast_rig()
    head_end = BroadcastSession(KEY, group=0x1234, sequence=1001)
    message = head_end.request(relay_command(0))  # disconnect
    assert rig.server.handle(indication(message, Group(3), Service.UNACKD_RPT), 0) is None
    assert rig.read(8, 0, 4) == bt07(EP23, 9) + b"\x00"  # EP23 ran, completed
    receipt = rig.meter.table_bytes(ET04, 0)[76:82]
    local = rig.meter.local(rig.clock.now())  # ET04.76: the meter's time, LTIME_DATE
    assert receipt == bytes([local.year - 2000, local.month, local.day, local.hour,
                             local.minute, local.second])
    assert keys.usage(rig.meter)[1] == 1
    ran = procedures_run(rig.meter)
    rig.clock.advance(60)
    rig.server.handle(indication(message, Broadcast(0), Service.UNACKD_RPT), 0)  # replay
    assert procedures_run(rig.meter) == ran
    assert rig.meter.table_bytes(ET04, 0)[76:82] == receipt
    assert keys.usage(rig.meter)[1] == 2  # tried with the broadcast key, counted


def test_out_of_window_wrong_group_reads_and_forgeries_are_ignored():
    rig = broadcast_rig()

    def send(session, apdu):
        """Whether the meter accepted the broadcast (it moved ET04.76 Broadcast Receipt)."""
        rig.clock.advance(1)
        before = rig.meter.table_bytes(ET04, 0)[76:82]
        rig.server.handle(indication(session.request(apdu), Broadcast(0)), 0)
        return rig.meter.table_bytes(ET04, 0)[76:82] != before

    assert not send(BroadcastSession(KEY, group=0x1234, sequence=1000), relay_command(0))
    assert not send(BroadcastSession(KEY, group=0x1234, sequence=1051), relay_command(0))
    assert not send(BroadcastSession(KEY, group=0x4321, sequence=1001), relay_command(0))
    assert not send(BroadcastSession(b"wrong-key-12", group=0x1234, sequence=1001),
                    relay_command(0))
    assert send(BroadcastSession(KEY, group=0x12FF, sequence=1050, encrypt=True),
                read(BT23, 0, 4))  # accepted (receipt recorded) but a read runs nothing
    assert not send(BroadcastSession(KEY, group=0xFFFF, sequence=1049), relay_command(0))


def test_multicast_firmware_reaches_exactly_the_group():
    meters = [broadcast_rig([0x2001]), broadcast_rig([0x2002]), broadcast_rig([0x3001])]
    image = firmware.build_image(bytes(8), "9.01.00", bytes(range(256)) * 2)
    head_end = BroadcastSession(KEY, group=0x20FF, sequence=1001)
    packets = [(offset, image[offset:offset + firmware.PACKET_SIZE])
               for offset in range(0, len(image), firmware.PACKET_SIZE)]
    sends = [write(7, bt07(EP08, 1))] + [
        write(7, bt07(EP09, 2 + n, offset.to_bytes(4, "little") + packet))
        for n, (offset, packet) in enumerate(packets)]
    for apdu in sends:
        message = head_end.request(apdu)
        assert len(message) <= 95 + 2
        for rig in meters:
            rig.server.handle(indication(message, Group(1), Service.UNACKD_RPT), 0)
    bitmaps = [rig.read(ET17, 0, 4) for rig in meters]
    full = ((1 << len(packets)) - 1).to_bytes(4, "little")  # ET17: bit n = packet n
    assert len(packets) == 9 and bitmaps[0] == bitmaps[1] == full
    assert bitmaps[2] == bytes(4)


def test_moving_the_window_base_restarts_the_replay_guard():
    rig = broadcast_rig()
    head_end = BroadcastSession(KEY, group=0x1234, sequence=1040)
    rig.server.handle(indication(head_end.request(relay_command(0)), Broadcast(0)), 0)
    rig.window(10, 50)
    ran = procedures_run(rig.meter)
    again = BroadcastSession(KEY, group=0x1234, sequence=11)
    rig.server.handle(indication(again.request(relay_command(0, psn=10)), Broadcast(0)), 0)
    assert procedures_run(rig.meter) == ran + 1


# ---- over the in-memory 14908.1 channel ------------------------------------------------------

def test_secured_reads_and_a_group_broadcast_over_a_channel():
    """A head-end Node and a real MeterStation on lon/channel.py: the sealed partial read goes
    as a 14908.1 REQUEST and comes back as its RESPONSE; a wrong key gets 0x0B; a secure
    broadcast (UNACKD_RPT to the domain) runs once and its replay does not."""
    import random

    from meter_emu.lon.channel import Channel
    from meter_emu.lon.config import CONFIGURED, Domain, NodeConfig
    from meter_emu.lon.node import Node
    from meter_emu.plc.station import MeterStation

    from conftest import CompletionsApp as HeadEnd

    channel = Channel(rng=random.Random(5))
    app = HeadEnd()
    head = Node(NodeConfig(neuron_id=bytes(5) + b"\x01", state=CONFIGURED,
                           domains=[Domain(b"\x42", 1, 1)]), app, rng=random.Random(6))
    channel.attach(head)
    meter = Meter(load_profile("default", ["identity.subnet=1", "identity.node=5",
                                           'plc.domain="42"']))
    station = MeterStation(meter, ManualClock(), rng=random.Random(7))
    channel.attach_station(station)

    def exchange(message, dst=SubnetNode(1, 5), service=Service.REQUEST):
        handle = head.send(message, dst, channel.now, service=service)
        assert channel.run_until(lambda: handle in app.done, timeout=10)
        return app.done[handle]

    session = ClientSession(KEY)
    done = exchange(session.request(read(BT23, 0, 8)))
    assert done.ok
    answer = session.response(done.responses[0].apdu)
    assert answer == b"\x00\x00\x08" + meter.read_table(BT23, Key.PLC, station.clock.now(), 0, 8)
    session.encrypt = True  # routed by its command code, which RC4 leaves in clear
    secret = session.response(exchange(session.request(read(BT23, 0, 8))).responses[0].apdu)
    assert secret == answer
    session.encrypt = False
    wrong = exchange(ClientSession(b"not-the-key!").request(read(BT23, 0, 8)))
    assert wrong.responses[0].apdu == b"\x0b"

    psn = 1
    for apdu in (write(7, bt07(EP27, psn, b"\x01\x34\x12")),
                 write(ET04, (1000).to_bytes(4, "little") + (50).to_bytes(2, "little"), 82)):
        assert session.response(exchange(session.request(apdu)).responses[0].apdu) == b"\x00"
    label = write(ET03, b"GROUP-A", 0)
    message = BroadcastSession(KEY, group=0x1234, sequence=1001).request(label)
    assert exchange(message, Broadcast(0), Service.UNACKD_RPT).ok
    channel.run(1.0)
    assert meter.table_bytes(ET03, 0)[:7] == b"GROUP-A"
    mine = write(ET03, b"UNICAST", 0)
    assert session.response(exchange(session.request(mine)).responses[0].apdu) == b"\x00"
    exchange(message, Broadcast(0), Service.UNACKD_RPT)  # the same bytes again: a replay
    channel.run(1.0)
    assert meter.table_bytes(ET03, 0)[:7] == b"UNICAST"
