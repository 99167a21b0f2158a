"""The metering layer: what the meter measures and what it makes of it.

``quantities`` holds the injected physical quantities (values or generators, per phase);
``engine`` integrates them on the virtual clock into the registers (BT23), the present values
(BT28) and power quality; ``tou`` follows the BT54 calendar (tiers, seasons, DST, self reads);
``demand`` computes demands; ``recorder`` writes the load profile ring (BT64-BT67); ``triggers``
turns MQTT event triggers (cover open, tamper, outage, ...) into alarms and events.

Everything here is sans-I/O: functions take the meter and the virtual time ``now`` (or the
meter's UTC seconds ``utc`` where the name says so) and change the meter's state.
"""
