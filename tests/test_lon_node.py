"""One ISO/IEC 14908.1 node, layers 3-5 (meter_emu/lon/node.py), driven frame by frame without
a medium: the tests hand frames from one node to another and look at the bytes
(reference/lower-layers.md sections 2-4, 11.3)."""

from __future__ import annotations

import random

import pytest

from meter_emu.lon import frame as fr
from meter_emu.lon.auth import oma_address, reply
from meter_emu.lon.config import CONFIGURED, UNCONFIGURED, Domain, Membership, NodeConfig
from meter_emu.lon.frame import (AuthPdu, Broadcast, Group, GroupAck, Lpdu, NeuronId, Npdu,
                                 Spdu, SubnetNode, Tpdu, decode, encode)
from meter_emu.lon.node import DEFER, Node, Service
from meter_emu.lon.timers import (delta_backlog, receive_timer_s, transmit_timer_s)

DOMAIN = b"\x42"
KEY6 = bytes.fromhex("0102030405ff")
KEY12 = bytes.fromhex("00112233445566778899aabb")


class App:
    """Answers every REQUEST with 0x00 || APDU; records what it saw."""

    def __init__(self, answer=None):
        self.seen = []
        self.done = []
        self.answer = answer

    def indicate(self, node, ind, now):
        self.seen.append(ind)
        if self.answer is not None:
            return self.answer(ind)
        return b"\x00" + ind.apdu if ind.service == Service.REQUEST else None

    def completed(self, node, completion, now):
        self.done.append(completion)


def make(subnet, node, *, key=KEY6, groups=(), state=CONFIGURED, domains=None, seed=None,
         **config):
    cfg = NodeConfig(neuron_id=bytes((0, 0, 0, 0, subnet, node)),
                     domains=[Domain(DOMAIN, subnet, node, key)] if domains is None else domains,
                     groups=list(groups), state=state, **config)
    app = App()
    return Node(cfg, app, rng=random.Random(seed if seed is not None else node),
                name=f"{subnet}/{node}", tid_start=0), app


def deliver(frames, *nodes, now=0.0):
    """Hand every frame to every node; return what they answered."""
    out = []
    for data in frames:
        for node in nodes:
            out += node.receive(data, now)
    return out


def pdu_of(data):
    return decode(data).npdu.pdu


# -- ACKD, REQUEST / RESPONSE ----------------------------------------------------------------

def test_ackd_and_ack_bytes():
    a, app_a = make(1, 5)
    b, app_b = make(1, 9)
    a.send(b"\x30\x01", SubnetNode(1, 9), 0.0, service=Service.ACKD)
    assert a.next_deadline() == 0.0
    [msg] = a.poll(0.0)
    # L2: no priority, no alt path (3 retries left), backlog 1 (section 4.6); NPDU 0x09:
    # TPDU, subnet/node, 1-byte domain; TPDU 0x01: ACKD, TID 1
    body = bytes.fromhex("01 09 01 85 01 89 42 01 30 01")
    assert msg == body + fr.crc16_lon(body).to_bytes(2, "big")
    [ack] = b.receive(msg, 0.01)
    ackbody = bytes.fromhex("00 09 01 89 01 85 42 21")
    assert ack == ackbody + fr.crc16_lon(ackbody).to_bytes(2, "big")
    assert [(i.apdu, i.service, i.source, i.domain_index) for i in app_b.seen] == [
        (b"\x30\x01", Service.ACKD, SubnetNode(1, 5), 0)]
    assert a.receive(ack, 0.02) == []
    [done] = app_a.done
    assert done.ok and done.handle == 1
    assert a.next_deadline() is None


def test_request_response():
    a, app_a = make(1, 5)
    b, _ = make(1, 9)
    a.send(b"\x30\x07", SubnetNode(1, 9), 0.0)
    [req] = a.poll(0.0)
    assert pdu_of(req) == Spdu(fr.REQUEST, 1, b"\x30\x07")
    [resp] = b.receive(req, 0.0)
    assert decode(resp).npdu == Npdu(1, 9, SubnetNode(1, 5), Spdu(fr.RESPONSE, 1, b"\x00\x30\x07"),
                                     DOMAIN)
    a.receive(resp, 0.0)
    [done] = app_a.done
    assert done.ok and [r.apdu for r in done.responses] == [b"\x00\x30\x07"]
    assert done.responses[0].source == SubnetNode(1, 9)


