"""Holds one keep-alive HTTP connection to 127.0.0.1:PORT across a
checkpoint: sends a request, reads the answer, prints READY, then waits
until the file GO exists and sends a second request on the same socket,
printing the status line it gets (or the error)."""
import os
import socket
import sys
import time

port, go = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"


def ask():
    s.sendall(req)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return "closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        body += s.recv(4096)
    return head.split(b"\r\n")[0].decode()


print(ask(), flush=True)
print("READY", flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
try:
    print(ask(), flush=True)
except OSError as e:
    print(f"error {e}", flush=True)
