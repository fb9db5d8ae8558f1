"""SQL over an index's PostgreSQL schema, built from validated values (pure: no connection needed to build).

Every statement is a :class:`psycopg.sql.Composed` with ``%s`` placeholders and a parameter list: values never
become SQL text; identifiers come from this module and :mod:`medsearch.contracts.naming`. The tables are those of
``medsearch/contracts/sql`` (GIN on ``tsv`` and the code arrays, btree on dates and keys).

The finding rule lives here, once: a query that names a finding (:func:`medsearch.findings.query_findings`)
ranks the reports asserting it first (``tier`` 0), then those that mention its words without asserting or
negating it (``tier`` 1); reports that negate it without asserting it are left out. Lists, counts and facets
share :func:`report_scope`, so a facet counts exactly the reports the list shows; over every report, facets and the
count read the counts the writes keep (``facet_counts``, migration 0005).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from medsearch.contracts.naming import IndexRef, names_of
from medsearch_api.filters import query_tokens
from medsearch_api.records import IMAGE_READ_FIELDS, REPORT_READ_FIELDS, ImageFilterSpec, ReportFilterSpec

ENTITY_ARRAYS = frozenset({
    "icd10_positive", "icd10_negative", "icd10_uncertain", "positive_signs", "negative_signs",
    "positive_diagnoses", "negative_diagnoses", "positive_symptoms", "negative_symptoms",
})


@dataclass
class Query:
    """A statement and its parameters."""

    text: sql.Composable
    params: list[Any] = field(default_factory=list)

    def render(self) -> str:
        """The statement as text (for tests and logs; placeholders stay ``%s``)."""
        return self.text.as_string(None)


@dataclass(frozen=True)
class Where:
    """A conjunction of conditions (table alias ``r`` for reports, ``i`` for images) and its parameters."""

    parts: tuple[sql.Composable, ...] = ()
    params: tuple[Any, ...] = ()

    def and_(self, part: sql.Composable, *params: Any) -> Where:
        return Where((*self.parts, part), (*self.params, *params))

    def __add__(self, other: Where) -> Where:
        return Where((*self.parts, *other.parts), (*self.params, *other.params))

    def sql(self) -> sql.Composable:
        if not self.parts:
            return sql.SQL("TRUE")
        return sql.SQL(" AND ").join(sql.SQL("({})").format(p) for p in self.parts)


class Tables:
    """The qualified tables of one index."""

    def __init__(self, index: IndexRef) -> None:
        schema = names_of(index).pg_schema
        self.schema = schema
        self.reports = sql.Identifier(schema, "reports")
        self.images = sql.Identifier(schema, "images")
        self.facet_counts = sql.Identifier(schema, "facet_counts")


def _cols(alias: str, names: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(alias, n) for n in names)


REPORT_COLS = _cols("r", REPORT_READ_FIELDS)
IMAGE_COLS = _cols("i", IMAGE_READ_FIELDS)


def _image_cols_linked(t: Tables) -> sql.Composable:
    """The image read fields, ``report_id`` filled from the study link when the row has none (the DICOM worker
    does not know the report; a report may arrive before or after its images): the first report of the study."""
    return sql.SQL(", ").join(
        sql.SQL("COALESCE(NULLIF(i.report_id, ''), (SELECT min(r.report_id) FROM {} r WHERE i.study_uid <> '' "
                "AND r.study_uid = i.study_uid), '') AS report_id").format(t.reports)
        if n == "report_id" else sql.Identifier("i", n) for n in IMAGE_READ_FIELDS)


# ------------------------------------------------------------------------------------------------- reports


def tsquery(query: str, ts_config: str) -> tuple[sql.Composable, list[Any]] | None:
    """The keyword query: any of the query's word tokens (OR), each through the index's text-search
    configuration; None when the query has no word token."""
    toks = query_tokens(query)
    if not toks:
        return None
    one = sql.SQL("plainto_tsquery({}::regconfig, %s)").format(sql.Literal(ts_config))
    return sql.SQL("({})").format(sql.SQL(" || ").join([one] * len(toks))), list(toks)


def report_filter(t: Tables, f: ReportFilterSpec) -> Where:
    """The filter's conditions over ``reports r`` (codes: all listed; image fields: any listed, through an image
    of the same study; dates inclusive)."""
    w = Where()
    for column, codes in (("icd10_positive", f.positive_codes), ("icd10_negative", f.negative_codes),
                          ("icd10_uncertain", f.uncertain_codes)):
        if codes:
            w = w.and_(sql.SQL("{} @> %s::text[]").format(sql.Identifier("r", column)), list(codes))
    if f.date_from is not None:
        w = w.and_(sql.SQL("r.report_date >= %s"), int(f.date_from))
    if f.date_to is not None:
        w = w.and_(sql.SQL("r.report_date <= %s"), int(f.date_to))
    if f.study_uids:
        w = w.and_(sql.SQL("r.study_uid = ANY(%s)"), list(f.study_uids))
    if f.report_ids:
        w = w.and_(sql.SQL("r.report_id = ANY(%s)"), list(f.report_ids))
    if f.needs_images:
        inner = Where()
        for column, values in (("modality", f.modalities), ("view_position", f.view_positions),
                               ("body_part", f.body_parts)):
            if values:
                inner = inner.and_(sql.SQL("{} = ANY(%s)").format(sql.Identifier("i", column)), list(values))
        w = w.and_(sql.SQL("r.study_uid <> '' AND EXISTS (SELECT 1 FROM {} i WHERE i.study_uid = r.study_uid "
                           "AND {})").format(t.images, inner.sql()), *inner.params)
    return w


def finding_visible(codes: Sequence[str]) -> Where:
    """Leaves out the reports that negate one of ``codes`` without asserting any."""
    if not codes:
        return Where()
    return Where((sql.SQL("NOT (r.icd10_negative && %s::text[] AND NOT r.icd10_positive && %s::text[])"),),
                 (list(codes), list(codes)))


def tier(codes: Sequence[str]) -> tuple[sql.Composable, list[Any]]:
    """0 for reports asserting one of ``codes``, else 1 (the first sort key of a finding search)."""
    if not codes:
        return sql.SQL("1"), []
    return sql.SQL("CASE WHEN r.icd10_positive && %s::text[] THEN 0 ELSE 1 END"), [list(codes)]


def report_scope(t: Tables, query: str | None, f: ReportFilterSpec, codes: Sequence[str], ts_config: str
                 ) -> Where | None:
    """The reports a keyword search (or, without a query, a listing) shows: filter, any query token, finding rule.
    None when the query has no word token (nothing matches)."""
    w = report_filter(t, f) + finding_visible(codes)
    if query and query.strip():
        q = tsquery(query, ts_config)
        if q is None:
            return None
        w = w.and_(sql.SQL("r.tsv @@ {}").format(q[0]), *q[1])
    return w


def keyword_ranking(t: Tables, query: str, f: ReportFilterSpec, codes: Sequence[str], ts_config: str,
                    limit: int, offset: int = 0) -> Query | None:
    """Reports matching any query token, best first: finding tier, then ``ts_rank``, then id. Rows carry every
    read field plus ``score`` and ``tier``."""
    scope = report_scope(t, query, f, codes, ts_config)
    q = tsquery(query, ts_config)
    if scope is None or q is None:
        return None
    tier_sql, tier_params = tier(codes)
    text = sql.SQL("SELECT {cols}, ts_rank(r.tsv, {q}, 1) AS score, {tier} AS tier FROM {reports} r WHERE {where} "
                   "ORDER BY tier, score DESC, r.report_id LIMIT %s OFFSET %s").format(
        cols=REPORT_COLS, q=q[0], tier=tier_sql, reports=t.reports, where=scope.sql())
    return Query(text, [*q[1], *tier_params, *scope.params, limit, offset])


def listing(t: Tables, f: ReportFilterSpec, limit: int, offset: int) -> Query:
    """Reports passing the filter, newest first (undated last), then by id."""
    w = report_filter(t, f)
    text = sql.SQL("SELECT {cols}, 0.0::float8 AS score FROM {reports} r WHERE {where} "
                   "ORDER BY r.report_date DESC, r.report_id LIMIT %s OFFSET %s").format(
        cols=REPORT_COLS, reports=t.reports, where=w.sql())
    return Query(text, [*w.params, limit, offset])


def count(t: Tables, scope: Where) -> Query:
    """How many reports are in ``scope``; all of them (an empty scope) from the counts the writes keep."""
    if not scope.parts:
        return Query(sql.SQL("SELECT COALESCE((SELECT n FROM {} WHERE field = 'reports' AND value = ''), 0) "
                             "AS count").format(t.facet_counts))
    return Query(sql.SQL("SELECT count(*) FROM {} r WHERE {}").format(t.reports, scope.sql()), list(scope.params))


def tiers_of(t: Tables, ids: Sequence[str], f: ReportFilterSpec, codes: Sequence[str]) -> Query:
    """Which of ``ids`` (nearest neighbours from Milvus) pass the filter and the finding rule, with their tier."""
    w = (report_filter(t, f) + finding_visible(codes)).and_(sql.SQL("r.report_id = ANY(%s)"), list(ids))
    tier_sql, tier_params = tier(codes)
    text = sql.SQL("SELECT r.report_id, {} AS tier FROM {} r WHERE {}").format(tier_sql, t.reports, w.sql())
    return Query(text, [*tier_params, *w.params])


def asserting_count(t: Tables, f: ReportFilterSpec, codes: Sequence[str], cap: int) -> Query:
    """How many reports passing the filter and the finding rule are in the first tier (assert one of ``codes``),
    counted up to ``cap``: a finding k-NN stops deepening once it has seen them all."""
    w = report_filter(t, f) + finding_visible(codes)
    tier_sql, tier_params = tier(codes)
    text = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} r WHERE {} AND {} = 0 LIMIT %s) s").format(
        t.reports, w.sql(), tier_sql)
    return Query(text, [*w.params, *tier_params, cap])


def facets(t: Tables, column: str, scope: Where, size: int) -> Query:
    """Distinct values of an array column over the reports in ``scope``: each report counts once per value;
    most frequent first, then by value. Over every report (an empty scope) they are read from ``facet_counts``,
    which the writes keep exact (a statement trigger in the writing transaction), instead of aggregating all."""
    if column not in ENTITY_ARRAYS:
        raise ValueError(f"not a facet column: {column}")
    if not scope.parts:  # every report: the counts kept in the writing transactions (migration 0005)
        return Query(sql.SQL("SELECT value AS key, n FROM {} WHERE field = %s AND n > 0 ORDER BY n DESC, value "
                             "LIMIT %s").format(t.facet_counts), [column, size])
    text = sql.SQL("SELECT v AS key, count(*) AS n FROM {} r CROSS JOIN LATERAL (SELECT DISTINCT unnest({}) AS v) u "
                   "WHERE {} GROUP BY v ORDER BY n DESC, v LIMIT %s").format(
        t.reports, sql.Identifier("r", column), scope.sql())
    return Query(text, [*scope.params, size])


def reports_by(t: Tables, column: str, values: Sequence[str]) -> Query:
    if column not in ("report_id", "study_uid"):
        raise ValueError(column)
    text = sql.SQL("SELECT {} FROM {} r WHERE {} = ANY(%s) ORDER BY r.report_id").format(
        REPORT_COLS, t.reports, sql.Identifier("r", column))
    return Query(text, [list(values)])


# -------------------------------------------------------------------------------------------------- images


def images_by(t: Tables, column: str, values: Sequence[str]) -> Query:
    if column not in ("sop_instance_uid", "study_uid"):
        raise ValueError(column)
    text = sql.SQL("SELECT {} FROM {} i WHERE {} = ANY(%s) ORDER BY i.series_uid, i.sop_instance_uid").format(
        _image_cols_linked(t), t.images, sql.Identifier("i", column))
    return Query(text, [list(values)])


def image_vector(t: Tables, image_id: str) -> Query:
    return Query(sql.SQL("SELECT i.embedding::text FROM {} i WHERE i.sop_instance_uid = %s").format(t.images),
                 [image_id])


def studies_with_codes(t: Tables, f: ImageFilterSpec, limit: int) -> Query:
    """Studies having a report with all the filter's positive and negative codes (at most ``limit``)."""
    w = Where().and_(sql.SQL("r.study_uid <> ''"))
    if f.positive_codes:
        w = w.and_(sql.SQL("r.icd10_positive @> %s::text[]"), list(f.positive_codes))
    if f.negative_codes:
        w = w.and_(sql.SQL("r.icd10_negative @> %s::text[]"), list(f.negative_codes))
    return Query(sql.SQL("SELECT DISTINCT r.study_uid FROM {} r WHERE {} LIMIT %s").format(t.reports, w.sql()),
                 [*w.params, limit])


def images_passing(t: Tables, ids: Sequence[str], f: ImageFilterSpec) -> Query:
    """Which of ``ids`` (nearest neighbours from Milvus) belong to a study with a report having the filter's
    codes."""
    inner = Where().and_(sql.SQL("r.study_uid = i.study_uid"))
    if f.positive_codes:
        inner = inner.and_(sql.SQL("r.icd10_positive @> %s::text[]"), list(f.positive_codes))
    if f.negative_codes:
        inner = inner.and_(sql.SQL("r.icd10_negative @> %s::text[]"), list(f.negative_codes))
    text = sql.SQL("SELECT i.sop_instance_uid FROM {} i WHERE i.sop_instance_uid = ANY(%s) AND i.study_uid <> '' "
                   "AND EXISTS (SELECT 1 FROM {} r WHERE {})").format(t.images, t.reports, inner.sql())
    return Query(text, [list(ids), *inner.params])
