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


def totals(meter, count: int) -> list[int]:
    """The first ``count`` summations in BT22 order."""
    return [value(meter, s) for s in SUMMATION_SOURCES[:count]]


def tier_totals(meter, tier: int, count: int) -> list[int]:
    return [tier_value(meter, tier, s) for s in SUMMATION_SOURCES[:count]]


def add(meter, tier: int, amounts: dict[int, float]) -> None:
    """Add energy (or counts) by source ID; whole units reach the total and tier ``tier``."""
    energy = meter.subsystem(ENERGY, tiers={}, fraction={})
    fraction = energy["fraction"]
    registers = meter.state.registers
    tier_values = None
    for source, amount in amounts.items():
        if not amount:
            continue
        key = str(source)
        held = fraction.get(key, 0.0) + amount
        whole = int(held)
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
