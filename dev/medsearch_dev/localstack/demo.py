"""Load the public sample data into a running local stack (``medsearch demo``).

The sample manifest (``samples/manifest.json``) names DICOM test files shipped by pydicom and pydicom-data
(resolved by name, never downloaded) and a JSONL file of synthetic radiology reports written for this project.
Publishing goes through the same :class:`medsearch.producer.Publisher` as ``medsearch ingest``; re-running it
publishes nothing new (duplicates are skipped by sha256) and returns as soon as the counts are reached.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medsearch.contracts.naming import names_for

if TYPE_CHECKING:
    from rich.console import Console

    from medsearch.ledger import Ledger
    from medsearch_dev.localstack.stack import StackPaths


class DemoError(RuntimeError):
    """The sample data could not be found, published or indexed in time."""


@dataclass(frozen=True)
class SampleSet:
    dicom_files: list[Path]
    reports_file: Path | None

    @property
    def expected_images(self) -> int:
        import pydicom

        uids = set()
        for p in self.dicom_files:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
            uid = ds.get("SOPInstanceUID")
            if uid:
                uids.add(str(uid))
        return len(uids)

    @property
    def expected_reports(self) -> int:
        if self.reports_file is None:
            return 0
        ids = set()
        for line in self.reports_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                obj = json.loads(line)
                ids.add(str(obj.get("report_id") or obj.get("id")))
        return len(ids)


def default_manifest() -> Path:
    """``samples/manifest.json`` of the working directory, else of the source checkout medsearch runs from."""
    here = Path.cwd() / "samples" / "manifest.json"
    if here.exists():
        return here
    return Path(__file__).resolve().parents[3] / "samples" / "manifest.json"


def read_manifest(path: Path) -> SampleSet:
    from pydicom.data import get_testdata_file

    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DemoError(f"cannot read the sample manifest {path}: {err}") from None
    files: list[Path] = []
    for name in manifest.get("dicom", []):
        found = get_testdata_file(name, download=False)
        if not found:
            raise DemoError(f"sample DICOM {name!r} is not installed (pydicom / pydicom-data test files)")
        files.append(Path(str(found)))
    reports = manifest.get("reports")
    reports_file = (path.parent / reports) if reports else None
    if reports_file is not None and not reports_file.exists():
        raise DemoError(f"sample reports file {reports_file} is missing")
    return SampleSet(files, reports_file)


def publish_samples(samples: SampleSet, *, bootstrap: str, object_store_url: str, index: str,
                    ledger: Ledger, console: Console | None = None) -> dict[str, int]:
    """Publish the sample set through the index's ingest ledger (``ledger``),
    as ``medsearch ingest`` does: what the ledger holds as indexed is a duplicate, what it holds as published
    recently is pending, and a broker restart loses nothing it acknowledged (``medsearch ingest --resume``)."""
    from rich.progress import Progress

    from medsearch.producer import DicomFile, Publisher, Rejected, discover

    items = list(discover([*samples.dicom_files, *( [samples.reports_file] if samples.reports_file else [])]))
    summary = {"published": 0, "duplicate": 0, "pending": 0, "rejected": 0}
    publisher = Publisher(bootstrap=bootstrap, object_store_url=object_store_url, index=index, source="demo",
                          ledger=ledger)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("publishing sample data", total=len(items))
            for item in items:
                if isinstance(item, Rejected):
                    summary["rejected"] += 1
                elif isinstance(item, DicomFile):
                    summary[publisher.publish_dicom(item.data, filename=item.path.name).status] += 1
                else:
                    result = publisher.publish_report(report_id=item.report_id, text=item.text,
                                                      study_uid=item.study_uid, report_date=item.report_date)
                    summary[result.status] += 1
                progress.advance(task)
        publisher.flush()
    finally:
        publisher.close()
    return summary


def wait_indexed(*, index: str, milvus_uri: str, images: int, reports: int, timeout: float,
                 console: Console | None = None, bootstrap: str | None = None) -> tuple[int, int]:
    from rich.progress import Progress

    from medsearch.provision import count_rows, milvus_client
    from medsearch_dev.localstack.procs import ServiceError, milvus_ready, wait_until

    names = names_for(index)
    try:
        wait_until(lambda: milvus_ready(milvus_uri), timeout=60, what=f"Milvus at {milvus_uri}", interval=1.0)
    except ServiceError as err:
        raise DemoError(str(err)) from None
    client = milvus_client(milvus_uri, timeout=30)
    deadline = time.monotonic() + timeout
    n_img = n_rep = 0
    try:
        with Progress(console=console, transient=True) as progress:
            t_img = progress.add_task("indexing images", total=images)
            t_rep = progress.add_task("indexing reports", total=reports)
            while time.monotonic() < deadline:
                n_img = count_rows(client, names.images_collection)
                n_rep = count_rows(client, names.reports_collection)
                progress.update(t_img, completed=min(n_img, images))
                progress.update(t_rep, completed=min(n_rep, reports))
                if n_img >= images and n_rep >= reports:
                    return n_img, n_rep
                time.sleep(1.0)
    finally:
        client.close()
    raise DemoError(
        f"sample data not indexed after {timeout:.0f}s: {n_img}/{images} images, {n_rep}/{reports} reports "
        "(see the worker logs under <data-dir>/logs; `medsearch status` shows dead letters)"
    )


def load_samples(paths: StackPaths, *, manifest: Path | None, timeout: float,
                 console: Console | None = None) -> dict[str, int]:
    from medsearch_dev.localstack.stack import read_state

    state = read_state(paths)
    samples = read_manifest(manifest or default_manifest())
    ports = state["ports"]
    bootstrap = f"127.0.0.1:{ports['kafka']}"
    from medsearch.ledger import Ledger
    from medsearch_dev.localstack import postgres as pg

    if not ports.get("postgres"):
        raise DemoError("the local stack runs no PostgreSQL (the ingest ledger): run `medsearch up` again")
    ledger = Ledger(pg.dsn(ports["postgres"]), state["index"], password=pg.password(paths.data_dir))
    try:
        summary = publish_samples(samples, bootstrap=bootstrap, object_store_url=f"file://{paths.objects}",
                                  index=state["index"], ledger=ledger, console=console)
    finally:
        ledger.close()
    if console is not None:
        console.print(f"[green]✓[/green] sample data: {summary['published']} published, "
                      f"{summary['duplicate']} already indexed, {summary['pending']} pending, "
                      f"{summary['rejected']} rejected")
    n_img, n_rep = wait_indexed(index=state["index"], milvus_uri=f"http://127.0.0.1:{ports['milvus']}",
                                images=samples.expected_images, reports=samples.expected_reports,
                                timeout=timeout, console=console, bootstrap=bootstrap)
    if console is not None:
        console.print(f"[green]✓[/green] indexed {n_img} images and {n_rep} reports")
    return {"images": n_img, "reports": n_rep, **summary}
