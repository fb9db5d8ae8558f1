"""The local stack: every medsearch service as a child process of a private supervisord, on loopback.

``medsearch up`` writes a supervisord configuration under ``<data-dir>/run``, starts supervisord, then starts
the services one by one in dependency order, waiting for each health check (broker → PostgreSQL → Milvus →
provisioning of the index's topics, PostgreSQL schema and collections → model server → workers → gateway).
``medsearch down`` stops them and supervisord. State (ports, URLs, index) is kept in
``<data-dir>/run/stack.json`` for ``status``.

The pure parts (paths, the service plan, the supervisord configuration) are separate from the process control
so they can be unit-tested.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from medsearch.contracts.naming import names_for
from medsearch.contracts.spec import MedicalSearchIndex
from medsearch_dev.localstack import postgres as pg
from medsearch_dev.localstack import procs

log = logging.getLogger(__name__)

STATE_FILE = "stack.json"


class StackError(RuntimeError):
    """The local stack cannot be started, reached or stopped; the message says why and what to do."""


# ------------------------------------------------------------------------------------------------------ layout


@dataclass(frozen=True)
class StackPaths:
    data_dir: Path

    @property
    def run(self) -> Path:
        return self.data_dir / "run"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def milvus(self) -> Path:
        return self.data_dir / "milvus"

    @property
    def postgres(self) -> Path:
        """The PostgreSQL cluster (owned by the server's user)."""
        return self.data_dir / "postgres"

    @property
    def objects(self) -> Path:
        return self.data_dir / "objects"

    @property
    def models(self) -> Path:
        return self.data_dir / "models"

    @property
    def token(self) -> Path:
        return self.data_dir / "token"

    @property
    def api_tokens(self) -> Path:
        return self.run / "api-tokens"

    @property
    def index_spec(self) -> Path:
        return self.run / "index.yaml"

    @property
    def supervisor_conf(self) -> Path:
        return self.run / "supervisord.conf"

    @property
    def supervisor_pid(self) -> Path:
        return self.run / "supervisord.pid"

    @property
    def state(self) -> Path:
        return self.run / STATE_FILE

    @property
    def socket(self) -> Path:
        candidate = self.run / "supervisor.sock"
        if len(str(candidate)) < 100:
            return candidate
        # AF_UNIX paths are limited to ~108 bytes: fall back to a short per-data-dir name in /tmp.
        import hashlib

        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        return Path("/tmp") / f"medsearch-{os.getuid()}-{digest}.sock"

    def create(self) -> None:
        for d in (self.run, self.logs, self.milvus, self.objects, self.models):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run, 0o700)


