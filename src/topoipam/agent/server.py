"""The agent's unix socket: accepts plugin requests and answers them, one per connection.

The wire format is ``cni.agent_client``'s (one JSON request until the client
half-closes, one JSON answer). Each connection is served on its own thread, at
most ``max_in_flight`` at once (the others wait in the listen backlog).

The socket file is created with mode 0600 (the umask is narrowed around
``bind`` so that it never exists with a wider mode) in a directory the agent
creates with mode 0755. A socket file left behind by a dead agent is replaced;
one that a live agent answers on is an error.

``shutdown`` stops accepting, waits for the requests in flight to finish (an
assignment that has started is completed and answered, so none is lost
half-way), then removes the socket file.

Each request is timed in three phases, in wall time and in the serving
thread's own CPU time (the difference is waiting: for the plugin to send, on
the datastore, or for the interpreter lock): reading and decoding it,
serving it, and encoding and sending the answer. A request slower than
``slow_request`` seconds (default 5 ms; 0 logs every one) is logged at debug
level with that breakdown, so a slow ADD says whether the datastore, the
agent's own work or the socket took the time.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from typing import Callable

from topoipam.cni.agent_client import decode_request, encode_response, read_until_eof
from topoipam.errors import ValidationError

log = logging.getLogger("topoipam.agent")

Serve = Callable[[dict, bytes], "tuple[int, bytes]"]
READ_TIMEOUT = 10.0  # seconds a client may take to send its request
SLOW_REQUEST = 0.005  # seconds: slower requests are logged (debug) with where their time went


class AgentServer:
    def __init__(self, path: str, serve: Serve, *, max_in_flight: int = 32,
                 slow_request: float = SLOW_REQUEST) -> None:
        self.path = path
        self.slow_request = slow_request
        self.serve = serve
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.served = 0

    def start(self) -> "AgentServer":
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise ValidationError(f"cannot create the agent socket {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(128)
        sock.settimeout(0.2)  # accept() wakes up to notice shutdown
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="topoipam-agent-accept", daemon=True)
        self._thread.start()
        return self

    def _clear_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ValidationError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: left behind by an agent that died
            return
        finally:
            probe.close()
        raise ValidationError(f"another agent is serving {self.path}; stop it first")

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            self._slots.acquire()
            with self._lock:
                self._in_flight += 1
            threading.Thread(target=self._serve_conn, args=(conn,), name="topoipam-agent-request",
                             daemon=True).start()

    def _serve_conn(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(READ_TIMEOUT)
            marks = [time.perf_counter(), time.thread_time()]  # wall and own CPU at each phase's end
            try:
                env, stdin = decode_request(read_until_eof(conn))
            except (ValueError, OSError) as exc:
                log.warning("bad request on %s: %s", self.path, exc)
                return
            marks += (time.perf_counter(), time.thread_time())
            code, out = self.serve(env, stdin)
            marks += (time.perf_counter(), time.thread_time())
            conn.sendall(encode_response(code, out))
            marks += (time.perf_counter(), time.thread_time())
            if marks[6] - marks[0] >= self.slow_request and log.isEnabledFor(logging.DEBUG):
                _log_timing(env, code, marks)
        except OSError as exc:  # the plugin went away before its answer: it reports failure, DEL follows
            log.warning("could not answer a request on %s: %s", self.path, exc)
        finally:
            conn.close()
            with self._lock:
                self._in_flight -= 1
                self.served += 1
                self._idle.notify_all()
            self._slots.release()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def shutdown(self, grace: float = 60.0) -> bool:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s), remove the socket.

        Returns False if requests were still running when the grace period ended."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._sock is not None:
            self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        deadline = time.monotonic() + grace
        with self._lock:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            return self._in_flight == 0


def _log_timing(env: dict, code: int, marks: list[float]) -> None:
    """``marks``: (wall, thread CPU) at the start and after reading, serving and answering. Wall time
    not spent on this thread's CPU was spent waiting: for the plugin to send, on the datastore, or
    for the interpreter lock."""
    wall = [(marks[i + 2] - marks[i]) * 1e3 for i in (0, 2, 4)]
    cpu = [(marks[i + 3] - marks[i + 1]) * 1e3 for i in (0, 2, 4)]
    log.debug("request %s %s (exit %d): %.3f ms; own CPU %.3f ms; read+decode %.3f ms (CPU %.3f), serve %.3f ms "
              "(CPU %.3f, the rest waiting on the datastore or the interpreter lock), encode+send %.3f ms (CPU %.3f)",
              env.get("CNI_COMMAND", "?"), env.get("CNI_CONTAINERID", ""), code, sum(wall), sum(cpu),
              wall[0], cpu[0], wall[1], cpu[1], wall[2], cpu[2])