def test_response_from_the_wrong_node_is_ignored():
    a, app_a = make(1, 5)
    b, _ = make(1, 9)
    c, _ = make(1, 10)
    a.send(b"\x30", SubnetNode(1, 9), 0.0)
    [req] = a.poll(0.0)
    forged = encode(Lpdu(Npdu(1, 10, SubnetNode(1, 5), Spdu(fr.RESPONSE, 1, b"\x01"), DOMAIN)))
    a.receive(forged, 0.0)
    assert app_a.done == []
    a.receive(b.receive(req, 0.0)[0], 0.0)
    assert app_a.done[0].ok


def test_unacknowledged_and_repeated():
    a, app_a = make(1, 5, retry_count=2)
    b, app_b = make(1, 9)
    a.send(b"\x30", Broadcast(0), 0.0, service=Service.UNACKD)
    [msg] = a.poll(0.0)
    assert decode(msg).npdu.pdu == fr.Apdu(b"\x30") and decode(msg).delta_backlog == 0
    assert app_a.done[0].ok
    b.receive(msg, 0.0)
    a.send(b"\x31", SubnetNode(1, 9), 0.0, service=Service.UNACKD_RPT)
    copies = a.poll(0.0)
    timer = transmit_timer_s(a.config.transmit_timer)
    copies += a.poll(timer)
    copies += a.poll(2 * timer)
    assert [decode(c).delta_backlog for c in copies] == [2, 0, 0]  # retries left, then 0
    assert not any(decode(c).alt_path for c in copies)  # never on the alternate path
    assert len(app_a.done) == 2 and a.next_deadline() is None
    for c in copies:
        assert b.receive(c, 0.1) == []
    assert [i.apdu for i in app_b.seen] == [b"\x30", b"\x31"]  # the repeats delivered once


# -- duplicates and receive timers -----------------------------------------------------------

def test_duplicate_request_gets_the_stored_response_and_runs_once():
    a, _ = make(1, 5)
    calls = []
    b, app_b = make(1, 9)
    app_b.answer = lambda ind: (calls.append(ind.apdu), bytes([len(calls)]))[1]
    a.send(b"\x30", SubnetNode(1, 9), 0.0)
    [req] = a.poll(0.0)
    first = b.receive(req, 0.0)
    again = b.receive(req, 0.5)
    assert first == again and pdu_of(first[0]).apdu == b"\x01"
    assert calls == [b"\x30"] and b.stats["duplicates"] == 1


def test_duplicate_ackd_is_acked_again_and_delivered_once():
    a, _ = make(1, 5)
    b, app_b = make(1, 9)
    a.send(b"\x30", SubnetNode(1, 9), 0.0, service=Service.ACKD)
    [msg] = a.poll(0.0)
    assert b.receive(msg, 0.0) == b.receive(msg, 0.1) != []
    assert len(app_b.seen) == 1


def test_receive_timer_expiry_makes_the_same_tid_new():
    a, _ = make(1, 5)
    b, app_b = make(1, 9, non_group_receive_timer=4)  # 512 ms
    assert receive_timer_s(4) == 0.512
    a.send(b"\x30", SubnetNode(1, 9), 0.0, service=Service.ACKD)
    [msg] = a.poll(0.0)
    b.receive(msg, 0.0)
    b.receive(msg, 0.5)  # duplicate; restarts the timer (expires at 1.012)
    b.receive(msg, 1.0)
    assert len(app_b.seen) == 1
    b.receive(msg, 1.6)  # the timer ran out: a new transaction
    assert len(app_b.seen) == 2


def test_unique_id_receive_timer_is_8192_ms():
    a, _ = make(1, 5)
    b, app_b = make(1, 9, non_group_receive_timer=0)  # 128 ms for other addressing
    a.send(b"\x30", NeuronId(b.config.neuron_id), 0.0, service=Service.ACKD)
    [msg] = a.poll(0.0)
    b.receive(msg, 0.0)
    b.receive(msg, 8.1)
    assert len(app_b.seen) == 1
    b.receive(msg, 16.4)
    assert len(app_b.seen) == 2


