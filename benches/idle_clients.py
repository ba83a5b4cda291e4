#!/usr/bin/env python3
"""Open N idle PostgreSQL client connections (trust auth) and hold them.

Used by benches/run.sh for the memory benchmark: each connection does the
v3 startup handshake over a raw socket (StartupMessage -> AuthenticationOk,
ParameterStatus..., BackendKeyData, ReadyForQuery) and then stays idle.

Protocol with the harness (stdout, one line each, flushed):
  READY <connected> <failed>      all handshakes done (or failed)
  ALIVE <alive> <dropped>         after --until-file appears: how many of the
                                  idle connections were still open
Exits 0 when every connection was made and stayed open, 1 otherwise.
Bounded: gives up after --timeout seconds of connecting and --hold seconds of
holding, so it always stops by itself.
"""
import argparse
import asyncio
import os
import struct
import sys
import time


def startup_message(user: str, database: str) -> bytes:
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", database), ("application_name", "idle_clients")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


async def handshake(host, port, msg, sem, timeout):
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            writer.write(msg)
            await writer.drain()
            while True:
                hdr = await asyncio.wait_for(reader.readexactly(5), timeout)
                typ, length = hdr[:1], struct.unpack("!i", hdr[1:])[0]
                body = await asyncio.wait_for(reader.readexactly(length - 4), timeout)
                if typ == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                    raise RuntimeError("server asked for a password (auth code %d); trust expected"
                                       % struct.unpack("!i", body[:4])[0])
                if typ == b"E":
                    raise RuntimeError("ErrorResponse: " + body.replace(b"\0", b" ").decode(errors="replace"))
                if typ == b"Z":
                    return reader, writer
        except BaseException:
            writer.close()
            raise


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--database", default="bench")
    ap.add_argument("-n", "--clients", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=200, help="handshakes in flight at once")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds for all handshakes")
    ap.add_argument("--hold", type=float, default=120.0, help="max seconds to hold after READY")
    ap.add_argument("--until-file", help="stop holding as soon as this file exists")
    a = ap.parse_args()

    msg = startup_message(a.user, a.database)
    sem = asyncio.Semaphore(a.concurrency)
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(handshake(a.host, a.port, msg, sem, a.timeout)) for _ in range(a.clients)]
    done, pending = await asyncio.wait(tasks, timeout=a.timeout)
    for t in pending:
        t.cancel()
    conns, errors = [], {}
    for t in done:
        if t.exception() is None:
            conns.append(t.result())
        else:
            e = t.exception()
            key = "%s: %s" % (type(e).__name__, e)
            errors[key] = errors.get(key, 0) + 1
    failed = a.clients - len(conns)
    for k, v in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        print("error x%d: %s" % (v, k), file=sys.stderr)
    print("READY %d %d %.1fs" % (len(conns), failed, time.monotonic() - t0), flush=True)

    deadline = time.monotonic() + a.hold
    while time.monotonic() < deadline and not (a.until_file and os.path.exists(a.until_file)):
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)  # let any pending EOFs be read
    alive = sum(1 for r, _ in conns if not r.at_eof())
    print("ALIVE %d %d" % (alive, len(conns) - alive), flush=True)
    terminate = b"X\0\0\0\x04"
    for _, w in conns:
        try:
            w.write(terminate)
            w.close()
        except Exception:
            pass
    await asyncio.sleep(0.5)
    return 0 if failed == 0 and alive == len(conns) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
