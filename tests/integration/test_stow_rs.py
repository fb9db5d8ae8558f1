"""STOW-RS against the real gateway process (``python -m medsearch_api``) with a real DICOMweb client
(``dicomweb-client``): instances are stored and indexed by the real DICOM worker; a bad part fails alone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from medsearch_dev.localstack import procs
from medsearch_dev.testing import wait_for
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from test_dicom_ingest import Env, env, model_server  # noqa: F401  # the shared real-process fixtures

pytestmark = pytest.mark.integration
TOKEN = "stow-ingester-token-0123456789"


@pytest.fixture()
def gateway(env: Env, tmp_path: Path) -> Iterator[str]:  # noqa: F811  # env is the imported fixture
    port = procs.free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} ingester stow-test\n", encoding="utf-8")
    environ = {**env.worker_env(), "MEDSEARCH_API_HOST": "127.0.0.1", "MEDSEARCH_API_PORT": str(port),
               "MEDSEARCH_API_TOKENS_FILE": str(tokens)}
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "api.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "medsearch_api"], env=environ, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        procs.wait_until(lambda: procs.http_ready(f"{url}/healthz"), timeout=180, what="gateway", proc=proc)
        yield url
    finally:
        procs.stop_process(proc, timeout=20)


def test_stow_rs_with_dicomweb_client_stores_good_instances_and_fails_a_bad_one(
    env: Env, gateway: str  # noqa: F811  # env is the imported fixture
) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=f"{gateway}/dicomweb", headers={"Authorization": f"Bearer {TOKEN}"})
    good = [pydicom.dcmread(get_testdata_file(n)) for n in ("CT_small.dcm", "RG1_J2KR.dcm", "MR_small_RLE.dcm")]
    bad = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    bad.SOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    bad.file_meta.MediaStorageSOPInstanceUID = bad.SOPInstanceUID
    bad.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder can read its pixels
    bad.PixelData = encapsulate([b"\x00" * 64])
    result = client.store_instances([*good, bad])
    stored = [str(item.ReferencedSOPInstanceUID) for item in result.ReferencedSOPSequence]
    assert sorted(stored) == sorted(str(ds.SOPInstanceUID) for ds in good)
    (failed,) = result.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == bad.SOPInstanceUID and failed.FailureReason == 0xC122
    # one audit record for the request: who stored which instances of which studies, a partial failure
    from medsearch import audit, pgstore

    with pgstore.connect(env.dsn) as conn:
        (event,) = audit.list_events(conn, env.index)
    assert (event.operation, event.action, event.principal, event.outcome) == ("dicomweb STOW-RS", "C", "stow-test",
                                                                                audit.MINOR_FAILURE)
    assert sorted(event.image_ids) == sorted(stored) and event.outcome_desc == "1 of 4 instances failed"
    assert set(event.study_uids) == {str(ds.StudyInstanceUID) for ds in good}

    env.start_worker()
    expected = {str(ds.SOPInstanceUID) for ds in good}
    wait_for(lambda: env.count() == len(expected) or env.count(), 180, "STOW-RS instances indexed")
    assert {r["sop_instance_uid"] for r in env.rows()} == expected
    # The same instances again: success (already stored), nothing new indexed.
    again = client.store_instances(good)
    assert len(again.ReferencedSOPSequence) == len(good)
    assert env.count() == len(expected)
