"""Ports: how clients reach a meter. Each port is a sans-I/O protocol object plus an asyncio
adapter (transport.py) that moves bytes between it and a pty, a serial device or a socket."""
