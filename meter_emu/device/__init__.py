"""The device model: a meter's state, keys and table services, with no I/O (sans-I/O)."""