def test_group_receive_timer_comes_from_the_membership():
    a, _ = make(1, 5)
    b, app_b = make(1, 9, groups=[Membership(3, 0, 2, receive_timer=0)],
                    non_group_receive_timer=15)
    a.send(b"\x30", Group(3), 0.0, service=Service.ACKD)
    [msg] = a.poll(0.0)
    b.receive(msg, 0.0)
    b.receive(msg, 0.2)  # 128 ms group timer ran out
    assert len(app_b.seen) == 2


# -- transaction numbers ---------------------------------------------------------------------

def _finish_all(a, b, now):
    for data in a.poll(now):
        for answer in b.receive(data, now):
            a.receive(answer, now)


def test_tids_wrap_15_to_1_and_differ_per_destination():
    a, _ = make(1, 5)
    b, _ = make(1, 9)
    c, _ = make(1, 10)
    tids = []
    for k in range(16):
        a.send(b"\x30", SubnetNode(1, 9), 0.0, service=Service.ACKD)
        [msg] = a.poll(float(k))
        tids.append(pdu_of(msg).tid)
        a.receive(b.receive(msg, float(k))[0], float(k))
    assert tids == list(range(1, 16)) + [1]
    # one transaction to another node in between: the counter lands on the number last used
    # to 1/9 ... which is skipped
    a2, _ = make(1, 5)
    a2.send(b"\x30", SubnetNode(1, 9), 0.0, service=Service.ACKD)
    [m1] = a2.poll(0.0)
    a2.receive(b.receive(m1, 100.0)[0], 0.0)
    for _ in range(14):
        a2.send(b"\x30", SubnetNode(1, 10), 0.0, service=Service.ACKD)
        [m] = a2.poll(0.0)
        a2.receive(c.receive(m, 0.0)[0], 0.0)
    assert pdu_of(m).tid == 15
    a2.send(b"\x30", SubnetNode(1, 9), 0.0, service=Service.ACKD)
    [m] = a2.poll(0.0)
    assert pdu_of(m1).tid == 1 and pdu_of(m).tid == 2  # 1 was the last one to 1/9


def test_priority_has_its_own_counter_and_one_transaction_per_destination():
    a, app = make(1, 5)
    a.send(b"\x30", SubnetNode(1, 9), 0.0)
    a.send(b"\x31", SubnetNode(1, 9), 0.0)  # waits behind the first
    a.send(b"\x32", SubnetNode(1, 9), 0.0, priority=True)
    frames = a.poll(0.0)
    got = [(decode(f).priority, pdu_of(f).tid, pdu_of(f).apdu) for f in frames]
    assert got == [(False, 1, b"\x30"), (True, 1, b"\x32")]
    resp = encode(Lpdu(Npdu(1, 9, SubnetNode(1, 5), Spdu(fr.RESPONSE, 1, b"\x00"), DOMAIN)))
    a.receive(resp, 0.1)
    [nxt] = a.poll(0.1)
    assert (pdu_of(nxt).tid, pdu_of(nxt).apdu) == (2, b"\x31")
    assert [d.handle for d in app.done] == [1]


# -- retries, alternate path, delta backlog --------------------------------------------------

def test_retries_use_the_transmit_timer_and_the_alternate_path_on_the_last_two():
    a, app = make(1, 5, retry_count=3, transmit_timer=10)
    a.send(b"\x30", SubnetNode(1, 9), 0.0, service=Service.ACKD)
    timer = transmit_timer_s(10)
    assert timer == 0.512
    tries = a.poll(0.0)
    for k in range(1, 4):
        assert a.poll(k * timer - 0.001) == []
        tries += a.poll(k * timer)
    assert [decode(t).alt_path for t in tries] == [False, False, True, True]
    assert [decode(t).delta_backlog for t in tries] == [1, 1, 1, 1]
    assert len({pdu_of(t).tid for t in tries}) == 1
    assert app.done == [] and a.next_deadline() == pytest.approx(4 * timer)
    a.poll(4 * timer)
    assert not app.done[0].ok and app.done[0].reason == "timeout"
    assert a.stats["transaction_timeouts"] == 1 and a.stats["retries"] == 3


def test_delta_backlog_table():
    # section 4.6
    assert delta_backlog("unicast") == 1
    assert delta_backlog("group", first=True, group_size=5) == 5
    assert delta_backlog("group", first=False, group_size=5, outstanding=2) == 2
    assert delta_backlog("broadcast") == 15
    assert delta_backlog("broadcast", override=4) == 4
    assert delta_backlog("repeat", retries_left=3, first=True) == 3
    assert delta_backlog("repeat", retries_left=3, first=False) == 0
    assert delta_backlog("none") == 0


