"""Meter profiles (TOML). Installed as the package ``meter_emu.profiles`` so that ``--profile NAME``
finds them from any install; see meter_emu/profile.py."""
