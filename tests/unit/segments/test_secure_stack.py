"""The secured local stack's files and the ACLs each service gets (no broker needed)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from common.settings import Settings
from segments.stack.acls import service_acls
from segments.stack.secure import ADMIN, API, CONNECTOR, USERS, WORKER, SecureKafka, SecureStack

pytestmark = pytest.mark.unit


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_credentials_are_generated_once_and_owner_only(tmp_path: Path) -> None:
    stack = SecureStack(tmp_path)
    stack.files.ensure()
    f = stack.files
    secrets = [f.ca_key, f.server_key, f.keystore, f.redis_password,
               *(f.password_file(u) for u in USERS)]
    assert all(mode(p) == 0o600 for p in secrets)
    assert mode(f.root) == 0o700
    passwords = {u: f.password(u) for u in USERS}
    assert len(set(passwords.values())) == len(USERS)
    assert all(len(p) >= 30 for p in passwords.values())
    f.ensure()
    assert {u: f.password(u) for u in USERS} == passwords  # not regenerated
    written = stack.write_env_files()
    assert set(written) == {"connector", "worker", "api", "admin"}
    for path in written.values():
        assert mode(path) == 0o600
    worker_env = written["worker"].read_text()
    assert "KAFKA_SASL_USERNAME=segments-worker" in worker_env
    assert f"KAFKA_SASL_PASSWORD_FILE={f.password_file(WORKER)}" in worker_env
    assert passwords[WORKER] not in worker_env  # by file, not inline


def test_the_server_certificate_names_loopback_and_chains_to_the_ca(tmp_path: Path) -> None:
    stack = SecureStack(tmp_path)
    stack.files.ensure()
    ca = x509.load_pem_x509_certificate(stack.files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(stack.files.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "localhost" in names.get_values_for_type(x509.DNSName)


def test_broker_properties_and_format_arguments_keep_passwords_off_argv(
        tmp_path: Path) -> None:
    stack = SecureStack(tmp_path)
    stack.files.ensure()
    kafka: SecureKafka = stack.kafka
    props = kafka._properties(kafka.nodes[0])
    assert "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL" in props
    assert "StandardAuthorizer" in props
    assert "allow.everyone.if.no.acl.found=false" in props
    assert f"super.users=User:{ADMIN};User:CN=kafka-broker" in props
    assert "PLAINTEXT://" not in props
    argv = kafka._format_args()
    assert len(argv) == 1
    assert argv[0].startswith("@")
    argfile = Path(argv[0][1:])
    assert mode(argfile) == 0o600
    assert all(stack.files.password(u) not in " ".join(argv) for u in USERS)
    assert all(f"name={u}," in argfile.read_text() for u in USERS)


def test_each_service_gets_only_its_own_grants() -> None:
    settings = Settings(topic_prefix="p.")
    acls = service_acls(settings)
    grants = {(a.principal, a.resource, a.name, a.operation, a.pattern) for a in acls}
    connector, worker, api = (f"User:{u}" for u in (CONNECTOR, WORKER, API))
    assert (connector, "topic", "p.stripe.events", "write", "literal") in grants
    assert (worker, "topic", "p.stripe.events", "read", "literal") in grants
    assert (worker, "topic", "p.segments.membership", "write", "literal") in grants
    assert (worker, "group", "p.segments", "read", "literal") in grants
    assert (worker, "transactional-id", "p.segments-", "write", "prefixed") in grants
    assert (api, "topic", "p.segments.membership", "read", "literal") in grants
    assert (api, "group", "p.segments-read-model", "read", "literal") in grants
    # The worker marks applied rules; the API reads the marks, writes rules (with its
    # own transactional ids) and erasure records, and nothing else.
    assert (worker, "topic", "p.segments.status", "write", "literal") in grants
    assert (api, "topic", "p.segments.status", "read", "literal") in grants
    assert (api, "transactional-id", "p.segments-rules:", "write", "prefixed") in grants
    api_writes = {a.name for a in acls if a.principal == api and a.operation == "write"}
    assert api_writes == {"p.segments.rules", "p.segments.control", "p.segments-rules:"}
    # Nobody but the connector writes raw events; no service may create topics or touch
    # the cluster (the admin does).
    writers = {a.principal for a in acls if a.name == "p.stripe.events" and a.operation == "write"}
    assert writers == {connector}
    assert not [a for a in acls if a.operation == "create" or a.resource == "cluster"]
    assert all(a.name.startswith("p.") for a in acls)
