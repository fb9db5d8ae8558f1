"""Pull from an existing archive over DICOMweb (``medsearch ingest --from-dicomweb URL [--since DATE]``).

QIDO-RS lists the studies (``StudyDate >= since``, paged), then each study's instances; WADO-RS fetches every
instance not imported before, in its stored transfer syntax (``transfer-syntax=*``: no transcoding), and hands it
to :meth:`medsearch.producer.Publisher.publish_dicom` like every other way in.

Resumable and never re-importing: the state of a source (which studies are complete, with how many instances) is
kept in the object store under ``<store>/<index prefix>/pull/<source>.json``, and each imported instance leaves a marker
``<store>/<index prefix>/pull/instances/<sha256(SOPInstanceUID)>`` once the broker acknowledged it. A later run skips
complete studies whose instance count did not change and instances with a marker, so an interrupted pull goes on
where it stopped. Keys are hashes: no original UID is written in clear (de-identified indexes remap UIDs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from medsearch import store
from medsearch.dicomnet.stow import StowRequestError, parse_multipart_related
from medsearch.producer import Publisher

log = logging.getLogger("medsearch.pull")

PAGE = 100
_STUDY_UID, _SERIES_UID, _SOP_UID = "0020000D", "0020000E", "00080018"
_STUDY_DATE, _N_INSTANCES = "00080020", "00201208"
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class PullError(RuntimeError):
    """The DICOMweb server cannot be reached or answered something unusable; the message says which call."""


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _value(item: dict[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def qido_date_range(since: dt.date | None) -> dict[str, str]:
    return {"StudyDate": f"{since:%Y%m%d}-"} if since else {}


@dataclass
class PullState:
    """What was pulled from one source: complete studies (hashed UID -> instance count)."""

    url: str
    studies: dict[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps({"url": self.url, "studies": self.studies}, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, url: str) -> PullState:
        raw = json.loads(data)
        return cls(url=url, studies={str(k): int(v) for k, v in dict(raw.get("studies", {})).items()})


@dataclass
class PullSummary:
    studies_seen: int = 0
    studies_skipped: int = 0
    instances_published: int = 0
    instances_duplicate: int = 0
    instances_skipped: int = 0
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class DicomwebPuller:
    """One pull of ``url`` into ``publisher``'s index. ``http`` is an ``httpx.Client``-like object."""

    def __init__(self, url: str, publisher: Publisher, http: Any, *,
                 progress: Callable[[str], None] = lambda msg: None) -> None:
        self.url = url.rstrip("/")
        self.publisher = publisher
        self.http = http
        self.progress = progress
        base = store.join(publisher.object_store_url, publisher.names.object_prefix, "pull")
        self.state_url = store.join(base, f"{_hash(self.url)[:24]}.json")
        self.markers = store.join(base, "instances")

    # ------------------------------------------------------------------------------------------- I/O

    def _get_json(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        import httpx

        try:
            r = self.http.get(f"{self.url}{path}", params=params, headers={"Accept": "application/dicom+json"})
        except httpx.HTTPError as err:
            raise PullError(f"QIDO-RS {self.url}{path}: {type(err).__name__}: {err}") from err
        if r.status_code == 204:
            return []
        if r.status_code != 200:
            raise PullError(f"QIDO-RS {self.url}{path} answered HTTP {r.status_code}")
        try:
            data = r.json()
        except ValueError as err:
            raise PullError(f"QIDO-RS {self.url}{path} did not answer DICOM JSON") from err
        if not isinstance(data, list):
            raise PullError(f"QIDO-RS {self.url}{path} did not answer a JSON array")
        return [d for d in data if isinstance(d, dict)]

    def _studies(self, since: dt.date | None) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            params = {**qido_date_range(since), "limit": PAGE, "offset": offset,
                      "includefield": f"{_STUDY_DATE},{_N_INSTANCES}"}
            page = self._get_json("/studies", params)
            yield from page
            if len(page) < PAGE:
                return
            offset += len(page)

    def _instances(self, study: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        offset = 0
        while True:
            page = self._get_json(f"/studies/{study}/instances",
                                  {"limit": PAGE, "offset": offset, "includefield": _SERIES_UID})
            for item in page:
                series, sop = _value(item, _SERIES_UID), _value(item, _SOP_UID)
                if series and sop:
                    out.append((str(series), str(sop)))
            if len(page) < PAGE:
                return out
            offset += len(page)

    def _retrieve(self, study: str, series: str, sop: str) -> list[bytes]:
        import httpx

        path = f"/studies/{study}/series/{series}/instances/{sop}"
        try:
            r = self.http.get(f"{self.url}{path}", headers={"Accept": WADO_ACCEPT})
        except httpx.HTTPError as err:
            raise PullError(f"WADO-RS {self.url}{path}: {type(err).__name__}") from err
        if r.status_code != 200:
            raise PullError(f"WADO-RS {self.url}{path} answered HTTP {r.status_code}")
        try:
            return [p.data for p in parse_multipart_related(r.headers.get("content-type", ""), r.content)]
        except StowRequestError as err:
            raise PullError(f"WADO-RS {self.url}{path}: {err}") from err

    def load_state(self) -> PullState:
        try:
            return PullState.from_bytes(store.get_bytes(self.state_url), self.url)
        except store.ObjectNotFound:
            return PullState(self.url)
        except (ValueError, TypeError) as err:
            raise PullError(f"the pull state {self.state_url} is unreadable ({err}); delete it to start over") \
                from err

    def save_state(self, state: PullState) -> None:
        store.put_bytes(self.state_url, state.to_bytes())

    # ------------------------------------------------------------------------------------------- run

    def run(self, since: dt.date | None = None) -> PullSummary:
        state = self.load_state()
        summary = PullSummary()
        for study_item in self._studies(since):
            study = _value(study_item, _STUDY_UID)
            if not study:
                continue
            study = str(study)
            summary.studies_seen += 1
            key = _hash(study)
            expected = _value(study_item, _N_INSTANCES)
            if expected is not None and state.studies.get(key) == int(expected):
                summary.studies_skipped += 1
                continue
            instances = self._instances(study)
            markers: list[str] = []
            failed = False
            for series, sop in instances:
                marker = store.join(self.markers, _hash(sop))
                if store.exists(marker):
                    summary.instances_skipped += 1
                    continue
                try:
                    parts = self._retrieve(study, series, sop)
                except PullError as err:
                    failed = True
                    summary.failures.append(str(err))
                    log.warning("%s", err)
                    continue
                for data in parts:
                    res = self.publisher.publish_dicom(data, filename=f"WADO-RS {self.url}")
                    if res.status == "published":
                        summary.instances_published += 1
                    elif res.status == "duplicate":
                        summary.instances_duplicate += 1
                    else:
                        failed = True
                        summary.failures.append(f"an instance of a study from {self.url}: {res.reason}")
                markers.append(marker)
            self.publisher.flush()  # acknowledged by the broker: now the markers and the state may say "done"
            for marker in markers:
                store.put_bytes(marker, b"")
            if not failed:
                state.studies[key] = len(instances)
                self.save_state(state)
            self.progress(f"study {summary.studies_seen}: {len(instances)} instances")
        return summary
