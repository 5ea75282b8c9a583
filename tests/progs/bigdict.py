#!/usr/bin/env python3
"""bigdict: a ~200 MB Python heap, checked after a checkpoint.

Builds a dict of N (default 1,200,000) entries str -> 48 bytes (~220 MB RSS), computes a
CRC32 over all of it, prints READY, waits for SIGUSR1 (sigwait retries on
EINTR, so a checkpoint during the wait is harmless), recomputes the checksum
and prints PASS or "FAIL: reason".
"""
import signal
import sys
import zlib


def checksum(d):
    crc = 0
    for k, v in d.items():
        crc = zlib.crc32(v, zlib.crc32(k.encode(), crc))
    return crc


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_200_000
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    d = {}
    for i in range(n):
        d["key-%08d" % i] = i.to_bytes(8, "little") * 6
    before = checksum(d)
    print("READY", flush=True)
    signal.sigwait({signal.SIGUSR1})
    if len(d) != n:
        print("FAIL: dict has %d entries, want %d" % (len(d), n), flush=True)
        return 1
    after = checksum(d)
    if after != before:
        print("FAIL: checksum %08x, was %08x" % (after, before), flush=True)
        return 1
    print("PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