# -- groups ----------------------------------------------------------------------------------

def _group(size, member_numbers):
    nodes = []
    for member in member_numbers:
        nodes.append(make(1, 20 + member, groups=[Membership(7, member, size)]))
    return nodes


def test_group_ackd_with_a_lost_ack_sends_rem_msg():
    a, app = make(1, 5)
    members = _group(4, [0, 1, 2])
    a.send(b"\x30\x09", Group(7), 0.0, service=Service.ACKD, expected=3)
    [msg] = a.poll(0.0)
    assert decode(msg).delta_backlog == 3  # the group size on the first try
    acks = [n.receive(msg, 0.0) for n, _ in members]
    assert decode(acks[1][0]).npdu.dst == GroupAck(1, 5, 7, 1)  # 2b with the member number
    a.receive(acks[0][0], 0.0)
    a.receive(acks[2][0], 0.0)  # member 1's ACK is lost
    [retry] = a.poll(transmit_timer_s(a.config.transmit_timer))
    lpdu = decode(retry)
    assert lpdu.npdu.pdu == Tpdu(fr.REM_MSG, 1, b"\x30\x09", False, b"\x05")  # members 0, 2
    assert lpdu.delta_backlog == 1  # one member outstanding
    answers = [n.receive(retry, 0.6) for n, _ in members]
    assert answers[0] == [] and answers[2] == []  # they are in the M_List
    assert answers[1] == acks[1]  # re-ACK, not delivered again
    assert all(len(app_m.seen) == 1 for _, app_m in members)
    a.receive(answers[1][0], 0.6)
    assert app.done[0].ok and app.done[0].reason == "acknowledged"


def test_long_m_list_sends_reminder_then_the_message():
    a, app = make(1, 5, retry_count=1)
    members = _group(0, [0, 20, 30])
    a.send(b"\x30", Group(7), 0.0, service=Service.REQUEST, expected=3)
    [msg] = a.poll(0.0)
    answers = {m: n.receive(msg, 0.0) for (n, _), m in zip(members, [0, 20, 30])}
    a.receive(answers[0][0], 0.0)
    a.receive(answers[20][0], 0.0)  # member 30's response is lost
    reminder, again = a.poll(transmit_timer_s(a.config.transmit_timer))
    assert pdu_of(reminder) == Spdu(fr.REMINDER, 1, b"", False, bytes.fromhex("01 00 10"))
    assert pdu_of(again) == Spdu(fr.REQUEST, 1, b"\x30")
    for (node, app_m), m in zip(members, [0, 20, 30]):
        out = node.receive(reminder, 0.5) + node.receive(again, 0.5)
        assert out == ([] if m != 30 else answers[30])  # only 30 answers (its stored response)
        assert len(app_m.seen) == 1
    a.receive(answers[30][0], 0.5)
    [done] = app.done
    assert done.ok and sorted(r.member for r in done.responses) == [0, 20, 30]


def test_group_member_answers_from_2b_and_not_member_ignores():
    outsider, app_o = make(1, 30)
    a, _ = make(1, 5)
    a.send(b"\x30", Group(7), 0.0, expected=1)
    [msg] = a.poll(0.0)
    assert outsider.receive(msg, 0.0) == [] and app_o.seen == []


def test_group_expected_from_the_membership_size():
    a, app = make(1, 5, groups=[Membership(7, 0, 3)])  # size 3 counts the sender
    members = _group(3, [1, 2])
    a.send(b"\x30", Group(7), 0.0)
    [msg] = a.poll(0.0)
    assert decode(msg).delta_backlog == 2
    for node, _ in members:
        a.receive(node.receive(msg, 0.0)[0], 0.0)
    assert app.done[0].ok and len(app.done[0].responses) == 2


# -- broadcast -------------------------------------------------------------------------------

