"""The simulated BPSK line (phy/line.py) driven against the wall clock: ``meter-emu run --phy
bpsk``. It offers gateways (the CN/IP endpoint, the serial NI) the calls of phy/ideal.py's
IdealLine, so they do not know which line they are on.

* The meters' stations are 14908.1 nodes on a PowerLine, placed by a topology (phy/topology.py:
  a file, or a seeded random street).
* Each gateway gets its own data-concentrator port on the line, at the concentrator's position:
  what the gateway injects is queued on that port's MAC, so an external head-end sees PLC
  airtime, CSMA delays, collisions and losses; every frame the port decodes goes to
  ``gateway.deliver(raw, now, info)`` with the strength and margin it measured.
* Line time is real seconds since the line was made. One asyncio timer sleeps until
  ``PowerLine.next_event()`` and advances the line to the wall clock; injecting or kicking
  advances it first and re-arms the timer. The meters' stack timers therefore count real
  seconds, as the head-end's do; their virtual clock is for table operations only.
* State a client is told about is persisted first: before a frame reaches a gateway, a dirty
  meter is saved (as IdealLine does); if saving fails the frame is withheld.
* ``dump``: every frame put on the line, as passband samples (``Modem.passband``, 480 kHz) in a
  mono int16 WAV file written as the frames go (nothing held in memory). designed: the file
  is not a recording of the line's time axis: frames follow each other with a short fixed gap
  of silence (``DUMP_GAP_S``), the idle time between them is left out, and colliding frames
  appear one after the other. Each frame is scaled alike (``DUMP_PEAK``), so levels compare.
"""

from __future__ import annotations

import asyncio
import logging
import time
import wave
from typing import Callable

import numpy as np

from ..lon import frame
from ..lon.node import LinkInfo
from ..ports.transport import PortUrlError
from . import topology as topo_mod
from .line import PowerLine
from .modem import Modem

log = logging.getLogger(__name__)

#: WAV sample rate of the dump (Modem.passband's default)
DUMP_FS = 480_000
#: silence between two frames in the dump, seconds
DUMP_GAP_S = 0.005
#: int16 value a unit-amplitude passband sample is written as (headroom for the pulse peaks)
DUMP_PEAK = 8192.0
#: the timer never sleeps less than this, so a line that keeps an event in the past cannot spin
MIN_SLEEP_S = 0.0005


