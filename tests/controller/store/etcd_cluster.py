"""A real etcd cluster for tests: N members of Debian's `etcd` (3.4), as plain processes.

No root: members talk to each other over unix sockets in the cluster's own temporary
directory (etcd 3.4 takes `unix://NAME:PORT` peer URLs, a socket file `NAME:PORT` in the
working directory) and serve clients on loopback ports chosen free. With `tls`, clients must
present a certificate from the cluster's own CA (`--client-cert-auth`). `stop` kills every
member and removes the directory; a start that fails cleans up the same way.

Members are started with `--max-txn-ops` and `--max-request-bytes` well above etcd's defaults
(128 ops, 1.5 MiB): a 10,000-object apply is one transaction (docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stockade.controller.store import EtcdLocation
from stockade.controller.store.location import Endpoint, TlsFiles

MAX_TXN_OPS = 60_000
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdCluster:
    def __init__(self, size: int = 3, tls: bool = False, limits: bool = True) -> None:
        self.size = size
        self.root = Path(tempfile.mkdtemp(prefix="stockade-etcd-"))
        self.tls = self._make_pki() if tls else None
        self.limits = limits
        self.endpoints: list[Endpoint] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def location(self, prefix: str) -> EtcdLocation:
        return EtcdLocation(tuple(self.endpoints), self.tls, prefix)

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        try:
            for attempt in range(3):  # a port taken between choosing and binding: choose again
                if self._start_once(timeout):
                    return self
                self._kill()
            raise RuntimeError("the etcd cluster did not start:\n" + self.logs())
        except BaseException:
            self.stop()
            raise

    def _start_once(self, timeout: float) -> bool:
        names = [f"m{i}" for i in range(self.size)]
        peers = ",".join(f"{n}=unix://{n}:1" for n in names)
        token = self.root.name
        scheme = "https" if self.tls else "http"
        self.endpoints = [Endpoint("127.0.0.1", _free_port()) for _ in names]
        for name, endpoint in zip(names, self.endpoints):
            shutil.rmtree(self.root / name, ignore_errors=True)
            url = f"{scheme}://{endpoint}"
            cmd = ["etcd", "--name", name, "--data-dir", str(self.root / name),
                   "--listen-client-urls", url, "--advertise-client-urls", url,
                   "--listen-peer-urls", f"unix://{name}:1", "--initial-advertise-peer-urls", f"unix://{name}:1",
                   "--initial-cluster", peers, "--initial-cluster-token", token,
                   "--initial-cluster-state", "new", "--heartbeat-interval", "50", "--election-timeout", "500"]
            if self.limits:
                cmd += ["--max-txn-ops", str(MAX_TXN_OPS), "--max-request-bytes", str(MAX_REQUEST_BYTES)]
            if self.tls:
                cmd += ["--cert-file", str(self.root / "server.pem"), "--key-file", str(self.root / "server.key"),
                        "--trusted-ca-file", str(self.root / "ca.pem"), "--client-cert-auth"]
            with open(self.root / f"{name}.log", "ab") as log:
                self.processes.append(subprocess.Popen(cmd, cwd=self.root, stdin=subprocess.DEVNULL,
                                                       stdout=log, stderr=log))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                return False
            if all(self._healthy(e) for e in self.endpoints):
                return True
            time.sleep(0.1)
        return False

    def _healthy(self, endpoint: Endpoint) -> bool:
        from stockade.controller.store.etcd_kv import EtcdKV

        kv = EtcdKV([endpoint], self.tls, timeout=2.0)
        try:
            kv.get(b"/health")  # a linearizable read: answered only once the cluster has a leader
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False
        finally:
            kv.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                         for p in sorted(self.root.glob("*.log")))

    def _kill(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)  # the data is thrown away: no graceful leader handoff
        for p in self.processes:
            p.wait(10)
        self.processes = []

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ TLS

    def _make_pki(self) -> TlsFiles:
        """A CA, a server certificate for 127.0.0.1 and a client certificate, all in `root`."""
        now = dt.datetime.now(dt.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stockade test etcd CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        self._write("ca.pem", ca, None)

        def issue(name: str, usage: list[x509.ObjectIdentifier], san: list[x509.GeneralName]) -> None:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                    .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                    .add_extension(x509.SubjectAlternativeName(san), critical=False)
                    .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
                    .sign(ca_key, hashes.SHA256()))
            self._write(f"{name}.pem", cert, None)
            self._write(f"{name}.key", None, key)

        # etcd's JSON gateway dials the member's own gRPC server with the server certificate,
        # so that certificate must be good for client authentication too.
        issue("server", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
              [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
        issue("client", [ExtendedKeyUsageOID.CLIENT_AUTH], [x509.DNSName("stockade-controller")])
        return TlsFiles(str(self.root / "ca.pem"), str(self.root / "client.pem"), str(self.root / "client.key"))

    def _write(self, name: str, cert: x509.Certificate | None, key: ec.EllipticCurvePrivateKey | None) -> None:
        path = self.root / name
        if cert is not None:
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            path.chmod(0o600)
