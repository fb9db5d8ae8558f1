"""De-identification before anything is stored (``spec.privacy.deidentify: basic``).

The DICOM PS3.15 Basic Application Level Confidentiality Profile through dicognito (a maintained library): names,
IDs, dates of birth, addresses, institution and physician names are replaced or removed, dates shifted, and every
UID remapped. dicognito is seeded with the index's secret (``MEDSEARCH_DEID_SECRET``), so the same input UID always
maps to the same output UID within an index: studies, series and report links (by StudyInstanceUID) stay intact,
and a re-sent instance de-identifies to the same bytes (the duplicate ledger still works). Private attributes are
removed. ``PatientIdentityRemoved`` = YES and ``DeidentificationMethod`` / ``DeidentificationMethodCodeSequence``
(DCM 113100) are set.

Instances flagged ``BurnedInAnnotation`` = YES may show identifiers in their pixels, which no metadata profile
removes: they are quarantined (de-identified metadata, stored apart, dead-lettered with the reason) unless
``spec.privacy.quarantineBurnedInAnnotation`` is false.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsearch.contracts.naming import IndexRef, names_of

if TYPE_CHECKING:
    from medsearch.contracts.spec import PrivacySpec

log = logging.getLogger("medsearch.deid")

METHOD = "medsearch basic: PS3.15 Basic Application Level Confidentiality Profile (dicognito)"
SECRET_ENV = "MEDSEARCH_DEID_SECRET"


class DeidentificationError(ValueError):
    """The object cannot be de-identified (unreadable); it is not stored."""


class Quarantined(Exception):
    """The object was de-identified but must not be indexed without review; ``data`` is the de-identified file."""

    def __init__(self, reason: str, data: bytes, study_uid: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data
        self.study_uid = study_uid


class Deidentifier:
    """Applies the basic profile with a per-index secret seed (thread-safe)."""

    def __init__(self, secret: str, *, quarantine_burned_in_annotation: bool = True) -> None:
        if len(secret) < 16:
            raise ValueError(f"the de-identification secret ({SECRET_ENV}) must be at least 16 characters")
        self._secret = secret
        self.quarantine_burned_in_annotation = quarantine_burned_in_annotation
        self._lock = threading.Lock()

    def _anonymizer(self) -> Any:
        from dicognito.anonymizer import Anonymizer

        return Anonymizer(seed=self._secret)

    def map_uid(self, uid: str) -> str:
        """The de-identified form of a UID (e.g. a report's StudyInstanceUID), as in the images."""
        from pydicom.dataset import Dataset, FileMetaDataset

        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.StudyInstanceUID = uid
        with self._lock:
            self._anonymizer().anonymize(ds)
        return str(ds.StudyInstanceUID)

    def apply(self, data: bytes) -> bytes:
        """The de-identified DICOM file; raises :class:`Quarantined` for burned-in annotations (when configured)
        and :class:`DeidentificationError` when the file cannot be read."""
        import pydicom
        from pydicom.dataset import Dataset
        from pydicom.errors import InvalidDicomError
        from pydicom.sequence import Sequence

        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
            burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
        except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError, AttributeError) as err:
            raise DeidentificationError(f"cannot read the DICOM data set to de-identify it: {type(err).__name__}") \
                from err
        try:
            ds.remove_private_tags()
            with self._lock:
                self._anonymizer().anonymize(ds)
            ds.PatientIdentityRemoved = "YES"
            ds.DeidentificationMethod = METHOD
            code = Dataset()
            code.CodeValue = "113100"
            code.CodingSchemeDesignator = "DCM"
            code.CodeMeaning = "Basic Application Confidentiality Profile"
            ds.DeidentificationMethodCodeSequence = Sequence([code])
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as err:
            raise DeidentificationError(f"de-identification failed: {type(err).__name__}") from err
        out = buf.getvalue()
        if burned and self.quarantine_burned_in_annotation:
            study = ds.get("StudyInstanceUID")
            raise Quarantined(
                "burned_in_annotation: BurnedInAnnotation=YES, the pixels may show identifiers "
                "(review, then replay; or set spec.privacy.quarantineBurnedInAnnotation: false)",
                out, str(study) if study else None,
            )
        return out


