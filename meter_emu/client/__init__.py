"""Clients for a meter's ports: what a head-end or a user's tool runs against meter_emu (or a
real meter). ``optical``: C12.18/PSEM; ``firmware``: code bank downloads on top of it."""
