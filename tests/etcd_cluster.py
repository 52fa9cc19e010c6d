"""Real etcd processes on loopback for the tests and the benchmark.

``EtcdCluster(tmp_dir, size=1 or 3, tls=None)`` starts ``/usr/bin/etcd`` members on
free 127.0.0.1 ports, each with its own data directory under ``tmp_dir``, and
``stop()`` ends every process it started, by pid. Members can be killed and
restarted (``kill(i)``, ``restart(i)``) and the current leader found
(``leader()``), all through the members' own HTTP endpoints (``/health`` and the
v3 JSON gateway), so the helpers need nothing but the standard library and, for
TLS, certificates made by ``make_tls`` with the ``cryptography`` package.

Election timings are shortened (50 ms heartbeat, 500 ms election) so a killed
leader is replaced in about a second.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ETCD_BIN = "/usr/bin/etcd"
HAVE_ETCD = os.access(ETCD_BIN, os.X_OK)
SKIP_REASON = f"{ETCD_BIN} not found (scripts/setup.sh installs etcd-server)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TlsFiles:
    """A CA, a server certificate for 127.0.0.1, a client certificate it signed, and a stranger's client certificate."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str
    other_cert: str
    other_key: str


def make_tls(directory: Path) -> TlsFiles:
    """Write a fresh CA, server and client certificates (and an unrelated CA with its own client) into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert, key) -> tuple[str, str]:
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return str(cert_path), str(key_path)

    def ca(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        return cert, key

    def leaf(cn: str, issuer, issuer_key, usage):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        )
        return builder.sign(issuer_key, hashes.SHA256()), key

    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ca_cert, ca_key = ca("topoipam test CA")
    ca_path, _ = write("ca", ca_cert, ca_key)
    server_cert, server_key = write("server", *leaf("etcd", ca_cert, ca_key, both))
    client_cert, client_key = write("client", *leaf("topoipam", ca_cert, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH]))
    other_ca_cert, other_ca_key = ca("some other CA")
    other_ca_path, _ = write("other-ca", other_ca_cert, other_ca_key)
    other_cert, other_key = write(
        "other", *leaf("stranger", other_ca_cert, other_ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH])
    )
    return TlsFiles(ca_path, server_cert, server_key, client_cert, client_key, other_ca_path, other_cert, other_key)


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None


class EtcdCluster:
    """``size`` etcd members on loopback; ``stop()`` (or the context manager) ends them all by pid."""

    def __init__(
        self, tmp_dir: Path, size: int = 1, tls: TlsFiles | None = None, max_txn_ops: int = 4096,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.max_txn_ops = max_txn_ops
        self.extra_args = tuple(extra_args)
        self.tls = tls
        scheme = "https" if tls else "http"
        self.scheme = scheme
        self.members = [
            Member(
                name=f"m{i}",
                client_port=free_port(),
                peer_port=free_port(),
                data_dir=self.tmp_dir / f"etcd-m{i}",
                log_path=self.tmp_dir / f"etcd-m{i}.log",
            )
            for i in range(size)
        ]
        self._initial_cluster = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)

    # --- addresses -----------------------------------------------------------------
    def endpoints(self, indexes: list[int] | None = None) -> str:
        """``host:port,host:port`` of the chosen (default: all) members."""
        chosen = self.members if indexes is None else [self.members[i] for i in indexes]
        return ",".join(f"127.0.0.1:{m.client_port}" for m in chosen)

    def url(self, indexes: list[int] | None = None) -> str:
        """A topoipam datastore URL for the members (``etcd://`` or ``etcds://`` with the client certificate)."""
        if not self.tls:
            return f"etcd://{self.endpoints(indexes)}"
        t = self.tls
        return f"etcds://{self.endpoints(indexes)}?ca={t.ca}&cert={t.client_cert}&key={t.client_key}"

    # --- processes -----------------------------------------------------------------
    def start(self) -> "EtcdCluster":
        try:
            for i in range(len(self.members)):
                self._spawn(i, state="new")
            for i in range(len(self.members)):
                self.wait_healthy(i)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, i: int, state: str) -> None:
        m = self.members[i]
        m.data_dir.mkdir(parents=True, exist_ok=True)
        client = f"{self.scheme}://127.0.0.1:{m.client_port}"
        args = [
            ETCD_BIN,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls=http://127.0.0.1:{m.peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{m.peer_port}",
            f"--initial-cluster={self._initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token=topoipam-test-{os.getpid()}-{self.members[0].client_port}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-level=warn",
            "--snapshot-count=100000",
            # The contract suite commits 1200 keys at once; etcd's default allows 128 operations per
            # transaction (EtcdStore reports that limit as a ValidationError, see test_store_etcd).
            f"--max-txn-ops={self.max_txn_ops}",
        ]
        args += self.extra_args
        if self.tls:
            args += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca}",
                "--client-cert-auth",
            ]
        log = open(m.log_path, "ab")
        try:
            m.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` by its pid and reap it."""
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            os.kill(m.proc.pid, signal.SIGKILL)
            m.proc.wait(timeout=10)
        m.proc = None

    def restart(self, i: int) -> None:
        """Start a killed member again on the same ports and data directory (it rejoins the cluster)."""
        self._spawn(i, state="existing")
        self.wait_healthy(i)

    def stop(self) -> None:
        for i in range(len(self.members)):
            try:
                self.kill(i)
            except Exception:  # keep stopping the others
                pass

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- probes --------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.tls.ca)
        ctx.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return ctx

    def _request(self, i: int, path: str, body: dict | None = None, timeout: float = 2.0, token: str = "") -> dict:
        m = self.members[i]
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.scheme}://127.0.0.1:{m.client_port}{path}", data=data)
        if token:
            req.add_header("Authorization", token)
        with urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context()) as resp:
            return json.loads(resp.read() or b"{}")

    def wait_healthy(self, i: int, timeout: float = 30.0) -> None:
        """Wait until member ``i`` answers /health with a leader; raise with its log tail if it does not."""
        m = self.members[i]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m.proc is None or m.proc.poll() is not None:
                raise RuntimeError(f"etcd member {m.name} exited: {self._log_tail(m)}")
            try:
                if self._request(i, "/health", timeout=1.0).get("health") == "true":
                    return
            except (OSError, ValueError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd member {m.name} not healthy after {timeout}s: {self._log_tail(m)}")

    def _log_tail(self, m: Member) -> str:
        try:
            return m.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def alive(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m.proc is not None and m.proc.poll() is None]

    def leader(self, timeout: float = 15.0) -> int:
        """Index of the member that a live member reports as leader (waits for an election)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in self.alive():
                try:
                    status = self._request(i, "/v3/maintenance/status", {}, timeout=1.0)
                except (OSError, ValueError, urllib.error.URLError):
                    continue
                leader_id = status.get("leader")
                if not leader_id:
                    continue
                for j in self.alive():
                    try:
                        header = self._request(j, "/v3/maintenance/status", {}, timeout=1.0)["header"]
                    except (OSError, ValueError, KeyError, urllib.error.URLError):
                        continue
                    if header.get("member_id") == leader_id:
                        return j
            time.sleep(0.05)
        raise RuntimeError(f"no etcd leader among live members {self.alive()} after {timeout}s")

    def wipe(self) -> None:
        """Delete every key (a fresh keyspace for the next test; revisions keep growing)."""
        self._request(self.alive()[0], "/v3/kv/deleterange", {"key": b64("\0"), "range_end": b64("\0")})

    def compact(self, revision: int) -> None:
        """Drop the history before ``revision`` (watches from earlier revisions then fail)."""
        self._request(self.alive()[0], "/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def enable_auth(self, user: str, password: str) -> None:
        """Create ``root`` (and ``user`` with the root role), then turn authentication on."""
        for body_path, body in [
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/add", {"name": "root", "password": password}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ]:
            self._request(0, body_path, body)
        if user != "root":
            self._request(0, "/v3/auth/user/add", {"name": user, "password": password})
            self._request(0, "/v3/auth/user/grant", {"user": user, "role": "root"})
        self._request(0, "/v3/auth/enable", {})


def b64(text: str) -> str:
    """etcd's JSON gateway carries keys and values base64-encoded."""
    return base64.b64encode(text.encode()).decode()
