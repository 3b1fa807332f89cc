"""`segments stack up --secure`: the local broker as a platform team would secure it.

Next to the plain stack (which stays the default, unchanged), under
`{stack dir}/secure/`:

- a CA and a server certificate (127.0.0.1, localhost) made with `cryptography`;
- one SCRAM-SHA-512 user per principal (`segments-admin`, `segments-connector`,
  `segments-worker`, `segments-api`), created when the storage is formatted, with a
  random password each in `{user}.password`;
- a Kafka node whose client listener is SASL_SSL, whose controller listener is TLS
  with client certificates (only the broker's own certificate gets in), with
  `StandardAuthorizer`, `segments-admin` and the broker as `super.users`, and no other
  access without an ACL (`segments/stack/acls.py` grants each service its own);
- Redis on TLS with an ACL user `segments` and its password; the default user is off;
- `{service}.env`: the variables a service exports to use all that.

Every file holding a secret is created mode 0600; passwords never reach argv (the
SCRAM users are passed to the format tool in an argument file) nor any output.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shlex
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.settings import KafkaSecurity, Settings
from segments.stack.kafka import LocalKafka, Node
from segments.stack.redis_server import LocalRedis

ADMIN = "segments-admin"
CONNECTOR = "segments-connector"
WORKER = "segments-worker"
API = "segments-api"
#: The service principals, by the name of the service.
SERVICES = {"connector": CONNECTOR, "worker": WORKER, "api": API}
USERS = (ADMIN, CONNECTOR, WORKER, API)
MECHANISM = "SCRAM-SHA-512"
#: The broker's certificate subject: its principal on the controller listener.
BROKER_CN = "kafka-broker"
BROKER_PRINCIPAL = f"User:CN={BROKER_CN}"
REDIS_USER = "segments"
#: Ports of the secured stack (beside the plain one's 9092 and 6379).
KAFKA_PORT = 9093
REDIS_PORT = 6380
VALIDITY = datetime.timedelta(days=825)


def write_secret(path: Path, data: str | bytes) -> None:
    """Write `path` readable by its owner only (created 0600, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, raw)
    finally:
        os.close(fd)


class SecureFiles:
    """The CA, certificates and credentials of a secured stack, made once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_cert = root / "ca.pem"
        self.ca_key = root / "ca.key"
        self.server_cert = root / "server.crt"
        self.server_key = root / "server.key"
        #: Key and certificate chain in one file: Kafka's PEM keystore.
        self.keystore = root / "server-keystore.pem"
        self.redis_password = root / "redis.password"

    def password_file(self, user: str) -> Path:
        return self.root / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    def ensure(self) -> None:
        """Generate whatever is missing (a new CA means new certificates too)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not (self.ca_cert.exists() and self.keystore.exists()):
            self._tls()
        for user in USERS:
            if not self.password_file(user).exists():
                write_secret(self.password_file(user), secrets.token_urlsafe(24) + "\n")
        if not self.redis_password.exists():
            write_secret(self.redis_password, secrets.token_urlsafe(24) + "\n")

    def _tls(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "segments local CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + VALIDITY)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(
                  digital_signature=False, content_commitment=False, key_encipherment=False,
                  data_encipherment=False, key_agreement=False, key_cert_sign=True,
                  crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # Server certificate of the broker and Redis; also the broker's client
        # certificate towards its controller listener.
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + VALIDITY)
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        pkcs8 = serialization.PrivateFormat.PKCS8
        clear = serialization.NoEncryption()
        key_pem = key.private_bytes(pem, pkcs8, clear)
        write_secret(self.ca_key, ca_key.private_bytes(pem, pkcs8, clear))
        write_secret(self.server_key, key_pem)
        write_secret(self.keystore, key_pem + cert.public_bytes(pem) + ca.public_bytes(pem))
        self.server_cert.write_bytes(cert.public_bytes(pem))
        self.ca_cert.write_bytes(ca.public_bytes(pem))

    def security(self, user: str) -> KafkaSecurity:
        """How `user` connects (what KAFKA_SECURITY_PROTOCOL & co. say in its env file)."""
        return KafkaSecurity(protocol="SASL_SSL", sasl_mechanism=MECHANISM,
                             sasl_username=user, sasl_password=self.password(user),
                             ssl_cafile=str(self.ca_cert))

    def redis_url(self, port: int) -> str:
        password = quote(self.redis_password.read_text().strip(), safe="")
        ca = quote(str(self.ca_cert), safe="/")
        return f"rediss://{REDIS_USER}:{password}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"


