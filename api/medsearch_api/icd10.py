"""ICD-10-CM code descriptions (CMS tabular list via ``simple_icd_10_cm``)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=65536)
def describe(code: str) -> str:
    """The CMS description of ``code``; the code itself when it is not a known ICD-10-CM item."""
    import simple_icd_10_cm as icd

    try:
        if icd.is_valid_item(code):
            return str(icd.get_description(code))
    except (ValueError, KeyError):
        pass
    return code