def secret_from_env(data_dir: Path | None = None) -> str | None:
    """``$MEDSEARCH_DEID_SECRET``, else the local stack's ``<data-dir>/deid-secret`` file, else None."""
    from medsearch.contracts.settings import ServiceSettings

    configured = ServiceSettings().deid_secret
    value = configured.get_secret_value().strip() if configured is not None else ""
    if value:
        return value
    if data_dir is not None:
        path = data_dir / "deid-secret"
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text or None
    return None


def ensure_secret_file(data_dir: Path) -> str:
    """The local stack's de-identification secret (``<data-dir>/deid-secret``, mode 600), created on first use."""
    import secrets

    path = data_dir / "deid-secret"
    data_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    return value


def policy_url(store_url: str, index: IndexRef) -> str:
    """Where an index's privacy policy is recorded in the object store (read by publishers without the spec)."""
    from medsearch import store

    return store.join(store_url, names_of(index).object_prefix, "policy", "privacy.json")


def _privacy_from_spec_files(index: str, data_dir: Path | None) -> PrivacySpec | None:
    from medsearch.contracts.settings import ServiceSettings
    from medsearch.contracts.spec import load_index_file

    candidates: list[Path] = []
    configured = ServiceSettings().index_spec_file
    if configured is not None:
        candidates.append(configured)
    if data_dir is not None:
        candidates.append(data_dir / "run" / "index.yaml")
    for path in candidates:
        if path.is_file():
            idx = load_index_file(path)
            if idx.name == index:
                return idx.spec.privacy
    return None


def _recorded_policy(store_url: str, index: IndexRef, privacy: PrivacySpec | None) -> PrivacySpec | None:
    """Record ``privacy`` in the object store when known (and changed); else return the recorded one, if any."""
    from medsearch import store
    from medsearch.contracts.spec import PrivacySpec

    url = policy_url(store_url, index)
    index = names_of(index).index  # for messages
    try:
        current = store.get_bytes(url)
    except store.ObjectNotFound:
        current = None
    except store.StoreError as err:
        raise ValueError(f"cannot read the privacy policy of index {index!r} ({err})") from err
    if privacy is not None:
        blob = json.dumps(privacy.model_dump(mode="json", by_alias=True), sort_keys=True).encode("utf-8")
        if blob != current:
            try:
                store.put_bytes(url, blob)
            except store.StoreError as err:
                raise ValueError(f"cannot record the privacy policy of index {index!r} ({err})") from err
        return privacy
    if current is None:
        return None
    try:
        return PrivacySpec.model_validate(json.loads(current))
    except ValueError as err:
        raise ValueError(f"the privacy policy {url} is unreadable ({err})") from err


def deidentifier_for(index: IndexRef, *, data_dir: Path | None = None,
                     store_url: str | None = None) -> Deidentifier | None:
    """The de-identifier the index's ``spec.privacy`` asks for, or None for ``deidentify: none``.

    The spec comes from ``MEDSEARCH_INDEX_SPEC_FILE``, else the local stack's ``<data-dir>/run/index.yaml`` when it
    describes ``index``. With ``store_url``, a publisher that knows the spec records its privacy policy in the
    object store (``<store>/<index prefix>/policy/privacy.json``) and one that does not (a gateway without the spec, a
    hand-run CLI) applies the recorded policy: an index that asked for de-identification is never fed identifiable
    data by a component that was not told.

    Raises ValueError when de-identification is asked for but no secret is configured: nothing may be stored
    identifiable by mistake."""
    name = names_of(index).index
    privacy = _privacy_from_spec_files(name, data_dir)
    if store_url:
        privacy = _recorded_policy(store_url, index, privacy)
    if privacy is None or privacy.deidentify == "none":
        return None
    secret = secret_from_env(data_dir)
    if not secret:
        raise ValueError(
            f"index {name!r} has spec.privacy.deidentify: {privacy.deidentify} but no secret is configured: "
            f"set {SECRET_ENV} (at least 16 characters, the same for every component of the index)"
        )
    return Deidentifier(secret, quarantine_burned_in_annotation=privacy.quarantine_burned_in_annotation)
