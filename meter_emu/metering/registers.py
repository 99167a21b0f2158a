"""Energy registers: the BT23 summations, in total and per tier, as the engine fills them.

Totals live in ``meter.state.registers`` by name (the profile's ``[registers]`` start values);
tier values and the sub-unit remainders live in the ``energy`` subsystem. Energy arrives in
fractions (Wh of a 0.1 s step); only whole units reach a register, and each whole unit goes to
the total and to the tier in force, so the tiers always add up to what was metered while tiers
were kept. Values wrap like the INT32 (NI_FMAT1) registers they are.
"""

from __future__ import annotations

#: BT22 summation sources in BT23 order (MEP p.205-208): Fwd, Rev, Import, Export varh, power
#: off seconds, outage count, Fwd+Rev, Fwd-Rev, pulse inputs 1/2, error counter, Q1..Q4 varh.
SUMMATION_SOURCES = (0, 1, 2, 3, 4, 5, 6, 7, 26, 27, 28, 108, 109, 110, 111)
#: the stored registers by BT16 source ID (6 and 7 are computed from 0 and 1)
NAMES = {0: "fwd_active_wh", 1: "rev_active_wh", 2: "import_reactive_varh",
         3: "export_reactive_varh", 4: "power_outage_seconds", 5: "power_outage_count",
         26: "pulse_input_1", 27: "pulse_input_2", 28: "error_counter", 108: "q1_reactive_varh",
         109: "q2_reactive_varh", 110: "q3_reactive_varh", 111: "q4_reactive_varh"}
#: outage, pulse and error counters have no tier values (OPG p.25)
NOT_IN_TIERS = frozenset({4, 5, 26, 27, 28})
WRAP = 2**31
#: a sum within this of a whole unit is that unit: 60.000000000000014 degrees (pf 0.5) must not
#: make 1150 Wh read 1149 (the remainder may then be a hair below 0)
ROUNDING = 1e-6
ENERGY = "energy"


def value(meter, source: int) -> int:
    """A summation's total as BT23 shows it (6: Fwd+Rev, 7: Fwd-Rev clamped at 0)."""
    registers = meter.state.registers
    if source == 6:
        return (registers["fwd_active_wh"] + registers["rev_active_wh"]) % WRAP
    if source == 7:
        return max(0, registers["fwd_active_wh"] - registers["rev_active_wh"])
    return registers[NAMES[source]]


def tier_value(meter, tier: int, source: int) -> int:
    """A summation's value in tier ``tier`` (0-based); 0 for the untiered counters."""
    if source in NOT_IN_TIERS:
        return 0
    tiers = meter.state.subsystems.get(ENERGY, {}).get("tiers", {})
    values = tiers.get(str(tier), {})
    if source in (6, 7):
        fwd, rev = values.get("0", 0), values.get("1", 0)
        return (fwd + rev) % WRAP if source == 6 else max(0, fwd - rev)
    return values.get(str(source), 0)


#: the eleven summations of one tier in the tier source IDs 29-72 (T0 = 29..39, T1 = 40..50, ...;
#: MEP p.203-206): Fwd, Rev, Import, Export, power off minutes, outage count, Fwd+Rev, Fwd-Rev,
#: pulse inputs 1/2, error counter
TIER_ITEMS = (0, 1, 2, 3, 4, 5, 6, 7, 26, 27, 28)
FIRST_TIER_SOURCE, LAST_TIER_SOURCE = 29, 72


def summation_sources(meter) -> tuple[int, ...]:
    """BT22's summation sources, the order of BT23's summations (fixed: the first BT21.3 of
    ``SUMMATION_SOURCES``)."""
    return SUMMATION_SOURCES[:meter.dims.summations]


def summation_values(meter) -> list[int]:
    """BT23's total summations in BT22 order."""
    return [value(meter, s) for s in summation_sources(meter)]


def tier_summation_values(meter, tier: int) -> list[int]:
    """BT23's summations of tier ``tier`` (0-based) in BT22 order (0 for the untiered ones)."""
    return [tier_value(meter, tier, s) for s in summation_sources(meter)]


def tier_source(source: int) -> tuple[int, int] | None:
    """(tier, summation source) of a tier source ID 29..72, else None."""
    if not FIRST_TIER_SOURCE <= source <= LAST_TIER_SOURCE:
        return None
    tier, item = divmod(source - FIRST_TIER_SOURCE, len(TIER_ITEMS))
    return tier, TIER_ITEMS[item]


def totals(meter, count: int) -> list[int]:
    """The first ``count`` summations in BT22 order."""
    return [value(meter, s) for s in SUMMATION_SOURCES[:count]]


def tier_totals(meter, tier: int, count: int) -> list[int]:
    return [tier_value(meter, tier, s) for s in SUMMATION_SOURCES[:count]]


_KEYS = {source: str(source) for source in NAMES}  # JSON keys, made once (add is per step)


def add(meter, tier: int, amounts: dict[int, float]) -> None:
    """Add energy (or counts) by source ID; whole units reach the total and tier ``tier``."""
    energy = meter.state.subsystems.get(ENERGY)
    if energy is None:
        energy = meter.subsystem(ENERGY, tiers={}, fraction={})
    fraction = energy["fraction"]
    registers = meter.state.registers
    tier_values = None
    for source, amount in amounts.items():
        if not amount:
            continue
        key = _KEYS[source]
        held = fraction.get(key, 0.0) + amount
        whole = int(held + ROUNDING)
        fraction[key] = held - whole
        if not whole:
            continue
        name = NAMES[source]
        registers[name] = (registers[name] + whole) % WRAP
        if source not in NOT_IN_TIERS:
            if tier_values is None:
                tier_values = energy["tiers"].setdefault(str(tier), {})
            tier_values[key] = (tier_values.get(key, 0) + whole) % WRAP
    meter.dirty = True


def write_totals(meter, values: dict[str, int]) -> None:
    """A client's BT23 write sets totals by name (the tiers keep what they metered)."""
    meter.state.registers.update(values)
    meter.dirty = True
