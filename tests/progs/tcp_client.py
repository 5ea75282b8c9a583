"""A TCP client that keeps its connections across a container checkpoint.

  tcp_client.py http HOST PORT N DIR
      Opens N keep-alive HTTP connections, sends a request on each and reads
      the answer, prints READY; when DIR/send exists it sends one request on
      each (the container may still be checkpointed: the kernel retransmits),
      and when DIR/go exists it reads every answer and prints
      "OK <n answered with 200>/<N>" (or the first error). Before that, when
      DIR/ping exists, it makes one round trip on each and prints
      "PING <n answered with 200>/<N>" (the container must be running).
  tcp_client.py redis HOST PORT N DIR
      The same with one redis connection: SET k0..k{N-1} pipelined after
      DIR/send, then reads N +OK replies and a GET after DIR/go.
"""
import os
import socket
import sys
import time


def wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.01)


def read_http(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed by peer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return head.split(b"\r\n")[0].decode()


def http(host, port, n, d):
    req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    socks = [socket.create_connection((host, port)) for _ in range(n)]
    for s in socks:
        s.sendall(req)
    first = sum(read_http(s).endswith("200 OK") for s in socks)
    names = sorted({s.getsockname() for s in socks})
    print(f"FIRST {first}/{n}", flush=True)
    print("READY", flush=True)
    pinged = False
    while not os.path.exists(os.path.join(d, "send")):
        if not pinged and os.path.exists(os.path.join(d, "ping")):
            for s in socks:
                s.settimeout(10)
                s.sendall(req)
            ok = sum(read_http(s).endswith("200 OK") for s in socks)
            print(f"PING {ok}/{n}", flush=True)
            pinged = True
        time.sleep(0.01)
    for s in socks:
        s.sendall(req)
    wait_for(os.path.join(d, "go"))
    ok = 0
    for s in socks:
        s.settimeout(30)
        ok += read_http(s).endswith("200 OK")
    same = sorted({s.getsockname() for s in socks}) == names
    print(f"OK {ok}/{n} same-sockets={same}", flush=True)


def redis(host, port, n, d):
    s = socket.create_connection((host, port))
    s.sendall(b"PING\r\n")
    assert s.recv(100).startswith(b"+PONG")
    print("READY", flush=True)
    wait_for(os.path.join(d, "send"))
    cmds = b"".join(f"SET k{i} v{i}\r\n".encode() for i in range(n))
    s.sendall(cmds + b"GET k%d\r\n" % (n - 1))
    wait_for(os.path.join(d, "go"))
    s.settimeout(30)
    want = b"+OK\r\n" * n + b"$%d\r\nv%d\r\n" % (len(str(n - 1)) + 1, n - 1)
    got = b""
    while len(got) < len(want):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    print(f"OK {int(got == want)}/1 replies={got.count(b'+OK')}", flush=True)


if __name__ == "__main__":
    kind, host, port, n, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    try:
        (http if kind == "http" else redis)(host, port, n, d)
    except Exception as e:  # one line for the test's assertion message
        print(f"ERROR {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
