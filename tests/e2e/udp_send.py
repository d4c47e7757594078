"""Sends a datagram to HOST PORT until a reply arrives (the server may still be starting) and
prints the reply. Usage: udp_send.py HOST PORT TEXT"""
import socket
import sys

host, port, text = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(1)
    for _ in range(30):
        s.sendto(text.encode(), (host, port))
        try:
            print(s.recvfrom(65536)[0].decode())
            break
        except socket.timeout:
            pass
    else:
        sys.exit("no reply")