def test_broadcast_request_collects_every_response_until_the_last_timer():
    a, app = make(1, 5, retry_count=1)
    nodes = [make(1, n) for n in (9, 10, 11)]
    a.send(b"\x30", Broadcast(0), 0.0)
    [msg] = a.poll(0.0)
    assert decode(msg).delta_backlog == 15
    timer = transmit_timer_s(a.config.transmit_timer)
    a.receive(nodes[0][0].receive(msg, 0.0)[0], 0.0)
    a.receive(nodes[1][0].receive(msg, 0.0)[0], 0.0)
    [again] = a.poll(timer)  # the retry; 1/11 hears only this one
    for node, _ in nodes:
        for answer in node.receive(again, timer):
            a.receive(answer, timer)
    assert app.done == []
    a.poll(2 * timer)
    [done] = app.done
    assert done.ok
    assert sorted(r.source.node for r in done.responses) == [9, 10, 11]  # no duplicates
    assert all(len(n[1].seen) == 1 for n in nodes)


def test_broadcast_to_another_subnet_is_not_taken():
    a, _ = make(1, 5)
    b, app_b = make(1, 9)
    a.send(b"\x30", Broadcast(2), 0.0, service=Service.UNACKD)
    assert b.receive(a.poll(0.0)[0], 0.0) == [] and app_b.seen == []


# -- authentication --------------------------------------------------------------------------

def _literal_reply(key, challenge, data):
    """Section 4.5 step by step (the independent reference for auth.reply)."""
    out = list(challenge)
    remaining = len(data)
    iterations = 6 if len(key) == 6 else 18
    while remaining > 0:
        for i in range(iterations):
            for j in range(7, -1, -1):
                k = (j + 1) % 8
                if remaining > 0:
                    remaining -= 1
                    m = data[remaining]
                else:
                    m = 0
                n = ~(out[j] + j) & 0xFF
                if key[i % len(key)] & (1 << (7 - j)):
                    out[j] = (out[k] + m + (((n << 1) | (n >> 7)) & 0xFF)) & 0xFF
                else:
                    out[j] = (out[k] + m - (((n >> 1) | (n << 7)) & 0xFF)) & 0xFF
    return bytes(out)


@pytest.mark.parametrize("length", [1, 2, 47, 48, 49, 95, 96, 130])
def test_auth_reply_matches_the_literal_definition(length):
    rng = random.Random(length)
    apdu = rng.randbytes(length)
    challenge = rng.randbytes(8)
    assert reply(KEY6, challenge, apdu) == _literal_reply(KEY6, challenge, apdu)
    block = oma_address(domain=b"\x42", subnet=1, node=9)
    assert block == bytes.fromhex("42 00 00 00 00 00 01 01 09")
    assert (reply(KEY12, challenge, apdu, oma_address=block)
            == _literal_reply(KEY12, challenge, block + apdu))
    assert reply(KEY6, challenge, b"") == challenge


def test_oma_address_blocks():
    assert oma_address(neuron_id=bytes(range(6))) == bytes(range(6)) + b"\xff" * 3
    assert oma_address(domain=b"abc", group=5) == b"abc\x00\x00\x00\x03\x05\xff"


@pytest.mark.parametrize("key", [KEY6, KEY12], ids=["48-bit", "oma-96-bit"])
def test_authenticated_request(key):
    a, app_a = make(1, 5, key=key)
    b, app_b = make(1, 9, key=key, seed=7)
    a.send(b"\x30\x01", SubnetNode(1, 9), 0.0, authenticated=True)
    [req] = a.poll(0.0)
    assert pdu_of(req).auth
    [challenge] = b.receive(req, 0.0)
    ch = pdu_of(challenge)
    assert isinstance(ch, AuthPdu) and ch.fmt == 2 and ch.tid == 1
    assert ch.type == (fr.CHALLENGE_OMA if len(key) == 12 else fr.CHALLENGE)
    assert app_b.seen == []  # nothing delivered before the reply
    [answer] = a.receive(challenge, 0.0)
    rep = pdu_of(answer)
    block = oma_address(domain=DOMAIN, subnet=1, node=9) if len(key) == 12 else None
    assert rep.type == (fr.REPLY_OMA if len(key) == 12 else fr.REPLY)
    assert rep.data == _literal_reply(key, ch.data, (block or b"") + b"\x30\x01")
    assert decode(answer).npdu.dst == SubnetNode(1, 9)
    [resp] = b.receive(answer, 0.0)
    assert app_b.seen[0].authenticated
    assert b.receive(req, 0.1) == [resp]  # a duplicate: the stored response, no new challenge
    a.receive(resp, 0.0)
    assert app_a.done[0].ok and len(app_b.seen) == 1


