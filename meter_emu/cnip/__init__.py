"""CN/IP (ISO/IEC 14908-4): 14908.1 LPDUs carried in UDP with the 20-byte CN/IP header, the
fleet's first PLC channel; a pcap writer so tshark can decode what went over it."""