class WavDump:
    """Frames as passband samples, appended to a WAV file as they come."""

    def __init__(self, path, modem: Modem, fs: int = DUMP_FS):
        self.modem = modem
        self.fs = fs
        self.frames = 0
        self._gap = np.zeros(int(fs * DUMP_GAP_S), dtype="<i2").tobytes()
        self._file = open(path, "wb")  # noqa: SIM115 - kept for the dump's lifetime
        self._wav = wave.open(self._file, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(fs)

    def write(self, raw: bytes, alt_path: bool) -> None:
        samples = np.asarray(self.modem.passband(raw, alt_path, fs=float(self.fs)))
        ints = np.clip(np.rint(samples * DUMP_PEAK), -32768, 32767).astype("<i2")
        self._wav.writeframes(ints.tobytes() + self._gap)
        self.frames += 1

    def close(self) -> None:
        if self._wav is not None:
            try:
                self._wav.close()
            finally:
                self._file.close()
                self._wav = None


class RealtimeLine:
    """``stations`` (plc/station.py MeterStations) on a PowerLine paced by the wall clock.
    ``topology``: a TOML file path or a phy/topology.Topology (None: a random street);
    ``dump``: a WAV path; ``seed``: the topology's random positions and the line's noise."""

    def __init__(self, stations, persist: Callable[[], None], *, topology=None,
                 dump: str | None = None, seed: int | None = None,
                 clock: Callable[[], float] | None = None):
        self.stations = list(stations)
        self.persist = persist
        ids = [station.meter.id for station in self.stations]
        if topology is None:
            topology = topo_mod.default_topology(len(ids), seed)
        elif not isinstance(topology, topo_mod.Topology):
            topology = topo_mod.load_topology(topology, ids, seed)
        self.topology = topology
        self.modem = Modem()
        self.line = PowerLine(modem=self.modem, noise=topology.noise,
                              tx_level_dbuv=topology.tx_level_dbuv, seed=topology.seed)
        self.indices = [self.line.attach(station.node, name=station.meter.id)
                        for station in self.stations]
        for i, a in enumerate(self.indices):
            for j in range(i + 1, len(self.indices)):
                self.line.set_attenuation(a, self.indices[j], topology.attenuation(i, j))
        self._wall = clock or time.monotonic
        self._start = self._wall()
        self.gateways: dict[int, tuple[object, int]] = {}  # id(gateway) -> (gateway, port)
        self.dump: WavDump | None = None
        if dump:
            try:
                self.dump = WavDump(dump, self.modem)
            except OSError as exc:
                raise PortUrlError(f"--phy-dump {dump}: cannot write it ({exc.strerror})"
                                   ) from None
            self.line.taps.append(self._tap)
        self.refused = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False

    # -- time -------------------------------------------------------------------------------

    def now(self) -> float:
        """Line time: real seconds since the line was made."""
        return self._wall() - self._start

    def _catch_up(self) -> None:
        now = self.now()
        if now > self.line.now:
            self.line.advance(now)

    def _arm(self) -> None:
        if self._closed:
            return
        try:
            at = self.line.next_event()
        except Exception:  # noqa: BLE001 - the line's bug must not stop the process
            log.exception("the power line failed to name its next event")
            at = None
        if at is None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = None, None
            return
        if self._timer is not None and self._timer_at == at:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): advance() is theirs to call
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_later(max(MIN_SLEEP_S, at - self.now()), self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, None
        try:
            self._catch_up()
        except Exception:  # noqa: BLE001 - the timer must keep running
            log.exception("the power line failed while advancing; it keeps running")
        self._arm()

    # -- gateways ---------------------------------------------------------------------------

    def attach(self, gateway) -> None:
        """A data-concentrator port for ``gateway`` at the concentrator's position."""
        if id(gateway) in self.gateways:
            return
        name = f"concentrator:{getattr(gateway, 'name', None) or type(gateway).__name__}"
        port = self.line.attach_port(lambda raw, now, info, g=gateway: self._heard(g, raw, now,
                                                                                   info),
                                     name=name)
        for i, index in enumerate(self.indices):
            self.line.set_attenuation(port, index,
                                      self.topology.attenuation(topo_mod.CONCENTRATOR, i))
        for _, other in self.gateways.values():
            self.line.set_attenuation(port, other, 0.0)  # side by side in the substation
        self.gateways[id(gateway)] = (gateway, port)

    def detach(self, gateway) -> None:
        """The gateway hears no more; its port stays on the line, silent (ports are not
        removable from a PowerLine)."""
        self.gateways.pop(id(gateway), None)

    def _heard(self, gateway, raw: bytes, now: float, info: LinkInfo) -> None:
        if id(gateway) not in self.gateways:
            return
        try:
            if any(station.meter.dirty for station in self.stations):
                self.persist()
        except Exception:  # noqa: BLE001 - the answer waits for a state we could not save
            log.exception("persisting before an answer failed; the frame is withheld")
            return
        try:
            gateway.deliver(raw, now, info)
        except Exception:  # noqa: BLE001 - one gateway must not stop the line
            log.exception("gateway %s failed on a frame", getattr(gateway, "name", gateway))

    def inject(self, raw: bytes, source=None) -> bool:
        """Queue ``raw`` (LPDU with CRC) on ``source``'s concentrator MAC; False (logged) when
        it does not decode or ``source`` is not attached."""
        try:
            frame.decode(raw)
        except frame.FrameError as exc:
            self.refused += 1
            log.info("frame from %s refused: %s", getattr(source, "name", source), exc)
            return False
        entry = self.gateways.get(id(source))
        if entry is None:
            self.refused += 1
            log.warning("frame from %s refused: not attached to the line",
                        getattr(source, "name", source))
            return False
        try:
            self._catch_up()
            self.line.send(entry[1], raw)
        except Exception:  # noqa: BLE001
            log.exception("the power line failed on a frame from %s; dropped",
                          getattr(source, "name", source))
            return False
        self._arm()
        return True

    def press_service_pin(self, station) -> None:
        """The station's service pin: its node broadcasts the service pin message now."""
        from ..lon import netmgmt

        self._catch_up()
        netmgmt.service_pin(station, self.line.now)
        self.kick(station)

    def kick(self, station=None) -> None:
        """Poll ``station`` (or all) soon: after code outside the line called its ``send``."""
        try:
            self._catch_up()
            targets = self.stations if station is None else [station]
            for one in targets:
                self.line.wake(self.indices[self.stations.index(one)])
        except Exception:  # noqa: BLE001
            log.exception("kick failed")
        self._arm()

    # -- taps, statistics, end ----------------------------------------------------------------

    def _tap(self, raw: bytes, sender: int, start: float, end: float) -> None:
        if self.dump is None:
            return
        try:
            self.dump.write(raw, bool(raw and raw[0] & 0x40))  # L2 alternate-path bit
        except Exception:  # noqa: BLE001 - a full disk must not stop the line
            log.exception("--phy-dump: writing a frame failed; the dump stops")
            self.dump.close()
            self.dump = None

    def summary(self) -> str:
        """One line for the start-up banner: how far the meters are from the concentrator."""
        dbs = [self.topology.attenuation(topo_mod.CONCENTRATOR, i)
               for i in range(len(self.stations))]
        if not dbs:
            return "no meters on the line"
        far = max(range(len(dbs)), key=dbs.__getitem__)
        return (f"{len(dbs)} meter(s) {min(dbs):.0f}..{max(dbs):.0f} dB from the data "
                f"concentrator (farthest {self.stations[far].meter.id}), transmit level "
                f"{self.topology.tx_level_dbuv:g} dBuV; airtime {self.modem.airtime(16):.3f} s "
                f"(16-byte frame) .. {self.modem.airtime(111):.3f} s (111 bytes)")

    @property
    def stats(self) -> dict:
        """Counters summed over the line's stations, plus ``stations``: each one's by name."""
        per = {name: vars(s).copy() for name, s in zip(self.line.names, self.line.stats)}
        total: dict = {}
        for counters in per.values():
            for key, value in counters.items():
                total[key] = total.get(key, 0) + value
        total["refused"] = self.refused
        total["stations"] = per
        return total

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.dump is not None:
            self.dump.close()
            self.dump = None