class SecureKafka(LocalKafka):
    """One KRaft node with a SASL_SSL client listener and ACLs (see the module doc)."""

    def __init__(self, stack_dir: Path, files: SecureFiles, base_port: int = KAFKA_PORT,
                 home: str = "kafka-secure") -> None:
        super().__init__(stack_dir, nodes=1, base_port=base_port, home=home)
        self.files = files

    def probe_settings(self, node: Node) -> Settings:
        return Settings(kafka_bootstrap_servers=node.bootstrap,
                        kafka_security=self.files.security(ADMIN))

    def _listener_properties(self, node: Node) -> list[str]:
        f = self.files
        jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN}" password="{f.password(ADMIN)}";')
        return [
            f"listeners=SASL_SSL://127.0.0.1:{node.port},"
            f"CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{node.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_SSL",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={f.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={f.ca_cert}",
            # Only a certificate of our CA opens the controller listener: the broker's.
            "listener.name.controller.ssl.client.auth=required",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN};{BROKER_PRINCIPAL}",
            "allow.everyone.if.no.acl.found=false",
        ]

    def _format_args(self) -> list[str]:
        """The SCRAM users, in an argument file (0600) rather than on the command line."""
        argfile = self.home / "scram-users.args"
        lines = [f"--add-scram\n{MECHANISM}=[name={user},password={self.files.password(user)}]"
                 for user in USERS]
        write_secret(argfile, "\n".join(lines) + "\n")
        return [f"@{argfile}"]

    def _format(self, node: Node, jars: Path) -> None:
        try:
            super()._format(node, jars)
        finally:  # the users exist (or formatting failed): no password file left over
            (self.home / "scram-users.args").unlink(missing_ok=True)

    def up(self, timeout: float = 120.0) -> str:
        self.files.ensure()
        return super().up(timeout)


class SecureRedis(LocalRedis):
    """redis-server on TLS only, with the ACL user `segments` (default user off)."""

    def __init__(self, stack_dir: Path, files: SecureFiles, port: int = REDIS_PORT,
                 home: str = "redis-secure") -> None:
        self.files = files
        self._port = port
        super().__init__(stack_dir, "", home=home)

    @property
    def port(self) -> int:
        return self._port

    def up(self, timeout: float = 20.0) -> str:
        self.files.ensure()
        self.url = self.files.redis_url(self._port)
        return super().up(timeout)

    def status(self) -> str:
        if self.files.redis_password.exists():
            self.url = self.files.redis_url(self._port)
        return super().status() if self.url else "down"

    def _argv(self, server: str) -> list[str]:
        f = self.files
        conf = self.home / "redis.conf"
        write_secret(conf, "\n".join([
            "bind 127.0.0.1",
            "port 0",
            f"tls-port {self._port}",
            f"tls-cert-file {f.server_cert}",
            f"tls-key-file {f.server_key}",
            f"tls-ca-cert-file {f.ca_cert}",
            "tls-auth-clients no",
            'save ""',
            "appendonly no",
            f"dir {self.home}",
            "daemonize no",
            "user default off",
            f"user {REDIS_USER} on >{f.redis_password.read_text().strip()} ~* &* +@all",
            "",
        ]))
        return [server, str(conf)]


class SecureStack:
    """The secured Kafka and Redis, their files, and each service's environment."""

    def __init__(self, stack_dir: Path, *, kafka_port: int = KAFKA_PORT,
                 redis_port: int = REDIS_PORT) -> None:
        self.files = SecureFiles(stack_dir / "secure")
        self.kafka = SecureKafka(stack_dir, self.files, base_port=kafka_port)
        self.redis = SecureRedis(stack_dir, self.files, port=redis_port)

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    def settings(self, user: str, base: Settings | None = None) -> Settings:
        """`base` (default settings) as principal `user` of this stack."""
        return replace(base or Settings(), kafka_bootstrap_servers=self.bootstrap_servers,
                       kafka_security=self.files.security(user),
                       redis_url=self.files.redis_url(self.redis.port))

    def env(self, user: str) -> dict[str, str]:
        """The variables of SPEC's "Transport security" for `user` (password by file)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD_FILE": str(self.files.password_file(user)),
            "KAFKA_SSL_CAFILE": str(self.files.ca_cert),
            "REDIS_URL": self.files.redis_url(self.redis.port),
        }

    def env_file(self, service: str) -> Path:
        return self.files.root / f"{service}.env"

    def write_env_files(self) -> dict[str, Path]:
        """`{service}.env` (0600) for the three services and `admin.env`."""
        written = {}
        for service, user in {**SERVICES, "admin": ADMIN}.items():
            lines = [f"export {k}={shlex.quote(v)}" for k, v in self.env(user).items()]
            write_secret(self.env_file(service), "\n".join(lines) + "\n")
            written[service] = self.env_file(service)
        return written
