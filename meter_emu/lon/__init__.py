"""ISO/IEC 14908.1 layers 2-6, sans-I/O (DESIGN.md section 2): frames (frame.py), one node's
network, transport, session and authentication layers (node.py), network management and
diagnostics (netmgmt.py), the LTEP proxy format used for repeating (ltep.py) and an in-memory
channel that joins nodes in virtual time (channel.py). Facts: reference/lower-layers.md."""
