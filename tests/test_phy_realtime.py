"""The BPSK line against the wall clock (phy/realtime.py) and the topology file
(phy/topology.py).

RealtimeLine runs inside a private asyncio loop with a test gateway whose head-end node is the
real client (client/plc.py HeadEnd + PlcClient): a secured read goes over the simulated line
(real airtime, CSMA, modem) to a real MeterStation and back through ``deliver`` with the
strength and margin the concentrator measured, after ``persist``. The WAV dump demodulates back
to the frames that were on the line."""

from __future__ import annotations

import asyncio
import random
import wave

import numpy as np
import pytest

from meter_emu.client.plc import HeadEnd, PlcClient, head_end_config, meter_ref
from meter_emu.clock import ManualClock
from meter_emu.device.meter import Meter
from meter_emu.lon import frame
from meter_emu.lon.node import Node
from meter_emu.phy import topology as topo
from meter_emu.plc.station import MeterStation
from meter_emu.profile import fleet_profiles, load_profile

OMA_KEY = b"OMA-emu-dflt"  # profiles/default.toml keys.oma
IDS = [f"meter-{n}" for n in range(1, 11)]
STREET = topo.__file__.replace("meter_emu/phy/topology.py", "profiles/topology/street.toml")


# ---- the topology file ---------------------------------------------------------------------

def write(tmp_path, text: str):
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


def test_distance_model_and_explicit_overrides(tmp_path):
    path = write(tmp_path, """
[line]
tx_level_dbuv = 120
coupling_db = 20
db_per_100m = 10
[concentrator]
position_m = 50
[[meter]]
meter = 1
position_m = 250
[[meter]]
meter = "meter-2"
position_m = 650
attenuation_db = 33.5
[[link]]
between = [1, "meter-3"]
attenuation_db = 99
[noise]
floor_dbuv_hz = 3.0
interferers = [[80000, 60]]
""")
    t = topo.load_topology(path, IDS[:3])
    assert t.tx_level_dbuv == 120.0
    assert t.attenuation(topo.CONCENTRATOR, 0) == pytest.approx(20 + 10 * 200 / 100)
    assert t.attenuation(0, 1) == t.attenuation(1, 0) == pytest.approx(20 + 10 * 400 / 100)
    assert t.attenuation(1, topo.CONCENTRATOR) == 33.5   # the meter's own value wins
    assert t.attenuation(2, 0) == 99.0                    # so does a [[link]]
    assert t.noise.floor_dbuv_hz == 3.0 and t.noise.interferers == [(80000.0, 60.0)]


def test_random_positions_are_seeded_and_inside_the_range(tmp_path):
    path = write(tmp_path, "[random]\nposition_m = [100, 200]\n[line]\nseed = 4\n")
    one, two = topo.load_topology(path, IDS), topo.load_topology(path, IDS)
    assert one.positions == two.positions
    assert all(100 <= p <= 200 for p in one.positions)
    assert topo.load_topology(path, IDS, seed=5).positions != one.positions
    default = topo.default_topology(10)
    # no file: 0..400 m at 30 dB + 8 dB/100 m, so every meter is 30..62 dB from the concentrator
    assert all(30 <= default.attenuation(topo.CONCENTRATOR, i) <= 62 for i in range(10))
    assert default.positions == topo.default_topology(10).positions


def test_the_shipped_example_loads_and_puts_meter_10_out_of_reach():
    t = topo.load_topology(STREET, IDS)
    assert topo.load_topology("street", IDS) == t  # by name, as --topology street
    far = t.attenuation(topo.CONCENTRATOR, 9)
    assert far > 95 and all(t.attenuation(topo.CONCENTRATOR, i) < 70 for i in range(9))
    assert t.attenuation(4, 9) < 70  # meter 5 hears it: the repeater of the README example