@pytest.mark.parametrize("key", [KEY6, KEY12], ids=["48-bit", "oma-96-bit"])
def test_wrong_key_is_refused(key, caplog):
    wrong = bytes(len(key))
    a, app_a = make(1, 5, key=wrong, retry_count=1)
    b, app_b = make(1, 9, key=key)
    a.send(b"\x30", SubnetNode(1, 9), 0.0, authenticated=True, service=Service.ACKD)
    [msg] = a.poll(0.0)
    [challenge] = b.receive(msg, 0.0)
    [answer] = a.receive(challenge, 0.0)
    assert b.receive(answer, 0.0) == []
    assert app_b.seen == [] and b.stats["auth_failures"] == 1
    assert "authentication failed" in caplog.text
    # the retry is a duplicate of a failed transaction: dropped, the sender times out
    timer = transmit_timer_s(a.config.transmit_timer)
    for t in (timer, 2 * timer):
        for data in a.poll(t):
            assert b.receive(data, t) == []
    assert not app_a.done[0].ok and app_b.seen == []


def test_group_authentication_uses_2b_challenges():
    a, app = make(1, 5, key=KEY12)
    b, app_b = make(1, 9, key=KEY12, groups=[Membership(7, 4, 2)])
    a.send(b"\x30", Group(7), 0.0, service=Service.ACKD, authenticated=True, expected=1)
    [msg] = a.poll(0.0)
    [challenge] = b.receive(msg, 0.0)
    assert decode(challenge).npdu.dst == GroupAck(1, 5, 7, 4)
    assert pdu_of(challenge).fmt == 1 and pdu_of(challenge).group == 7
    [answer] = a.receive(challenge, 0.0)
    [ack] = b.receive(answer, 0.0)
    a.receive(ack, 0.0)
    assert app.done[0].ok and app_b.seen[0].authenticated


def test_broadcast_is_never_authenticated():
    a, _ = make(1, 5)
    b, app_b = make(1, 9)
    a.send(b"\x30", Broadcast(0), 0.0, authenticated=True)
    [msg] = a.poll(0.0)
    assert not pdu_of(msg).auth
    forged = encode(Lpdu(Npdu(1, 5, Broadcast(0), Spdu(fr.REQUEST, 3, b"\x30", True), DOMAIN)))
    [resp] = b.receive(forged, 0.0)  # answered, not challenged, and flagged unauthenticated
    assert pdu_of(resp).type == fr.RESPONSE and not app_b.seen[0].authenticated


def test_stale_challenge_is_ignored():
    a, _ = make(1, 5)
    forged = encode(Lpdu(Npdu(1, 9, SubnetNode(1, 5), AuthPdu(fr.CHALLENGE, 4, bytes(8)),
                              DOMAIN)))
    assert a.receive(forged, 0.0) == [] and a.stats["late"] == 1


# -- deferred responses ----------------------------------------------------------------------

def test_deferred_request_answers_on_respond_and_drops_duplicates_meanwhile():
    a, app_a = make(1, 5)
    b, app_b = make(1, 9)
    app_b.answer = lambda ind: DEFER
    a.send(b"\x30", SubnetNode(1, 9), 0.0)
    [req] = a.poll(0.0)
    assert b.receive(req, 0.0) == []
    assert b.receive(req, 0.1) == []  # pending: the duplicate is dropped
    assert b.next_deadline() is None
    b.respond(app_b.seen[0].ref, b"\x00late", 0.2)
    assert b.next_deadline() == 0.2
    [resp] = b.poll(0.2)
    assert pdu_of(resp) == Spdu(fr.RESPONSE, 1, b"\x00late")
    assert b.receive(req, 0.3) == [resp]  # now the stored response
    b.respond(app_b.seen[0].ref, b"\x00twice", 0.3)  # not pending any more: ignored
    assert b.poll(0.3) == []
    a.receive(resp, 0.3)
    assert app_a.done[0].responses[0].apdu == b"\x00late" and len(app_b.seen) == 1