def ensure_token(paths: StackPaths) -> str:
    """The local API token (``<data-dir>/token``, mode 600), created on first use."""
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    if paths.token.exists():
        token = paths.token.read_text(encoding="utf-8").strip()
        if token:
            os.chmod(paths.token, 0o600)
            return token
    token = secrets.token_urlsafe(32)
    fd = os.open(paths.token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


# ---------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    milvus: int = 19530
    model_http: int = 8080
    model_grpc: int = 8081
    api: int = 8000
    postgres: int = 0  # 0: a free port, chosen when the stack starts
    dicom: int = 11112

    def items(self) -> list[tuple[str, int]]:
        return list(asdict(self).items())


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health: str  # "kafka" | "milvus" | "http" | "tcp" | "process"
    url: str = ""
    health_url: str = ""
    ports: tuple[int, ...] = ()
    start_timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # run as this user (supervisord drops privileges; PostgreSQL refuses root)
    stop_signal: str = "TERM"


def module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def plan_services(
    *,
    paths: StackPaths,
    ports: Ports,
    index: MedicalSearchIndex,
    weights: str,
    backend: str = "auto",
    available: Callable[[str], bool] = module_available,
    pg_password: str = "",
    pg_user: str | None = None,
) -> list[Service]:
    """The services of the local stack in start order. Components that are not installed are left out.
    ``pg_password`` / ``pg_user``: PostgreSQL's superuser password and the system user it runs as (None: this
    one)."""
    py = sys.executable
    kafka = f"127.0.0.1:{ports.kafka}"
    milvus = f"http://127.0.0.1:{ports.milvus}"
    model_url = f"http://127.0.0.1:{ports.model_http}"
    pg_dsn = pg.dsn(ports.postgres)
    spec = index.spec
    common = {
        "MEDSEARCH_INDEX": index.name,
        "MEDSEARCH_INDEX_SPEC_FILE": str(paths.index_spec),
        "MEDSEARCH_KAFKA_BOOTSTRAP": kafka,
        "MEDSEARCH_MILVUS_URI": milvus,
        "MEDSEARCH_POSTGRES_DSN": pg_dsn,
        "MEDSEARCH_POSTGRES_PASSWORD": pg_password,
        "MEDSEARCH_MODEL_SERVER_URL": model_url,
        "MEDSEARCH_MODEL_NAME": spec.embedding.name,
        "MEDSEARCH_OBJECT_STORE_URL": f"file://{paths.objects}",
        "MEDSEARCH_DATA_DIR": str(paths.data_dir),
        "MEDSEARCH_MODEL_CACHE_DIR": str(paths.models),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    services = [
        Service("broker", procs.tansu_command(ports.kafka), "kafka", url=f"kafka://{kafka}", ports=(ports.kafka,),
                start_timeout=30),
        Service("postgres", pg.server_command(paths.postgres, ports.postgres), "postgres", url=pg_dsn,
                ports=(ports.postgres,), start_timeout=60, user=pg_user, stop_signal="INT"),  # INT: fast shutdown
        Service("milvus", procs.milvus_lite_command(paths.milvus, ports.milvus), "milvus", url=milvus,
                ports=(ports.milvus,), start_timeout=120),
    ]
    if available("medsearch_model_server.__main__"):
        services.append(
            Service(
                "model-server",
                [py, "-m", "medsearch_model_server", "--model-name", spec.embedding.name, "--weights", weights,
                 "--backend", backend, "--input-size", str(spec.embedding.input_size),
                 "--max-batch-size", str(spec.predictor.batcher.max_batch_size),
                 "--max-latency-ms", str(spec.predictor.batcher.max_latency_ms),
                 "--http-port", str(ports.model_http), "--grpc-port", str(ports.model_grpc)]
                + (["--weights-sha256", spec.embedding.sha256]
                   if spec.embedding.sha256 and weights == spec.embedding.weights else []),
                "http", url=model_url, health_url=f"{model_url}/v2/health/ready",
                ports=(ports.model_http, ports.model_grpc), start_timeout=600, env=common,
            )
        )
    if available("medsearch_workers.dicom_worker"):
        services.append(Service("dicom-worker", [py, "-m", "medsearch_workers.dicom_worker"], "process", env=common))
    if available("medsearch_workers.report_worker"):
        services.append(Service("report-worker", [py, "-m", "medsearch_workers.report_worker"], "process",
                                env=common, start_timeout=180))
    if available("medsearch_api.__main__"):
        api_url = f"http://127.0.0.1:{ports.api}"
        services.append(
            Service(
                "api", [py, "-m", "medsearch_api"], "http", url=api_url, health_url=f"{api_url}/healthz",
                ports=(ports.api,), start_timeout=180,
                env={**common, "MEDSEARCH_API_HOST": "127.0.0.1", "MEDSEARCH_API_PORT": str(ports.api),
                     "MEDSEARCH_API_TOKENS_FILE": str(paths.api_tokens)},
            )
        )
    if available("pynetdicom"):
        # The DICOM receiver (C-STORE SCP): modalities and PACS send to AE MEDSEARCH on this port.
        dicom_url = f"tcp://127.0.0.1:{ports.dicom}"
        services.append(
            Service(
                "dicom-receiver", [py, "-m", "medsearch.cli", "receive"], "tcp",
                url=f"dicom://MEDSEARCH@127.0.0.1:{ports.dicom}", health_url=dicom_url, ports=(ports.dicom,),
                start_timeout=60,
                env={**common, "MEDSEARCH_RECEIVER_HOST": "127.0.0.1", "MEDSEARCH_RECEIVER_PORT": str(ports.dicom)},
            )
        )
    return services


def _ini_value(value: str) -> str:
    """supervisord expands ``%(name)s``: escape literal percent signs."""
    return value.replace("%", "%%")


def supervisor_config(paths: StackPaths, services: list[Service]) -> str:
    """The supervisord configuration text for ``services`` (every program is started on demand, in order)."""
    lines = [
        "[unix_http_server]",
        f"file={_ini_value(str(paths.socket))}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={_ini_value(str(paths.logs / 'supervisord.log'))}",
        f"pidfile={_ini_value(str(paths.supervisor_pid))}",
        f"childlogdir={_ini_value(str(paths.logs))}",
        f"directory={_ini_value(str(paths.data_dir))}",
        "logfile_maxbytes=10MB",
        "logfile_backups=2",
        "nodaemon=false",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
    ]
    for s in services:
        env = ",".join(f'{k}="{_ini_value(v).replace(chr(34), "")}"' for k, v in sorted(s.env.items()))
        lines += [
            f"[program:{s.name}]",
            f"command={_ini_value(shlex.join(s.command))}",
            "autostart=false",
            "autorestart=unexpected",
            "startsecs=2",
            "startretries=3",
            f"stopsignal={s.stop_signal}",
            "stopwaitsecs=20",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_ini_value(str(paths.logs / (s.name + '.log')))}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
        ]
        if s.user:
            lines.append(f"user={s.user}")
        if env:
            lines.append(f"environment={env}")
        lines.append("")
    return "\n".join(lines)


def busy_ports(ports: list[tuple[str, int]], in_use: Callable[[int], bool] = procs.port_in_use) -> list[str]:
    return [f"{name} port {port}" for name, port in ports if in_use(port)]


# -------------------------------------------------------------------------------------------- process control


def _rpc(paths: StackPaths) -> Any:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, serverurl=f"unix://{paths.socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def supervisor_pid(paths: StackPaths) -> int | None:
    try:
        pid = int(paths.supervisor_pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def is_running(paths: StackPaths) -> bool:
    if supervisor_pid(paths) is None:
        return False
    try:
        _rpc(paths).supervisor.getState()
        return True
    except (OSError, xmlrpc.client.Fault):
        return False


def read_state(paths: StackPaths) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(paths.state.read_text(encoding="utf-8"))
        return data
    except (OSError, json.JSONDecodeError) as err:
        raise StackError(f"no local stack state in {paths.run} (is it running? try `medsearch up`)") from err


def _healthy(s: Service, paths: StackPaths | None = None) -> bool:
    if s.health == "postgres":  # the server answers (its ``postgres`` database: ours is created afterwards)
        from psycopg.conninfo import make_conninfo

        from medsearch import pgstore

        secret = pg.password(paths.data_dir) if paths is not None else None
        return pgstore.ready(make_conninfo(s.url, dbname="postgres"), secret)
    if s.health == "kafka":
        return procs.kafka_ready(s.url.removeprefix("kafka://"))
    if s.health == "milvus":
        return procs.milvus_ready(s.url)
    if s.health == "http":
        return procs.http_ready(s.health_url)
    if s.health == "tcp":
        host, _, port = s.health_url.removeprefix("tcp://").rpartition(":")
        return procs.port_in_use(int(port), host)
    return True


def _log_tail(paths: StackPaths, name: str, lines: int = 15) -> str:
    try:
        text = (paths.logs / f"{name}.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


@dataclass
class StackHandle:
    paths: StackPaths
    services: list[Service]
    index: MedicalSearchIndex
    ports: Ports

    def state(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.paths.data_dir),
            "index": self.index.name,
            "ports": asdict(self.ports),
            "started_at": time.time(),
            "services": [
                {"name": s.name, "url": s.url, "health": s.health, "health_url": s.health_url} for s in self.services
            ],
        }


def start_stack(
    *,
    paths: StackPaths,
    index: MedicalSearchIndex,
    ports: Ports,
    weights: str,
    backend: str = "auto",
    progress: Callable[[str, str], None] = lambda name, msg: None,
) -> StackHandle:
    """Start supervisord and every service in order, waiting for health; raises :class:`StackError`."""
    import yaml

    from medsearch.provision import (
        ProvisionError,
        ensure_collections,
        ensure_schema,
        ensure_topics,
        kafka_admin,
        milvus_client,
    )

    paths.create()
    if is_running(paths):
        raise StackError(f"a local stack is already running from {paths.data_dir} (stop it with `medsearch down`)")
    if not ports.postgres:
        ports = replace(ports, postgres=procs.free_port())
    try:
        pg_user = pg.run_user()
        pg_password = pg.password(paths.data_dir)
    except pg.PostgresError as err:
        raise StackError(str(err)) from err
    token = ensure_token(paths)
    if index.spec.privacy.deidentify != "none":
        from medsearch.dicomnet.deid import ensure_secret_file

        ensure_secret_file(paths.data_dir)  # <data-dir>/deid-secret: the UID remapping seed of every service
    paths.api_tokens.write_text(f"{token} admin local\n", encoding="utf-8")
    os.chmod(paths.api_tokens, 0o600)
    paths.index_spec.write_text(
        yaml.safe_dump(index.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False),
        encoding="utf-8",
    )
    services = plan_services(paths=paths, ports=ports, index=index, weights=weights, backend=backend,
                             pg_password=pg_password, pg_user=pg_user)
    taken = busy_ports([(s.name, p) for s in services for p in s.ports])
    if taken:
        raise StackError(
            "cannot start the local stack: " + ", ".join(taken) + " already in use by another process "
            "(stop it, or choose other ports with --port-offset or the --*-port options)"
        )
    try:
        if pg.init_cluster(paths.postgres, pg_password, pg_user):
            progress("postgres", f"cluster created in {paths.postgres}")
    except pg.PostgresError as err:
        raise StackError(str(err)) from err
    paths.supervisor_conf.write_text(supervisor_config(paths, services), encoding="utf-8")
    paths.socket.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(paths.supervisor_conf)],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    procs.wait_until(lambda: is_running(paths), timeout=20, what="supervisord")
    handle = StackHandle(paths, services, index, ports)
    rpc = _rpc(paths)
    try:
        for s in services:
            progress(s.name, "starting")
            try:
                rpc.supervisor.startProcess(s.name, True)
            except xmlrpc.client.Fault as err:
                raise StackError(f"{s.name} failed to start: {err.faultString}\n{_log_tail(paths, s.name)}") from None
            deadline = time.monotonic() + s.start_timeout
            while not _healthy(s, paths):
                info = rpc.supervisor.getProcessInfo(s.name)
                if info["statename"] in ("EXITED", "FATAL", "BACKOFF"):
                    raise StackError(f"{s.name} exited while starting (see {paths.logs / (s.name + '.log')}):\n"
                                     f"{_log_tail(paths, s.name)}")
                if time.monotonic() > deadline:
                    raise StackError(f"{s.name} was not healthy after {s.start_timeout:.0f}s "
                                     f"(see {paths.logs / (s.name + '.log')})")
                time.sleep(0.5)
            progress(s.name, "healthy")
            if s.name == "milvus":
                progress("provision", "starting")
                try:
                    admin = kafka_admin(f"127.0.0.1:{ports.kafka}")
                    try:
                        topics = ensure_topics(admin, index.name, index.spec)
                    finally:
                        admin.close()
                    pg.ensure_database(ports.postgres, pg_password)
                    schema = ensure_schema(pg.dsn(ports.postgres), index.name, index.spec, password=pg_password)
                    client = milvus_client(s.url)
                    try:
                        colls = ensure_collections(client, index.name, index.spec)
                    finally:
                        client.close()
                except ProvisionError as err:
                    raise StackError(f"provisioning index {index.name!r} failed: {err}") from err
                except Exception as err:  # psycopg errors from creating the database
                    raise StackError(f"provisioning index {index.name!r} failed: {err}") from err
                if any(p.reason == "CollectionSchemaChanged" for p in colls.problems):
                    raise StackError(
                        f"{paths.milvus} holds Milvus collections of an older medsearch (before PostgreSQL became "
                        f"the system of record) that the workers cannot write to. Remove {paths.milvus} and run "
                        f"`medsearch up` again: the collections are created empty; ingest the data again (or, "
                        f"when PostgreSQL already holds it, `medsearch reindex --index {index.name}` refills them)")
                for problem in topics.problems + schema.problems + colls.problems:
                    log.warning("index %s: %s (%s): %s", index.name, problem.field, problem.reason, problem.message)
                progress("provision", f"topics, PostgreSQL schema and collections of index {index.name!r} ready")
    except BaseException:
        stop_stack(paths)
        raise
    paths.state.write_text(json.dumps(handle.state(), indent=2), encoding="utf-8")
    return handle


def stop_stack(paths: StackPaths, timeout: float = 60.0) -> bool:
    """Stop every service and supervisord. Returns False when nothing was running."""
    pid = supervisor_pid(paths)
    if pid is None:
        paths.state.unlink(missing_ok=True)
        return False
    try:
        rpc = _rpc(paths)
        # Reverse start order: gateway and workers first, the broker last.
        names = [p["name"] for p in rpc.supervisor.getAllProcessInfo()]
        try:
            order = [s["name"] for s in read_state(paths)["services"]][::-1]
        except StackError:
            order = names[::-1]
        for name in order:
            if name in names:
                try:
                    rpc.supervisor.stopProcess(name, True)
                except xmlrpc.client.Fault:
                    pass  # NOT_RUNNING: already stopped
        rpc.supervisor.shutdown()
    except (OSError, xmlrpc.client.Fault):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    paths.state.unlink(missing_ok=True)
    paths.socket.unlink(missing_ok=True)
    return True


def process_states(paths: StackPaths) -> dict[str, str]:
    try:
        return {p["name"]: p["statename"] for p in _rpc(paths).supervisor.getAllProcessInfo()}
    except (OSError, xmlrpc.client.Fault):
        return {}


def stack_status(paths: StackPaths) -> dict[str, Any]:
    """Services with URL, process state and health, and per-index counts (images, reports, dead letters)."""
    state = read_state(paths)
    running = is_running(paths)
    states = process_states(paths) if running else {}
    services = []
    for s in state["services"]:
        svc = Service(s["name"], [], s["health"], url=s["url"], health_url=s.get("health_url", ""))
        pstate = states.get(s["name"], "STOPPED")
        healthy = pstate == "RUNNING" and _healthy(svc, paths)
        services.append({"name": s["name"], "url": s["url"], "state": pstate, "healthy": healthy})
    out: dict[str, Any] = {"running": running, "data_dir": state["data_dir"], "services": services, "indexes": []}
    ports = state["ports"]
    if running:
        pg_dsn = pg.dsn(ports["postgres"]) if ports.get("postgres") else None
        out["indexes"].append(index_counts(state["index"], f"127.0.0.1:{ports['kafka']}",
                                           f"http://127.0.0.1:{ports['milvus']}", pg_dsn,
                                           pg.password(paths.data_dir) if pg_dsn else None))
    return out


def index_counts(index: str, bootstrap: str, milvus_uri: str, pg_dsn: str | None = None,
                 pg_password: str | None = None) -> dict[str, Any]:
    """Rows per index: ``images`` / ``reports`` in PostgreSQL (the system of record), ``milvus_images`` /
    ``milvus_reports`` in the ANN collections (fewer while the workers catch up; run ``medsearch reindex`` when
    they stay fewer), and the dead letters."""
    from medsearch import pgstore
    from medsearch.provision import ProvisionError, count_rows, milvus_client

    names = names_for(index)
    counts: dict[str, Any] = {"index": index, "images": None, "reports": None, "milvus_images": None,
                              "milvus_reports": None, "dead_letters": None}
    if pg_dsn is not None:
        try:
            with pgstore.connect(pg_dsn, pg_password, timeout=5) as conn:
                counts.update(pgstore.count_rows(conn, index))
        except Exception as err:  # noqa: BLE001  # status reports, never raises
            counts["error"] = f"postgres: {err}"
    try:
        client = milvus_client(milvus_uri, timeout=5)
        try:
            counts["milvus_images"] = count_rows(client, names.images_collection)
            counts["milvus_reports"] = count_rows(client, names.reports_collection)
        finally:
            client.close()
    except (ProvisionError, Exception) as err:  # noqa: BLE001  # status reports, never raises
        counts["error"] = f"milvus: {err}"
    if pg_dsn is None:  # a stack started before PostgreSQL was part of it
        counts["images"], counts["reports"] = counts["milvus_images"], counts["milvus_reports"]
    try:
        counts["dead_letters"] = topic_message_count(bootstrap, names.dlq_topic)
    except Exception as err:  # noqa: BLE001  # status reports, never raises
        counts["error"] = f"kafka: {err}"
    return counts


def topic_message_count(bootstrap: str, topic: str) -> int:
    """Messages in a topic (sum of end minus beginning offsets over its partitions)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), request_timeout_ms=5000)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return 0
        end = consumer.end_offsets(tps)
        begin = consumer.beginning_offsets(tps)
        return int(sum(end[tp] - begin[tp] for tp in tps))
    finally:
        consumer.close()