@pytest.mark.parametrize("text, where", [
    ("[lines]\n", "lines: unknown section"),
    ("[line]\ncouplingdb = 3\n", "line.couplingdb: unknown key"),
    ("[line]\ncoupling_db = 'x'\n", "line.coupling_db: 'x' is not a number"),
    ("[line]\ndb_per_100m = -1\n", "line.db_per_100m: -1 is below 0"),
    ("[line]\nseed = 1.5\n", "line.seed"),
    ("[[meter]]\nmeter = 11\nposition_m = 3\n", "meter 11: the fleet has meters 1..10"),
    ("[[meter]]\nmeter = 'meter-99'\n", "no meter 'meter-99'"),
    ("[[meter]]\nmeter = 'concentrator'\n", "meter.meter: the concentrator"),
    ("[meter]\nmeter = 1\n", "meter: write [[meter]]"),
    ("[[link]]\nbetween = [1]\nattenuation_db = 3\n", "link.between: two ends"),
    ("[[link]]\nbetween = [1, 1]\nattenuation_db = 3\n", "two different ends"),
    ("[[link]]\nbetween = [1, 2]\n", "attenuation_db is missing"),
    ("[random]\nposition_m = [5, 1]\n", "random.position_m: 5 > 1"),
    ("[noise]\nloud = 1\n", "noise.loud: unknown key"),
    ("[noise]\ninterferers = [1, 2]\n", "noise.interferers: a list of [hz, dbuv] pairs"),
    ("[line\n", "not TOML"),
])
def test_bad_files_name_the_key(tmp_path, text, where):
    with pytest.raises(topo.TopologyError) as caught:
        topo.load_topology(write(tmp_path, text), IDS)
    assert where in str(caught.value) and str(tmp_path) in str(caught.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(topo.TopologyError, match="cannot read it"):
        topo.load_topology(tmp_path / "nope.toml", IDS)


# ---- the line in real time -----------------------------------------------------------------

class LoopGateway:
    """A gateway of a RealtimeLine that is also a HeadEnd driver: its node is the head-end's,
    and ``run_until`` runs the line's asyncio loop (real time) until the client is done."""

    name = "test-gateway"

    def __init__(self, line, loop: asyncio.AbstractEventLoop, persisted: list):
        self.line, self.loop, self.persisted = line, loop, persisted
        self.node = Node(head_end_config(), None, rng=random.Random(99), name="head-end")
        self.heard: list[tuple] = []  # (raw, now, info, persist calls so far, meters dirty)
        line.attach(self)

    def now(self) -> float:
        return self.line.now()

    def deliver(self, raw, now, info) -> None:
        dirty = any(s.meter.dirty for s in self.line.stations)
        self.heard.append((raw, now, info, len(self.persisted), dirty))
        for out in self.node.receive(raw, now, info):
            assert self.line.inject(out, self)

    def run_until(self, done, timeout: float) -> bool:
        async def pump():
            end = self.now() + timeout
            while not done() and self.now() < end:
                for out in self.node.poll(self.now()):
                    assert self.line.inject(out, self)
                await asyncio.sleep(0.005)
            return done()
        return self.loop.run_until_complete(pump())


class Rig:
    def __init__(self, count: int = 3, *, topology=None, dump=None):
        from meter_emu.phy.realtime import RealtimeLine

        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock()
        profile = load_profile("default")
        self.stations = [MeterStation(Meter(p, now=self.clock.now()), self.clock,
                                      rng=random.Random(i))
                         for i, p in enumerate(fleet_profiles(profile, count))]
        self.persisted: list[float] = []

        def persist():
            self.persisted.append(self.line.now())
            for s in self.stations:
                s.meter.dirty = False

        self.line = RealtimeLine(self.stations, persist, topology=topology, dump=dump, seed=3)
        self.on_air: list[bytes] = []
        self.line.line.taps.append(lambda raw, sender, start, end: self.on_air.append(raw))
        self.gateway = LoopGateway(self.line, self.loop, self.persisted)
        self.head_end = HeadEnd(self.gateway.node, self.gateway, timeout=20.0)
        self.client = PlcClient(self.head_end, OMA_KEY, rng=random.Random(5))

    def ref(self, index: int):
        return meter_ref(self.stations[index].meter.profile.identity.neuron_id)

    def close(self):
        self.line.close()
        self.loop.close()


@pytest.fixture
def rig():
    made = Rig()
    yield made
    made.close()


def test_a_read_crosses_the_line_and_comes_back_measured_after_persist(rig):
    meter = rig.stations[1].meter
    assert rig.client.read_table(rig.ref(1), 1) == meter.table_bytes(1, rig.clock.now())
    answers = [h for h in rig.gateway.heard if frame.decode(h[0]).npdu.src_node != 127]
    assert answers, "the meter's answer never reached the gateway"
    raw, now, info, persisted, dirty = answers[-1]
    # the read moved the meter's sequence number: saved before the answer left the line
    assert persisted >= 1 and not dirty
    expected = rig.line.topology.tx_level_dbuv - rig.line.topology.attenuation(
        topo.CONCENTRATOR, 1)
    assert info.strength_db == pytest.approx(expected, abs=1.5)  # tx level - attenuation
    assert info.margin_db is not None and info.margin_db > 10
    # real airtime: the exchange took at least the request's and the answer's time on air
    airtime = sum(rig.line.modem.airtime(len(f)) for f in rig.on_air)
    assert now >= airtime
    stats = rig.line.stats
    assert stats["sent"] == len(rig.on_air) >= 2
    assert stats["stations"]["meter-2"]["sent"] >= 1


def test_bad_frames_are_refused_and_the_line_keeps_working(rig, caplog):
    request = _a_frame()
    assert not rig.line.inject(b"", rig.gateway)
    assert not rig.line.inject(b"\x01\x02\x03", rig.gateway)
    assert not rig.line.inject(request[:-1] + bytes([request[-1] ^ 1]), rig.gateway)
    assert not rig.line.inject(request, object())  # not attached: no port to send from
    assert rig.line.stats["refused"] == 4
    assert "refused" in caplog.text
    assert rig.client.read_table(rig.ref(0), 1) == rig.stations[0].meter.table_bytes(
        1, rig.clock.now())


class BrokenGateway:
    name = "broken"

    def deliver(self, raw, now, info):
        raise RuntimeError("a gateway bug")


def test_a_failing_gateway_does_not_stop_the_line(rig, caplog):
    rig.line.attach(BrokenGateway())  # a second concentrator port, beside the test's
    ref, meter = rig.ref(2), rig.stations[2].meter
    assert rig.client.read_table(ref, 1) == meter.table_bytes(1, rig.clock.now())
    assert "gateway broken failed on a frame" in caplog.text
    assert rig.line.summary().startswith("3 meter(s)")


def test_an_answer_whose_state_cannot_be_saved_is_withheld(caplog):
    from meter_emu.client.plc import NoAnswer

    rig = Rig(count=1)
    try:
        def failing():
            raise OSError("disk full")
        rig.line.persist = failing
        rig.head_end.timeout = 3.0
        with pytest.raises(NoAnswer):
            rig.client.read_table(rig.ref(0), 1)  # the read dirties ET04.0: never told
        assert "the frame is withheld" in caplog.text
        assert rig.gateway.heard == []  # nothing the meter said left the line
    finally:
        rig.close()


def test_the_wav_dump_demodulates_back_to_the_frames(tmp_path):
    from meter_emu.phy.realtime import DUMP_FS, DUMP_GAP_S, DUMP_PEAK

    path = tmp_path / "line.wav"
    rig = Rig(count=2, dump=str(path))
    try:
        rig.client.read_table(rig.ref(0), 1)
    finally:
        rig.close()
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, DUMP_FS)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2") / DUMP_PEAK
    assert len(rig.on_air) >= 2
    modem, at, gap = rig.line.modem, 0, int(DUMP_FS * DUMP_GAP_S)
    for raw in rig.on_air:
        alt = bool(raw[0] & 0x40)
        n = len(modem.passband(raw, alt, fs=float(DUMP_FS)))
        got = modem.demodulate_passband(samples[at:at + n + gap], fs=float(DUMP_FS),
                                        alt_path=alt)
        assert got.lpdu == raw, got.reason
        at += n + gap
    assert at == len(samples)


def _a_frame() -> bytes:
    """A valid LPDU: an unacknowledged APDU from the head-end's address to 1/1."""
    return frame.encode(frame.Lpdu(frame.Npdu(255, 127, frame.SubnetNode(1, 1),
                                              frame.Apdu(b"\x3f\x00\x01"))))
