"""Security options for every Kafka client medsearch creates (producers, consumers, admin clients).

:func:`kafka_security_options` turns the ``MEDSEARCH_KAFKA_*`` settings into kafka-python keyword arguments and
refuses inconsistent combinations with the setting to fix, so that no client silently talks plaintext to a
cluster that expects TLS or SASL. Pure: no connection is made here.
"""

from __future__ import annotations

from typing import Any

from medsearch.contracts.settings import ServiceSettings


class KafkaSecurityError(ValueError):
    """The Kafka security settings contradict each other or name a missing file."""


def kafka_security_options(settings: ServiceSettings) -> dict[str, Any]:
    """kafka-python keyword arguments for ``KafkaProducer``/``KafkaConsumer``/``KafkaAdminClient``."""
    protocol = settings.kafka_security_protocol
    opts: dict[str, Any] = {"security_protocol": protocol}
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    if sasl:
        missing = [name for name, value in (
            ("MEDSEARCH_KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
            ("MEDSEARCH_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
            ("MEDSEARCH_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
        ) if not value]
        if missing:
            raise KafkaSecurityError(f"MEDSEARCH_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
        assert settings.kafka_sasl_password is not None  # checked above
        opts.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                    sasl_plain_username=settings.kafka_sasl_username,
                    sasl_plain_password=settings.kafka_sasl_password.get_secret_value())
    elif settings.kafka_sasl_mechanism or settings.kafka_sasl_username or settings.kafka_sasl_password:
        raise KafkaSecurityError(
            f"SASL credentials are set but MEDSEARCH_KAFKA_SECURITY_PROTOCOL={protocol}: use SASL_SSL (or "
            "SASL_PLAINTEXT), or remove MEDSEARCH_KAFKA_SASL_*")
    files = (("MEDSEARCH_KAFKA_SSL_CAFILE", "ssl_cafile", settings.kafka_ssl_cafile),
             ("MEDSEARCH_KAFKA_SSL_CERTFILE", "ssl_certfile", settings.kafka_ssl_certfile),
             ("MEDSEARCH_KAFKA_SSL_KEYFILE", "ssl_keyfile", settings.kafka_ssl_keyfile))
    if tls:
        for env, key, path in files:
            if path is None:
                continue
            if not path.is_file():
                raise KafkaSecurityError(f"{env}={path}: no such file")
            opts[key] = str(path)
        if bool(settings.kafka_ssl_certfile) != bool(settings.kafka_ssl_keyfile):
            raise KafkaSecurityError(
                "mutual TLS needs both MEDSEARCH_KAFKA_SSL_CERTFILE and MEDSEARCH_KAFKA_SSL_KEYFILE")
        opts["ssl_check_hostname"] = settings.kafka_ssl_check_hostname
    elif any(path for _, _, path in files):
        raise KafkaSecurityError(
            f"TLS files are set but MEDSEARCH_KAFKA_SECURITY_PROTOCOL={protocol}: use SSL or SASL_SSL")
    return opts
