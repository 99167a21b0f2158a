"""Where the meters sit on the simulated power line: ``meter-emu run --phy bpsk --topology FILE``.

designed: the real attenuation of a feeder depends on its cables, branches and loads, none of
which a fleet profile knows, so the model is one line (a feeder) with the data concentrator and
every meter at a position along it, in metres. Every link costs a fixed coupling loss plus a
loss per 100 m of feeder between its two ends::

    attenuation(a, b) = coupling_db + db_per_100m * |position(a) - position(b)| / 100

so a meter half-way out hears both the concentrator and a far meter, which is what makes
repeating (LTEP) worth having. Meters without a position are placed uniformly at random in
``[random] position_m`` with a seeded generator (the same file and seed give the same street);
without a file, every meter is placed that way with the defaults below (30..62 dB from the
concentrator: everyone is heard directly). Explicit values override the model: a meter's
``attenuation_db`` (to the concentrator), and ``[[link]]`` entries between any two ends.
``[noise]`` takes the fields of phy/line.Noise. Example (profiles/topology/street.toml, also
reachable as ``--topology street``)::

    [line]
    tx_level_dbuv = 122.0     # transmit level of every modem
    coupling_db = 30.0        # loss on every link
    db_per_100m = 8.0         # loss along the feeder
    seed = 7                  # random positions (and the line's noise)

    [noise]                   # phy/line.Noise fields
    floor_dbuv_hz = 0.0

    [concentrator]
    position_m = 0.0

    [random]
    position_m = [0.0, 400.0]

    [[meter]]
    meter = 10                # 1-based index in the fleet, or its id ("meter-10")
    position_m = 1000.0       # out of the concentrator's reach; meter 5 can repeat for it

    [[link]]
    between = ["concentrator", 3]
    attenuation_db = 90.0

A bad file gives a TopologyError naming the file and the key; nothing else is raised.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..ports.transport import PortUrlError
from .line import Noise

#: the concentrator's end in ``Topology.attenuation`` (meters are 0-based fleet indices)
CONCENTRATOR = -1

_SECTIONS = {
    "line": {"tx_level_dbuv", "coupling_db", "db_per_100m", "seed"},
    "noise": {f.name for f in dataclasses.fields(Noise)},
    "concentrator": {"position_m"},
    "random": {"position_m"},
    "meter": {"meter", "position_m", "attenuation_db"},
    "link": {"between", "attenuation_db"},
}


class TopologyError(PortUrlError):
    """A topology file that cannot be used; the message names the file and the key."""


@dataclass
class Topology:
    """The line of one fleet, resolved: every attenuation is known."""
    positions: list[float]                     # metres, per meter (fleet order)
    concentrator_m: float = 0.0
    tx_level_dbuv: float = 122.0
    coupling_db: float = 30.0
    db_per_100m: float = 8.0
    seed: int = 1
    noise: Noise = field(default_factory=Noise)
    links: dict[tuple[int, int], float] = field(default_factory=dict)  # explicit, a < b

    def attenuation(self, a: int, b: int) -> float:
        """dB between two ends (meter indices or CONCENTRATOR), both ways alike."""
        key = (min(a, b), max(a, b))
        if key in self.links:
            return self.links[key]
        pa = self.concentrator_m if a == CONCENTRATOR else self.positions[a]
        pb = self.concentrator_m if b == CONCENTRATOR else self.positions[b]
        return self.coupling_db + self.db_per_100m * abs(pa - pb) / 100.0


def default_topology(count: int, seed: int | None = None) -> Topology:
    """The street without a file: ``count`` meters at random in 0..400 m (seeded)."""
    topo = Topology(positions=[], seed=1 if seed is None else seed)
    rng = random.Random(topo.seed)
    topo.positions = [rng.uniform(0.0, 400.0) for _ in range(count)]
    return topo


def resolve(name_or_path) -> Path:
    """A file path, or the name of a shipped example (``street``: profiles/topology/)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    shipped = importlib.resources.files("meter_emu.profiles").joinpath(f"topology/{path}.toml")
    return Path(str(shipped)) if shipped.is_file() else path


