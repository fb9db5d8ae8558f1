"""Kafka TLS/SASL settings reach every client medsearch creates, and contradictions are refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medsearch.contracts.settings import ServiceSettings
from medsearch.kafka_security import KafkaSecurityError, kafka_security_options


def settings(**kw: Any) -> ServiceSettings:
    return ServiceSettings(**kw)


def test_plaintext_is_the_default_and_adds_nothing_else() -> None:
    assert kafka_security_options(settings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_scram_and_a_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    opts = kafka_security_options(settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="medsearch",
        kafka_sasl_password="s3cret", kafka_ssl_cafile=ca))
    assert opts == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_plain_username": "medsearch", "sasl_plain_password": "s3cret",
                    "ssl_cafile": str(ca), "ssl_check_hostname": True}


def test_mutual_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    opts = kafka_security_options(settings(kafka_security_protocol="SSL", kafka_ssl_certfile=cert,
                                           kafka_ssl_keyfile=key, kafka_ssl_check_hostname=False))
    assert opts == {"security_protocol": "SSL", "ssl_certfile": str(cert), "ssl_keyfile": str(key),
                    "ssl_check_hostname": False}


@pytest.mark.parametrize(("kw", "names"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "MEDSEARCH_KAFKA_SASL_MECHANISM"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u"},
     "MEDSEARCH_KAFKA_SASL_PASSWORD"),
    ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "SASL credentials are set"),
    ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "TLS files are set"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"}, "no such file"),
])
def test_contradictions_name_the_setting(kw: dict[str, Any], names: str) -> None:
    with pytest.raises(KafkaSecurityError, match=names):
        kafka_security_options(settings(**kw))


class Captured(Exception):
    """Raised by the fake kafka-python classes once they have recorded their keyword arguments."""


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import kafka

    seen: list[dict[str, Any]] = []

    def fake(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        raise Captured()

    for cls in ("KafkaProducer", "KafkaConsumer", "KafkaAdminClient"):
        monkeypatch.setattr(kafka, cls, fake)
    return seen


SASL = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_plain_username": "u",
        "sasl_plain_password": "p"}


def test_publisher_admin_and_dlq_reader_pass_the_options(captured: list[dict[str, Any]], tmp_path: Path) -> None:
    from medsearch import dlq, provision
    from medsearch.producer import Publisher

    with pytest.raises(Captured):
        Publisher(bootstrap="k:9092", object_store_url=f"file://{tmp_path}", index="demo", security=SASL)
    with pytest.raises(Captured):
        provision.kafka_admin("k:9092", security=SASL)
    with pytest.raises(Captured):
        dlq.read("k:9092", "demo", security=SASL)
    assert len(captured) == 3
    for kwargs in captured:
        assert {k: kwargs[k] for k in SASL} == SASL


def test_the_worker_and_the_cli_read_them_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsearch_workers.consumer import _kafka_common

    from medsearch.cli import app
    from medsearch.contracts.settings import WorkerSettings

    env = {"MEDSEARCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "MEDSEARCH_KAFKA_SASL_MECHANISM": "PLAIN",
           "MEDSEARCH_KAFKA_SASL_USERNAME": "u", "MEDSEARCH_KAFKA_SASL_PASSWORD": "p"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    common = _kafka_common(WorkerSettings(kafka_bootstrap="a:1,b:2"))
    assert common == {"bootstrap_servers": ["a:1", "b:2"], **SASL}
    # A contradiction stops the CLI before anything is sent, naming the setting.
    monkeypatch.delenv("MEDSEARCH_KAFKA_SASL_PASSWORD")
    result = CliRunner().invoke(app, ["dlq", "list", "--index", "demo"])
    assert result.exit_code == 2
    assert "MEDSEARCH_KAFKA_SASL_PASSWORD" in result.output


def test_the_gateways_broker_readiness_check_uses_them(captured: list[dict[str, Any]]) -> None:
    from medsearch_api.app import _kafka_reachable

    from medsearch.contracts.settings import ApiSettings

    s = ApiSettings(kafka_bootstrap="k:9092", kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                    kafka_sasl_username="u", kafka_sasl_password="p")
    with pytest.raises(Captured):  # the fake admin client stops here, having recorded what it was given
        _kafka_reachable(s)
    assert {k: captured[0][k] for k in SASL} == SASL
