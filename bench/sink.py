"""A fast SMTP sink for benchmarks, and the raw smtplib client that measures the ceiling.

    .venv/bin/python -m bench.sink [--port 0] [--max-id 10000000]      (the sink; control on stdin)
    .venv/bin/python -m bench.sink client --port P --count N --first I --message FILE

The sink speaks just enough SMTP for smtplib and our client (220; EHLO/HELO with PIPELINING, whose
replies it writes together like Postfix does; MAIL, RCPT, DATA up to the final
"."; RSET, NOOP, QUIT) and accepts everything. It is built to cost as little CPU per message as
Python allows: a tiny master process accepts connections and forks one child per connection, and
each child serves its connection with blocking recv/sendall on one buffer: no event loop, no
parsing of the message, and no GIL shared with any other connection or with the measurement.

What arrived is counted in shared memory, so the master can answer while connections stay open
(workers keep theirs for their whole life): per child slot, messages, bytes, CPU seconds,
recipients it could not place, when its first and latest message arrived, and how many began with a
DKIM-Signature field; and one byte per recipient number, for recipients written
`r<number>@...` (the benchmark's addresses), so "each of 1..N exactly once" is checked exactly.

Control (one line in on stdin, one JSON line out on stdout):
    stats        {"messages", "bytes", "unknown", "cpu_seconds", "connections", "first_at", "last_at", "signed"}
                 (the last two: time.time() of the first and the latest message since the reset)
    check N [F]  {"once", "missing", "duplicates", "above"}: recipients F..F+N-1 (F: 1) seen once, never,
                 more; "above": numbered recipients seen beyond them
    reset        zero every count (connections stay open)
    quit         stop (children are told to stop too)
The first line the sink prints is `ready <port>`.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import re
import selectors
import signal
import smtplib
import socket
import sys
import time

SLOTS = 4096  # counters of children; a slot is reused (additively) after 4096 connections
FIELDS = 7  # messages, bytes, cpu seconds, unknown recipients, first and last message (time.time()), signed
_RECIPIENT = re.compile(rb"<r(\d+)@", re.IGNORECASE)


# --- one connection, in a child process --------------------------------------------------------


def serve_connection(conn: socket.socket, counters: memoryview, seen: mmap.mmap, slot: int) -> None:
    """Serve one SMTP session until QUIT or EOF. Counts into counters[slot * FIELDS ...]."""
    base = slot * FIELDS
    max_id = len(seen) - 1
    # recv_into one preallocated buffer: recv(n) would allocate (and for a large n mmap, fault in
    # and unmap) n bytes on every call, which costs more than everything else here together.
    chunk_buffer = bytearray(262144)
    chunk_view = memoryview(chunk_buffer)
    recv_into = conn.recv_into
    sendall = conn.sendall
    # Replies wait until every command already received is answered, then go in one write, as
    # Postfix does for a client that pipelines (RFC 2920); a client that does not sees no change.
    replies: list[bytes] = []
    send = replies.append

    def flush() -> None:
        if replies:
            sendall(b"".join(replies))
            replies.clear()
    buf = bytearray()
    recipients: list[bytes] = []
    cpu = time.process_time()
    send(b"220 sink.bench ESMTP\r\n")
    while True:
        newline = buf.find(b"\r\n")
        while newline < 0:
            flush()
            got = recv_into(chunk_buffer)
            if not got:
                return
            buf += chunk_view[:got]
            if len(buf) > 65536 and buf.find(b"\r\n") < 0:
                return  # not SMTP
            newline = buf.find(b"\r\n")
        line = bytes(buf[:newline])
        del buf[: newline + 2]
        verb = line[:4].upper()
        if verb == b"RCPT":
            recipients.append(line)
            send(b"250 2.1.5 OK\r\n")
        elif verb == b"MAIL":
            recipients.clear()
            send(b"250 2.1.0 OK\r\n")
        elif verb == b"DATA":
            if not recipients:
                send(b"503 5.5.1 RCPT first\r\n")
                continue
            send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            # The body ends with CRLF "." CRLF; an empty body is just "." CRLF.
            if buf[:3] == b".\r\n":
                end, size = 0, 0
            else:
                start = 0
                end = buf.find(b"\r\n.\r\n")
                while end < 0:
                    start = max(0, len(buf) - 4)
                    flush()
                    got = recv_into(chunk_buffer)
                    if not got:
                        return
                    buf += chunk_view[:got]
                    end = buf.find(b"\r\n.\r\n", start)
                size = end + 2
                end += 2
            if buf.startswith(b"DKIM-Signature:"):
                counters[base + 6] += 1
            del buf[: end + 3]
            for rcpt in recipients:
                match = _RECIPIENT.search(rcpt)
                number = int(match.group(1)) if match else -1
                if 0 < number <= max_id:
                    value = seen[number]
                    if value < 255:
                        seen[number] = value + 1
                else:
                    counters[base + 3] += 1
            recipients.clear()
            counters[base] += 1
            counters[base + 1] += size
            received = time.time()
            if not counters[base + 4]:
                counters[base + 4] = received
            counters[base + 5] = received
            now = time.process_time()
            counters[base + 2] += now - cpu
            cpu = now
            send(b"250 2.0.0 OK queued\r\n")
        elif verb in (b"EHLO", b"HELO"):
            recipients.clear()
            send(b"250-sink.bench\r\n250-PIPELINING\r\n250 8BITMIME\r\n" if verb == b"EHLO" else b"250 sink.bench\r\n")
        elif verb == b"RSET":
            recipients.clear()
            send(b"250 2.0.0 OK\r\n")
        elif verb == b"NOOP":
            send(b"250 2.0.0 OK\r\n")
        elif verb == b"QUIT":
            send(b"221 2.0.0 Bye\r\n")
            flush()
            return
        else:
            send(b"502 5.5.2 Command not recognised\r\n")


def _child(conn: socket.socket, listener: socket.socket, counters: memoryview, seen: mmap.mmap, slot: int) -> None:
    listener.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.settimeout(None)
    try:
        serve_connection(conn, counters, seen, slot)
    except OSError:
        pass
    finally:
        conn.close()


# --- the master: accepts, forks, answers control lines ---------------------------------------


def run_sink(port: int, max_id: int) -> None:
    counters_map = mmap.mmap(-1, SLOTS * FIELDS * 8)  # MAP_SHARED | MAP_ANONYMOUS: seen by forked children
    counters = memoryview(counters_map).cast("d")
    seen = mmap.mmap(-1, max_id + 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    children: set[int] = set()
    connections = 0
    stop = False

    def terminate(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, terminate)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin, selectors.EVENT_READ, "control")
    out = sys.stdout
    out.write(f"ready {listener.getsockname()[1]}\n")
    out.flush()

    def reply(value) -> None:
        out.write(json.dumps(value) + "\n")
        out.flush()

    try:
        while not stop:
            for key, _ in selector.select(timeout=0.5):
                if key.data == "accept":
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    slot = connections % SLOTS
                    connections += 1
                    pid = os.fork()
                    if pid == 0:
                        try:
                            selector.close()
                            _child(conn, listener, counters, seen, slot)
                        finally:
                            os._exit(0)
                    conn.close()
                    children.add(pid)
                    continue
                line = sys.stdin.readline()
                if not line:
                    stop = True
                    break
                words = line.split()
                command = words[0] if words else ""
                if command == "stats":
                    totals = [sum(counters[field::FIELDS]) for field in range(4)]
                    firsts = [t for t in counters[4::FIELDS] if t]
                    reply({"messages": int(totals[0]), "bytes": int(totals[1]), "cpu_seconds": totals[2],
                           "unknown": int(totals[3]), "connections": connections,
                           "first_at": min(firsts) if firsts else None, "last_at": max(counters[5::FIELDS]),
                           "signed": int(sum(counters[6::FIELDS]))})
                elif command == "check":
                    n, first = int(words[1]), int(words[2]) if len(words) > 2 else 1
                    counts = bytes(seen[first: first + n])
                    missing, once = counts.count(0), counts.count(1)
                    rest = bytes(seen[first + n:])
                    above = len(rest) - rest.count(0)
                    reply({"once": once, "missing": missing, "duplicates": n - once - missing, "above": above})
                elif command == "reset":
                    counters[:] = memoryview(bytes(len(counters) * 8)).cast("d")
                    seen[:] = bytes(len(seen))
                    reply({"reset": True})
                elif command == "quit":
                    reply({"quit": True})
                    stop = True
                    break
                else:
                    reply({"error": f"unknown command {command!r}"})
            children = {pid for pid in children if _alive(pid)}
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        listener.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


# --- the raw ceiling: plain smtplib, one connection, the same bytes ------------------------------


def run_client(host: str, port: int, count: int, first: int, message_path: str, sender: str) -> None:
    """Connect, say ready, wait for "go" on stdin, send `count` messages to r<first>... r<first+count-1>."""
    message = open(message_path, "rb").read()
    smtp = smtplib.SMTP(host, port, timeout=60)
    smtp.ehlo()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        smtp.close()
        return
    cpu, start = time.process_time(), time.perf_counter()
    for number in range(first, first + count):
        smtp.sendmail(sender, [f"r{number}@example.com"], message)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    smtp.quit()
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "sent": count}), flush=True)


# --- driving the sink from a benchmark -------------------------------------------------------------


class Sink:
    """The sink in a process of its own (and one child per connection), driven over its stdin."""

    def __init__(self, python: str, cwd: str, max_id: int, log_path: str | None = None):
        import subprocess

        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.popen = subprocess.Popen([python, "-m", "bench.sink", "--max-id", str(max_id)], cwd=cwd,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                      text=True, start_new_session=True)
        line = self.popen.stdout.readline()
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"the SMTP sink did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"smtp://127.0.0.1:{self.port}"

    def _ask(self, command: str) -> dict:
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError("the SMTP sink went away")
        return json.loads(line)

    def stats(self) -> dict:
        return self._ask("stats")

    def check(self, n: int, first: int = 1) -> dict:
        return self._ask(f"check {n} {first}")

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        """Stop the master and every connection child (one process group, started by us)."""
        try:
            if self.popen.poll() is None:
                try:
                    self._ask("quit")
                except (OSError, RuntimeError, ValueError):
                    pass
                try:
                    self.popen.wait(timeout=5)
                except Exception:
                    pass
        finally:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)  # the children still serving a connection
            except (ProcessLookupError, PermissionError):
                pass
            if self.popen.poll() is None:
                self.popen.wait(timeout=5)
            if hasattr(self._log, "close"):
                self._log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="A fast SMTP sink, or the raw smtplib client.")
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-id", type=int, default=10_000_000, help="highest recipient number tracked")
    client = sub.add_parser("client")
    client.add_argument("--host", default="127.0.0.1")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--count", type=int, required=True)
    client.add_argument("--first", type=int, default=1)
    client.add_argument("--message", required=True)
    client.add_argument("--sender", default="news@news.example.org")
    args = parser.parse_args()
    if args.command == "client":
        run_client(args.host, args.port, args.count, args.first, args.message, args.sender)
    else:
        run_sink(args.port, args.max_id)


if __name__ == "__main__":
    main()