def load_topology(path, meter_ids: list[str], seed: int | None = None) -> Topology:
    """Read ``path`` (or a shipped example's name) for a fleet whose meters are ``meter_ids``
    (fleet order). ``seed`` overrides the file's."""
    name = str(path)
    try:
        doc = tomllib.loads(resolve(path).read_text())
    except OSError as exc:
        raise TopologyError(f"--topology {name}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TopologyError(f"--topology {name}: not TOML ({exc})") from None
    return _Parser(name, meter_ids).parse(doc, seed)


class _Parser:
    def __init__(self, name: str, meter_ids: list[str]):
        self.name = name
        self.ids = {mid: index for index, mid in enumerate(meter_ids)}
        self.count = len(meter_ids)

    def fail(self, where: str, why: str):
        raise TopologyError(f"--topology {self.name}: {where}: {why}")

    def parse(self, doc: dict, seed: int | None) -> Topology:
        for section, value in doc.items():
            if section not in _SECTIONS:
                self.fail(section, f"unknown section (use {', '.join(sorted(_SECTIONS))})")
            tables = value if section in ("meter", "link") else [value]
            if not isinstance(value, list if section in ("meter", "link") else dict):
                self.fail(section, "write [[meter]] / [[link]] entries" if section in
                          ("meter", "link") else f"write it as a [{section}] table")
            for table in tables:
                if not isinstance(table, dict):
                    self.fail(section, "each entry is a table")
                unknown = set(table) - _SECTIONS[section]
                if unknown:
                    self.fail(f"{section}.{sorted(unknown)[0]}", "unknown key (use "
                              f"{', '.join(sorted(_SECTIONS[section]))})")
        line = doc.get("line", {})
        topo = Topology(positions=[])
        for key in ("tx_level_dbuv", "coupling_db", "db_per_100m"):
            if key in line:
                setattr(topo, key, self.number(line[key], f"line.{key}",
                                               low=0.0 if key != "tx_level_dbuv" else None))
        topo.seed = seed if seed is not None else self.integer(line.get("seed", 1), "line.seed")
        topo.noise = self.noise(doc.get("noise", {}))
        topo.concentrator_m = self.number(doc.get("concentrator", {}).get("position_m", 0.0),
                                          "concentrator.position_m")
        low, high = self.span(doc.get("random", {}).get("position_m", [0.0, 400.0]))
        given: dict[int, float] = {}
        for entry in doc.get("meter", []):
            index = self.end(entry.get("meter"), "meter.meter")
            if index == CONCENTRATOR:
                self.fail("meter.meter", "the concentrator is placed under [concentrator]")
            if "position_m" in entry:
                given[index] = self.number(entry["position_m"], "meter.position_m")
            if "attenuation_db" in entry:
                topo.links[(CONCENTRATOR, index)] = self.number(
                    entry["attenuation_db"], "meter.attenuation_db", low=0.0)
        rng = random.Random(topo.seed)
        topo.positions = [given[i] if i in given else rng.uniform(low, high)
                          for i in range(self.count)]
        for entry in doc.get("link", []):
            between = entry.get("between")
            if not isinstance(between, list) or len(between) != 2:
                self.fail("link.between", "two ends: [\"concentrator\" or a meter, a meter]")
            a, b = (self.end(end, "link.between") for end in between)
            if a == b:
                self.fail("link.between", "a link joins two different ends")
            if "attenuation_db" not in entry:
                self.fail("link", "attenuation_db is missing")
            topo.links[(min(a, b), max(a, b))] = self.number(
                entry["attenuation_db"], "link.attenuation_db", low=0.0)
        return topo

    def noise(self, table: dict) -> Noise:
        values = {}
        for key, value in table.items():
            if key == "interferers":
                if not isinstance(value, list) or not all(
                        isinstance(t, list) and len(t) == 2 for t in value):
                    self.fail("noise.interferers", "a list of [hz, dbuv] pairs")
                values[key] = [(self.number(hz, "noise.interferers", low=0.0),
                                self.number(db, "noise.interferers")) for hz, db in value]
            elif key == "mains_sync_dbuv" and value in ("off", "none"):
                values[key] = None
            else:
                values[key] = self.number(value, f"noise.{key}",
                                          low=0.0 if key in ("impulses_per_s", "impulse_s",
                                                             "mains_hz") else None)
        return Noise(**values)

    def end(self, value, where: str) -> int:
        """A meter (1-based index or id) or "concentrator" -> CONCENTRATOR or a 0-based index."""
        if value == "concentrator":
            return CONCENTRATOR
        if isinstance(value, int) and not isinstance(value, bool):
            if 1 <= value <= self.count:
                return value - 1
            self.fail(where, f"meter {value}: the fleet has meters 1..{self.count}")
        elif isinstance(value, str):
            if value in self.ids:
                return self.ids[value]
            known = ", ".join(list(self.ids)[:3])
            self.fail(where, f"no meter {value!r} in the fleet ({known} ...)")
        self.fail(where, f"{value!r}: a meter number (1-based), a meter id or \"concentrator\"")

    def number(self, value, where: str, low: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"{value!r} is not a number")
        if value != value or value in (float("inf"), float("-inf")):
            self.fail(where, "a finite number")
        if low is not None and value < low:
            self.fail(where, f"{value} is below {low:g}")
        return float(value)

    def integer(self, value, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"{value!r} is not an integer")
        return value

    def span(self, value) -> tuple[float, float]:
        if not isinstance(value, list) or len(value) != 2:
            self.fail("random.position_m", "[low, high] in metres")
        low, high = (self.number(v, "random.position_m") for v in value)
        if low > high:
            self.fail("random.position_m", f"{low:g} > {high:g}")
        return low, high
