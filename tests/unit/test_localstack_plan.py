"""Pure parts of the local stack: paths, token, service plan, supervisord configuration, port checks."""

from __future__ import annotations

import configparser
import stat
from pathlib import Path

from medsearch_dev.localstack.stack import Ports, StackPaths, busy_ports, ensure_token, plan_services, supervisor_config

from medsearch.contracts.spec import default_index


def test_token_is_private_and_stable(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / "d")
    t1 = ensure_token(paths)
    assert len(t1) >= 32
    assert stat.S_IMODE(paths.token.stat().st_mode) == 0o600
    assert ensure_token(paths) == t1


def test_plan_orders_services_and_skips_missing_components(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    everything = plan_services(paths=paths, ports=Ports(), index=default_index(), weights="random",
                               available=lambda m: True)
    assert [s.name for s in everything] == ["broker", "postgres", "milvus", "model-server", "dicom-worker",
                                            "report-worker", "api", "dicom-receiver"]
    receiver = everything[-1]
    assert receiver.health == "tcp" and receiver.ports == (11112,)
    assert receiver.env["MEDSEARCH_RECEIVER_PORT"] == "11112" and receiver.env["MEDSEARCH_INDEX"] == "demo"
    model = everything[3]
    assert "--weights" in model.command and model.command[model.command.index("--weights") + 1] == "random"
    assert model.env["MEDSEARCH_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"
    assert everything[-2].env["MEDSEARCH_API_TOKENS_FILE"] == str(paths.api_tokens)
    core = plan_services(paths=paths, ports=Ports(), index=default_index(), weights="random",
                         available=lambda m: False)
    assert [s.name for s in core] == ["broker", "postgres", "milvus"]


def test_postgres_runs_as_the_given_user_on_loopback(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    services = plan_services(paths=paths, ports=Ports(postgres=15432), index=default_index(), weights="random",
                             available=lambda m: True, pg_password="pw", pg_user="medsearch-pg")
    pg = next(s for s in services if s.name == "postgres")
    assert pg.user == "medsearch-pg" and pg.ports == (15432,)
    assert "listen_addresses=127.0.0.1" in pg.command and str(paths.postgres) in pg.command
    api = next(s for s in services if s.name == "api")
    assert api.env["MEDSEARCH_POSTGRES_DSN"] == "postgresql://postgres@127.0.0.1:15432/medsearch"
    assert api.env["MEDSEARCH_POSTGRES_PASSWORD"] == "pw"
    cp = configparser.RawConfigParser()
    cp.read_string(supervisor_config(paths, services))
    assert cp.get("program:postgres", "user") == "medsearch-pg"
    assert not cp.has_option("program:api", "user")


def test_supervisor_config_parses_and_escapes(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / "odd %dir")
    services = plan_services(paths=paths, ports=Ports(api=18000), index=default_index(), weights="random",
                             available=lambda m: True)
    text = supervisor_config(paths, services)
    cp = configparser.RawConfigParser()
    cp.read_string(text)
    assert {s for s in cp.sections() if s.startswith("program:")} == {f"program:{s.name}" for s in services}
    assert cp.get("program:api", "autostart") == "false"
    assert "%%dir" in cp.get("supervisord", "logfile")  # supervisord would expand a bare %
    assert 'MEDSEARCH_API_PORT="18000"' in cp.get("program:api", "environment")


def test_long_data_dir_gets_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    assert len(str(StackPaths(deep).socket)) < 100


def test_busy_ports_names_the_service() -> None:
    taken = {9092}
    assert busy_ports([("broker", 9092), ("api", 8000)], in_use=lambda p: p in taken) == ["broker port 9092"]
