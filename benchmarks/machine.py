"""What every benchmark prints first: the machine and the Python it ran on (one copy, in the
package: ``meter-emu bench`` prints the same lines)."""

from meter_emu.fleet.bench import cpu_model, describe  # noqa: F401