def test_deferred_request_outlives_its_receive_timer():
    """A retry arriving after the receive timer while the answer is still being prepared (an
    LTEP hop, a delayed discovery answer) must not run the request a second time."""
    a, _ = make(1, 5)
    b, app_b = make(1, 9, non_group_receive_timer=4)  # 512 ms
    app_b.answer = lambda ind: DEFER
    a.send(b"\x30", SubnetNode(1, 9), 0.0)
    [req] = a.poll(0.0)
    b.receive(req, 0.0)
    assert b.receive(req, 2.0) == []  # long past 512 ms, still pending: dropped
    b.respond(app_b.seen[0].ref, b"\x00late", 2.5)
    [resp] = b.poll(2.5)
    assert b.receive(req, 2.9) == [resp]  # the timer restarted at the answer
    assert len(app_b.seen) == 1


# -- flex domain and the receive filter ------------------------------------------------------

def test_dx_trace_unconfigured_node_acks_a_wink_in_the_flex_domain():
    # section 11.3: lon-stack-dx (NID 80 00 00 0c 0f fe, unconfigured) gets an ACKD wink from
    # 1/5 by Neuron ID and ACKs it from 0/0x80: 00 08 00 80 01 85 23 + CRC 1917
    cfg = NodeConfig(neuron_id=bytes.fromhex("8000000c0ffe"), state=UNCONFIGURED)
    app = App()
    node = Node(cfg, app, rng=random.Random(1))
    [ack] = node.receive(bytes.fromhex("00 0c 01 85 00 80 00 00 0c 0f fe 03 70 4e 51"), 0.0)
    assert ack == bytes.fromhex("00 08 00 80 01 85 23 19 17")
    [ind] = app.seen
    assert ind.apdu == b"\x70" and ind.domain_index is None and ind.domain == b""


def test_flex_domain_rules():
    cfg = NodeConfig(neuron_id=bytes(range(6)), state=UNCONFIGURED)
    node = Node(cfg, App())
    other = b"\x99"

    def frame(dst, domain=other):
        return Lpdu(Npdu(1, 5, dst, fr.Apdu(b"\x30"), domain))

    assert node.addressed(frame(NeuronId(bytes(range(6)))))
    assert not node.addressed(frame(NeuronId(bytes(6))))
    assert node.addressed(frame(Broadcast(0)))  # unconfigured: broadcasts in any domain
    assert not node.addressed(frame(SubnetNode(1, 9)))
    assert not node.addressed(frame(Group(1)))
    configured, _ = make(1, 9)
    assert configured.addressed(frame(SubnetNode(1, 9), DOMAIN))
    assert not configured.addressed(frame(SubnetNode(1, 9), other))  # another domain
    assert not configured.addressed(frame(Broadcast(0), other))
    assert configured.addressed(frame(NeuronId(configured.config.neuron_id), other))
    assert configured.addressed(frame(Broadcast(1), DOMAIN))
    assert not configured.addressed(frame(Broadcast(2), DOMAIN))
    own = Lpdu(Npdu(1, 9, Broadcast(0), fr.Apdu(b"\x30"), DOMAIN))
    assert not configured.addressed(own)  # its own frame


def test_flex_send_and_its_response():
    # an unconfigured node asks by Neuron ID from 0/0 with no domain; the answer comes back to
    # 0/0 in that (empty) domain, from the answering node's 0/0 (it is unconfigured too)
    a = Node(NodeConfig(neuron_id=bytes(6), state=UNCONFIGURED), App(), tid_start=0)
    b_cfg = NodeConfig(neuron_id=bytes(range(6)), state=UNCONFIGURED)
    b_app = App()
    b = Node(b_cfg, b_app)
    a.send(b"\x61", NeuronId(bytes(range(6))), 0.0, domain_index=None)
    [req] = a.poll(0.0)
    assert req[2:4] == b"\x00\x80" and decode(req).npdu.domain == b""
    [resp] = b.receive(req, 0.0)
    assert decode(resp).npdu == Npdu(0, 0, SubnetNode(0, 0), Spdu(fr.RESPONSE, 1, b"\x00\x61"))
    a.receive(resp, 0.0)
    assert a.app.done[0].ok
    assert not a.addressed(decode(resp))  # nothing outstanding in the flex domain any more


def test_answer_in_the_domain_the_request_came_in():
    b, app_b = make(1, 9, domains=[Domain(b"\x01", 1, 9), Domain(b"abc", 4, 2)])
    req = encode(Lpdu(Npdu(4, 7, SubnetNode(4, 2), Spdu(fr.REQUEST, 2, b"\x30"), b"abc")))
    [resp] = b.receive(req, 0.0)
    assert decode(resp).npdu == Npdu(4, 2, SubnetNode(4, 7), Spdu(fr.RESPONSE, 2, b"\x00\x30"),
                                     b"abc")
    assert app_b.seen[0].domain_index == 1


