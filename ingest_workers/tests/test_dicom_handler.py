"""The DICOM batch handler with a fake model server and a fake Milvus (real files, real object store on disk)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from medsearch_workers.consumer import Incoming, TransientError
from medsearch_workers.dicom_worker import DicomBatchHandler, StageTimes, model_input, thumbnail_url
from PIL import Image
from pydicom.data import get_testdata_file
from worker_fakes import MemoryWriter

from medsearch import store
from medsearch.contracts.messages import DicomObject
from medsearch.contracts.spec import MedicalSearchIndexSpec, parse_spec

INDEX = "unit"
SIZE = 64


class Down(RuntimeError):
    pass


class Rejected(ValueError):
    pass


class FakeEmbedder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.down = False
        self.reject_mean_below: float | None = None

    def embed_tensors(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(tuple(batch.shape))
        if self.down:
            raise Down("connection refused")
        if self.reject_mean_below is not None and any(t.mean() < self.reject_mean_below for t in batch):
            raise Rejected("bad input")
        out = np.zeros((batch.shape[0], 1024), dtype=np.float32)
        out[:, 0] = 1.0
        return out


class FakeWriter(MemoryWriter):
    def __init__(self) -> None:
        super().__init__("sop_instance_uid")


def _data(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path).read_bytes()


def _publish(root: str, data: bytes, offset: int, index: str = INDEX) -> Incoming:
    sha = store.sha256_hex(data)
    uri = store.join(root, index, "dicom", f"{sha}.dcm")
    store.put_bytes(uri, data)
    msg = DicomObject(index=index, uri=uri, sha256=sha)
    return Incoming(raw=msg.to_bytes(), key=None, topic=f"{index}.dicom", partition=0, offset=offset)


def _handler(
    root: str, embedder: FakeEmbedder, writer: FakeWriter, spec: MedicalSearchIndexSpec | None = None
) -> DicomBatchHandler:
    return DicomBatchHandler(
        index=INDEX,
        spec=spec or MedicalSearchIndexSpec(),
        object_store_url=root,
        embedder=embedder,
        writer=writer,
        input_size=SIZE,
        model_name="densenet121",
        model_version="1",
        unavailable_errors=(Down,),
        rejected_errors=(Rejected,),
        times=StageTimes(),
    )


@pytest.fixture()
def root(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'objects'}"


def test_mixed_batch_indexes_images_and_fails_the_rest_with_stages(root: str) -> None:
    emb, writer = FakeEmbedder(), FakeWriter()
    ct, mr = _data("CT_small.dcm"), _data("MR_small_RLE.dcm")
    no_sop = pydicom.dcmread(io.BytesIO(ct))
    del no_sop.SOPInstanceUID
    buf = io.BytesIO()
    no_sop.save_as(buf)
    batch = [
        _publish(root, ct, 0),
        _publish(root, mr, 1),
        _publish(root, _data("rtplan.dcm"), 2),
        _publish(root, ct[: len(ct) // 2], 3),
        _publish(root, b"%PDF-1.4 not an image at all" * 10, 4),
        _publish(root, buf.getvalue(), 5),
        Incoming(raw=b"{not json", key=None, topic="unit.dicom", partition=0, offset=6),
        _publish(root, ct, 7, index="other"),
    ]
    missing = DicomObject(index=INDEX, uri=store.join(root, "nope.dcm"), sha256="0" * 64)
    batch.append(Incoming(raw=missing.to_bytes(), key=None, topic="unit.dicom", partition=0, offset=8))

    failures = _handler(root, emb, writer)(batch)

    assert emb.calls == [(2, 3, SIZE, SIZE)], "one embedding request per batch"
    assert sorted(writer.rows) == sorted([pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID for d in (ct, mr)])
    got = {f.message.offset: (f.stage, f.error) for f in failures}
    assert got[2][0] == "decode" and got[2][1].startswith("no_pixel_data")
    assert got[3][0] == "decode" and got[3][1].startswith("undecodable")
    assert got[4][0] == "decode" and "not an image" in got[4][1]
    assert got[5][0] == "metadata" and "SOPInstanceUID" in got[5][1]
    assert got[6][0] == "decode_message"
    assert got[7][0] == "decode_message"
    assert got[8][0] == "fetch"
    assert set(got) == {2, 3, 4, 5, 6, 7, 8}

    row = next(iter(writer.rows.values()))
    assert len(row["embedding"]) == 1024 and row["model_name"] == "densenet121"
    assert row["patient_name"] == "" and row["indexed_at"] > 0
    png = store.get_bytes(row["thumbnail_uri"])
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and max(im.size) <= 256


def test_model_server_down_is_transient_and_writes_nothing(root: str) -> None:
    emb, writer = FakeEmbedder(), FakeWriter()
    emb.down = True
    with pytest.raises(TransientError, match="model server"):
        _handler(root, emb, writer)([_publish(root, _data("CT_small.dcm"), 0)])
    assert writer.calls == 0


def test_store_unreachable_is_transient(tmp_path: Path) -> None:
    emb, writer = FakeEmbedder(), FakeWriter()
    root = f"file://{tmp_path / 'ok'}"
    msg = _publish(root, _data("CT_small.dcm"), 0)
    # a file where the thumbnails folder should be: the thumbnail write fails with OSError
    (tmp_path / "ok" / INDEX / "thumbnails").write_bytes(b"x")
    with pytest.raises(TransientError, match="object store"):
        _handler(root, emb, writer)([msg])


def test_uris_outside_the_store_are_refused_unread(tmp_path: Path) -> None:
    emb, writer = FakeEmbedder(), FakeWriter()
    root = f"file://{tmp_path / 'store'}"
    elsewhere = f"file://{tmp_path / 'elsewhere'}"
    outside = _publish(elsewhere, _data("CT_small.dcm"), 0)
    (tmp_path / "store" / "folder.dcm").mkdir(parents=True)
    sha = "0" * 64
    raws = [DicomObject(index=INDEX, uri=u, sha256=sha).to_bytes() for u in
            ("file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", "nope://x", f"{root}/folder.dcm")]
    batch = [outside] + [Incoming(raw=r, key=None, topic=f"{INDEX}.dicom", partition=0, offset=i + 1)
                         for i, r in enumerate(raws)]
    failures = _handler(root, emb, writer)(batch)
    assert [(f.message.offset, f.stage) for f in failures] == [(i, "fetch") for i in range(5)]
    assert all("nothing was read" in f.error for f in failures[:4])
    assert "not a file" in failures[4].error
    assert writer.calls == 0 and emb.calls == []


def test_a_rejected_input_is_isolated_and_the_rest_indexed(root: str) -> None:
    emb, writer = FakeEmbedder(), FakeWriter()
    batch = [_publish(root, _data("CT_small.dcm"), 0), _publish(root, _data("MR_small.dcm"), 1)]
    h = _handler(root, emb, writer)
    means = [np.mean(h._prepare(m).tensor) for m in batch]  # type: ignore[union-attr]  # _Prepared here
    emb.reject_mean_below = float(np.mean(means))  # refuses the darker of the two images only
    failures = h(batch)
    assert len(emb.calls) == 3  # the batch, then one by one
    assert len(failures) == 1 and failures[0].stage == "embed" and "rejected" in failures[0].error
    assert len(writer.rows) == 1


def test_same_image_twice_in_a_batch_is_one_row(root: str) -> None:
    emb, writer = FakeEmbedder(), FakeWriter()
    ct = _data("CT_small.dcm")
    failures = _handler(root, emb, writer)([_publish(root, ct, 0), _publish(root, ct, 1)])
    assert failures == [] and len(writer.rows) == 1 and emb.calls == [(1, 3, SIZE, SIZE)]


def test_patient_identifiers_stored_only_when_the_spec_allows(root: str) -> None:
    emb, writer = FakeEmbedder(), FakeWriter()
    spec = parse_spec({"privacy": {"storePatientIdentifiers": True}})
    _handler(root, emb, writer, spec)([_publish(root, _data("CT_small.dcm"), 0)])
    assert next(iter(writer.rows.values()))["patient_name"] != ""


def test_monochrome1_chest_thumbnail_is_not_inverted(root: str) -> None:
    emb, writer = FakeEmbedder(), FakeWriter()
    _handler(root, emb, writer)([_publish(root, _data("RG1_UNCR.dcm"), 0)])
    row = next(iter(writer.rows.values()))
    with Image.open(io.BytesIO(store.get_bytes(row["thumbnail_uri"]))) as im:
        a = np.asarray(im.convert("L"), dtype=np.float32)
    assert max(a.shape) == 256
    h, w = a.shape
    band = a[h // 3 : 2 * h // 3]
    lungs = np.concatenate([band[:, w // 5 : 2 * w // 5], band[:, 3 * w // 5 : 4 * w // 5]])
    spine = band[:, 9 * w // 20 : 11 * w // 20]
    assert lungs.mean() < spine.mean() - 20, (lungs.mean(), spine.mean())


def test_thumbnail_url_is_safe() -> None:
    assert thumbnail_url("file:///s", "i", "1.2.3").endswith("/i/thumbnails/1.2.3.png")
    assert "/../" not in thumbnail_url("file:///s", "i", "../../etc/passwd")


def test_a_namespaced_worker_reads_its_own_topics_and_writes_its_own_folder() -> None:
    from medsearch_workers.runtime import worker_runtime

    from medsearch.contracts.naming import names_for
    from medsearch.contracts.settings import WorkerSettings
    from medsearch.contracts.spec import MedicalSearchIndexSpec

    # What the operator's ConfigMap gives a worker: MEDSEARCH_INDEX and MEDSEARCH_INDEX_NAMESPACE.
    rt = worker_runtime("dicom", WorkerSettings(index="chest", index_namespace="radiology"),
                        spec=MedicalSearchIndexSpec())
    assert rt.names == names_for("chest", "radiology")
    assert (rt.names.dicom_topic, rt.names.dicom_consumer_group) == ("radiology.chest.dicom",
                                                                     "medsearch-radiology.chest-dicom")
    assert thumbnail_url("file:///s", rt.names, "1.2.3") == "file:///s/radiology/chest/thumbnails/1.2.3.png"


def test_model_input_from_v2_metadata() -> None:
    meta = {"name": "densenet121", "versions": ["2"], "inputs": [{"name": "pixel_values", "shape": [-1, 3, 96, 96]}]}
    assert model_input(meta) == (96, "2")
    assert model_input({"parameters": {"input_size": 128, "version": "x"}}) == (128, "x")
    assert model_input({}) == (None, "")


def test_the_input_size_is_the_model_servers_checked_against_the_spec_when_it_states_one() -> None:
    from medsearch_workers.dicom_worker import ModelMismatch, served_input

    from medsearch.contracts.spec import EmbeddingModelSpec, parse_spec

    meta = {"versions": [], "parameters": {"input_size": 96}}
    # The spec states no size (the defaults): the server's is taken, the spec gives the version the server does not.
    assert served_input(meta, EmbeddingModelSpec(version="v7")) == (96, "v7")
    assert served_input({**meta, "versions": ["3"]}, EmbeddingModelSpec(version="v7")) == (96, "3")
    # The spec states one: it must be the server's.
    assert served_input(meta, parse_spec({"embedding": {"inputSize": 96}}).embedding) == (96, "1")
    with pytest.raises(ModelMismatch, match=r"takes 96x96 images but spec.embedding.inputSize is 224"):
        served_input(meta, parse_spec({"embedding": {"inputSize": 224}}).embedding)
    # A server that states no size is not guessed at, with or without a spec.
    with pytest.raises(ModelMismatch, match="states no input size"):
        served_input({"versions": ["1"]}, EmbeddingModelSpec())
    with pytest.raises(ModelMismatch, match="states no input size"):
        served_input({})


def test_milvus_error_classification() -> None:
    from medsearch_workers.writers import is_transient_milvus_error
    from pymilvus.exceptions import DataNotMatchException, MilvusException

    down = MilvusException(code=2, message="Fail connecting to server on 127.0.0.1:1, server unavailable")
    assert is_transient_milvus_error(down)
    assert is_transient_milvus_error(MilvusException(code=100, message="collection not found[collection=x]"))
    assert not is_transient_milvus_error(DataNotMatchException(message="Insert missed an field `study_uid`"))
    # Told apart by code, not by words: a permanent error whose message happens to say "not found" or "closed"
    # is not retried; an input error is permanent whatever its code; rate limits and not-loaded are transient.
    assert not is_transient_milvus_error(MilvusException(code=1100, message="field embedding not found: closed set"))
    assert not is_transient_milvus_error(MilvusException(code=100, message="x", is_input_error=True))
    assert is_transient_milvus_error(MilvusException(code=8, message="rate limit exceeded"))
    assert is_transient_milvus_error(MilvusException(code=101, message="collection not loaded"))
    assert not is_transient_milvus_error(MilvusException(code=1, message="varchar longer than max_length"))


def test_a_short_upsert_count_is_a_failed_write() -> None:
    from medsearch_workers.writers import check_upsert_count

    check_upsert_count({"upsert_count": 3, "ids": ["a", "b", "c"]}, 3, "x_images")
    check_upsert_count(None, 3, "x_images")  # a client that reports no count: nothing to check
    with pytest.raises(TransientError, match="upserted 2 of 3 rows"):
        check_upsert_count({"upsert_count": 2}, 3, "x_images")


def test_milvus_writer_down_is_transient() -> None:
    from medsearch_dev.localstack.procs import free_port
    from medsearch_workers.writers import MilvusWriter

    writer = MilvusWriter(f"http://127.0.0.1:{free_port()}", "x_images", timeout=3)
    with pytest.raises(TransientError, match="Milvus"):
        writer.upsert([{"sop_instance_uid": "1"}])


def test_a_redeployed_model_with_another_input_size_is_adopted_not_dead_lettered(root: str) -> None:
    class SizeChecking(FakeEmbedder):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.size = size

        def embed_tensors(self, batch: np.ndarray) -> np.ndarray:
            if batch.shape[-1] != self.size:
                self.calls.append(tuple(batch.shape))
                raise Rejected(f"expected {self.size}x{self.size}")
            return super().embed_tensors(batch)

    emb, writer = SizeChecking(96), FakeWriter()
    h = _handler(root, emb, writer)
    h.model_info = lambda: (96, "2")
    batch = [_publish(root, _data("CT_small.dcm"), 0)]
    with pytest.raises(TransientError, match="changed"):
        h(batch)
    assert h.input_size == 96 and h.model_version == "2" and writer.rows == {}
    assert h(batch) == [] and len(writer.rows) == 1
    assert emb.calls[-1] == (1, 3, 96, 96)


def test_a_decompression_bomb_is_dead_lettered_with_the_limit(root: str) -> None:
    from medsearch_dev.hostile import deflated_dicom_bomb

    emb, writer = FakeEmbedder(), FakeWriter()
    batch = [_publish(root, deflated_dicom_bomb(), 0), _publish(root, _data("CT_small.dcm"), 1)]
    failures = _handler(root, emb, writer)(batch)
    assert len(failures) == 1 and failures[0].stage == "decode"
    assert failures[0].error.startswith("too_large: ") and "inflates to more than" in failures[0].error
    assert len(writer.rows) == 1
