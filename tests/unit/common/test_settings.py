"""Transport security settings (SPEC part 2): parsing, clear errors, secrets kept out of
repr; the Kafka client options made from them; the Redis URL never shown whole."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from common import kafka
from common.settings import KafkaSecurity, Settings, SettingsError, redact_url
from common.topics import TOPICS, min_insync_replicas, topic_configs

pytestmark = pytest.mark.unit

CA = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
SASL_SSL = {
    "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "KAFKA_SASL_MECHANISM": "scram-sha-512",
    "KAFKA_SASL_USERNAME": "segments-worker",
    "KAFKA_SASL_PASSWORD": "s3cret-pw",
}


def test_plaintext_is_the_default_and_needs_nothing() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_security == KafkaSecurity()
    options = kafka.connection_options(settings)
    assert options == {"bootstrap_servers": "localhost:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_scram_becomes_client_options() -> None:
    settings = Settings.from_env({**SASL_SSL, "KAFKA_BOOTSTRAP_SERVERS": "k1:9093,k2:9093"})
    security = settings.kafka_security
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    options = kafka.connection_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "segments-worker"
    assert options["sasl_plain_password"] == "s3cret-pw"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


async def test_every_client_kind_takes_the_options() -> None:
    settings = Settings.from_env(SASL_SSL)
    made = [kafka.producer(settings), kafka.consumer(settings, "t"), kafka.admin(settings),
            kafka.client(settings)]
    for client in made:
        inner = getattr(client, "client", None) or getattr(client, "_client", client)
        assert inner._security_protocol == "SASL_SSL"
        assert inner._sasl_mechanism == "SCRAM-SHA-512"


def test_password_file_is_read_and_its_newline_dropped(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    env = {**SASL_SSL, "KAFKA_SASL_PASSWORD": "", "KAFKA_SASL_PASSWORD_FILE": str(secret)}
    assert KafkaSecurity.from_env(env).sasl_password == "from-a-file"


def test_secrets_are_not_in_repr() -> None:
    settings = Settings.from_env({**SASL_SSL, "REDIS_URL": "rediss://svc:redis-pw@r:6380/0",
                                  "SEGMENTS_SECRET_KEY": "fernet-key"})
    shown = repr(settings) + str(settings)
    for secret in ("s3cret-pw", "redis-pw", "fernet-key"):
        assert secret not in shown
    assert "segments-worker" in shown  # the rest is still there to debug with


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("rediss://svc:pw%40x@r.example:6380/0?ssl_ca_certs=/ca.pem") == \
        "rediss://svc:***@r.example:6380/0?ssl_ca_certs=/ca.pem"
    assert redact_url("redis://:pw@localhost/1") == "redis://:***@localhost/1"
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


@pytest.mark.parametrize(("env", "message"), [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
    ({**SASL_SSL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM must be one of"),
    ({**SASL_SSL, "KAFKA_SASL_MECHANISM": ""}, "KAFKA_SASL_MECHANISM must be one of"),
    ({**SASL_SSL, "KAFKA_SASL_USERNAME": ""}, "KAFKA_SASL_USERNAME is required"),
    ({**SASL_SSL, "KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE"),
    ({**SASL_SSL, "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}, "not both"),
    ({**SASL_SSL, "KAFKA_SASL_PASSWORD": "", "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"},
     "KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw: cannot read it"),
    # A forgotten protocol must not silently connect in plaintext.
    ({"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "does not use SASL"),
    ({"KAFKA_SSL_CAFILE": str(CA)}, "does not use TLS"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "KAFKA_SSL_CAFILE=/nonexistent/ca.pem: no such file"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": str(CA)},
     "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE"),
    ({"REDIS_URL": "http://u:hunter2@r/0"}, "REDIS_URL must start with"),
    ({"SEGMENTS_PARTITIONS": "eight"}, "SEGMENTS_PARTITIONS must be an integer"),
])
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str],
                                                        message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        Settings.from_env(env)
    assert "s3cret-pw" not in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    env = {**SASL_SSL, "KAFKA_SASL_PASSWORD": "", "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw")}
    with pytest.raises(SettingsError, match="is empty"):
        Settings.from_env(env)


def test_ssl_only_with_system_cas_and_a_client_certificate_pair(tmp_path: Path) -> None:
    security = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"})
    assert security.uses_ssl
    assert not security.uses_sasl
    assert "sasl_mechanism" not in kafka.connection_options(Settings(kafka_security=security))


def test_min_insync_replicas_is_two_at_replication_three() -> None:
    assert min_insync_replicas(1) is None
    assert min_insync_replicas(2) is None
    assert min_insync_replicas(3) == 2
    assert min_insync_replicas(5) == 2
    for spec in TOPICS:
        assert topic_configs(spec, 3)["min.insync.replicas"] == "2"
        assert "min.insync.replicas" not in topic_configs(spec, 1)