# -- robustness ------------------------------------------------------------------------------

def test_bad_frames_are_counted_and_dropped(caplog):
    b, app_b = make(1, 9)
    caplog.set_level("DEBUG", logger="meter_emu.lon.node")
    assert b.receive(b"\x00\x30\x01", 0.0) == []
    assert b.receive(bytes.fromhex("00 30 01 82 03 51 c1 09"), 0.0) == []
    assert b.stats["transmission_errors"] == 1 and b.stats["dropped"] == 2
    assert "CRC" in caplog.text and app_b.seen == []


def test_application_errors_do_not_escape():
    a, _ = make(1, 5)
    b, app_b = make(1, 9)
    app_b.answer = lambda ind: 1 / 0
    a.send(b"\x30", SubnetNode(1, 9), 0.0)
    assert b.receive(a.poll(0.0)[0], 0.0) == []


def test_send_refuses_what_cannot_be_sent():
    a, _ = make(1, 5)
    with pytest.raises(ValueError):
        a.send(b"", SubnetNode(1, 9), 0.0)
    with pytest.raises(ValueError):
        a.send(b"\x30", SubnetNode(1, 200), 0.0)
    with pytest.raises(ValueError):
        a.send(b"\x30", SubnetNode(1, 9), 0.0, domain_index=1)


# -- timers for the applications above -------------------------------------------------------

def test_random_first_transaction_number():
    firsts = set()
    for seed in range(20):
        node = Node(NodeConfig(neuron_id=bytes(6), domains=[Domain(DOMAIN, 1, 5)],
                               state=CONFIGURED), App(), rng=random.Random(seed))
        node.send(b"\x30", SubnetNode(1, 9), 0.0)
        firsts.add(pdu_of(node.poll(0.0)[0]).tid)
    assert len(firsts) > 5 and firsts <= set(range(1, 16))


def test_call_at_runs_inside_poll():
    b, app_b = make(1, 9)
    app_b.answer = lambda ind: DEFER
    a, _ = make(1, 5)
    a.send(b"\x30", SubnetNode(1, 9), 0.0)
    b.receive(a.poll(0.0)[0], 0.0)
    ref = app_b.seen[0].ref
    b.call_at(0.25, lambda now: b.respond(ref, b"\x00", now))
    assert b.next_deadline() == 0.25
    assert b.poll(0.2) == []
    [resp] = b.poll(0.25)
    assert pdu_of(resp).type == fr.RESPONSE and b.next_deadline() is None


def test_long_timer_and_extended_last_try():
    a, app = make(1, 5)
    assert transmit_timer_s(0, long=True) == 4.096
    a.send(b"\x30", SubnetNode(1, 9), 0.0, retries=1, tx_timer=0, long_timer=True,
           extend_last_s=1.0)
    a.poll(0.0)
    assert a.next_deadline() == pytest.approx(4.096)
    a.poll(4.096)
    assert a.next_deadline() == pytest.approx(4.096 * 2 + 1.0)  # the last try waits longer
    a.poll(9.0)
    assert app.done == []
    a.poll(9.2)
    assert not app.done[0].ok


def test_unconfigured_node_uses_its_domain_table():
    # an uncommissioned OSGP meter sits in the discovery domain with an address of its own
    b, app_b = make(3, 4, state=UNCONFIGURED)
    req = encode(Lpdu(Npdu(1, 5, SubnetNode(3, 4), Spdu(fr.REQUEST, 2, b"\x30"), DOMAIN)))
    [resp] = b.receive(req, 0.0)
    assert decode(resp).npdu.src_node == 4 and app_b.seen[0].domain_index == 0


def test_respond_inside_indicate_then_defer():
    a, app_a = make(1, 5)
    b, app_b = make(1, 9)

    def answer(ind):
        b.respond(ind.ref, b"\x00now", 0.0)
        return DEFER

    app_b.answer = answer
    a.send(b"\x30", SubnetNode(1, 9), 0.0)
    req = a.poll(0.0)[0]
    assert b.receive(req, 0.0) == []
    [resp] = b.poll(0.0)
    assert pdu_of(resp).apdu == b"\x00now" and b.receive(req, 0.1) == [resp]
