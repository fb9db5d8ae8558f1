-- Exact counts of every value of the reports' entity arrays over the whole index, kept in the transaction that
-- writes the reports (statement triggers over their transition tables). Facets with neither a query nor a filter
-- (the landing page, getAllPositiveICD10CMs) and the number of all reports read these rows instead of
-- aggregating every report (medsearch_api.sql.facets / count). Field 'reports' with value '' counts the reports.
-- A report counts once per distinct value of an array, as the facets over a scope count it; rows whose count fell
-- to zero stay (readers skip them).
CREATE TABLE facet_counts (
    field text NOT NULL,
    value text NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (field, value)
);

-- A SELECT of (field, value, delta): `sign` for each distinct value of each array of every row of `rel`, and for
-- each row itself under ('reports', '').
CREATE FUNCTION facet_deltas_sql(rel text, sign integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT format(
        'SELECT a.field, v.value, %2$s::bigint AS delta FROM %1$I r CROSS JOIN LATERAL (VALUES '
        '(''icd10_positive'', r.icd10_positive), (''icd10_negative'', r.icd10_negative), '
        '(''icd10_uncertain'', r.icd10_uncertain), (''positive_signs'', r.positive_signs), '
        '(''negative_signs'', r.negative_signs), (''positive_diagnoses'', r.positive_diagnoses), '
        '(''negative_diagnoses'', r.negative_diagnoses), (''positive_symptoms'', r.positive_symptoms), '
        '(''negative_symptoms'', r.negative_symptoms)) AS a(field, arr) '
        'CROSS JOIN LATERAL (SELECT DISTINCT unnest(a.arr) AS value) AS v '
        'UNION ALL SELECT ''reports'', '''', %2$s::bigint * count(*) FROM %1$I', rel, sign)
$$;

-- The statement adding the deltas of a SELECT from facet_deltas_sql to the counts. (Executed by the trigger
-- function itself: transition tables are not visible to the functions it calls.)
CREATE FUNCTION facet_counts_add_sql(deltas text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'INSERT INTO facet_counts AS c (field, value, n) SELECT d.field, d.value, sum(d.delta) FROM ('
        || deltas || ') AS d GROUP BY d.field, d.value HAVING sum(d.delta) <> 0 ORDER BY d.field, d.value '
        'ON CONFLICT (field, value) DO UPDATE SET n = c.n + EXCLUDED.n'
$$;

CREATE FUNCTION facet_counts_apply() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    -- One writer of the counts at a time, until its transaction ends: an upsert fires both the INSERT and the
    -- UPDATE trigger, and two writers each holding some counter rows while waiting for the other's would
    -- deadlock. Readers are not blocked. What follows in a writing transaction is short (ledger rows, commit).
    LOCK TABLE facet_counts IN SHARE ROW EXCLUSIVE MODE;
    IF TG_OP = 'INSERT' THEN
        EXECUTE facet_counts_add_sql(facet_deltas_sql('new_rows', 1));
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE facet_counts_add_sql(facet_deltas_sql('new_rows', 1) || ' UNION ALL '
                                     || facet_deltas_sql('old_rows', -1));
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE facet_counts_add_sql(facet_deltas_sql('old_rows', -1));
    ELSE  -- TRUNCATE
        DELETE FROM facet_counts;
    END IF;
    RETURN NULL;
END;
$$;

-- No write may slip between the backfill below and the triggers: writers wait until this migration commits.
LOCK TABLE reports IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER reports_facet_counts_insert AFTER INSERT ON reports REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION facet_counts_apply();
CREATE TRIGGER reports_facet_counts_update AFTER UPDATE ON reports REFERENCING OLD TABLE AS old_rows
    NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION facet_counts_apply();
CREATE TRIGGER reports_facet_counts_delete AFTER DELETE ON reports REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION facet_counts_apply();
CREATE TRIGGER reports_facet_counts_truncate AFTER TRUNCATE ON reports
    FOR EACH STATEMENT EXECUTE FUNCTION facet_counts_apply();

-- The reports indexed before this migration.
DO $$ BEGIN EXECUTE facet_counts_add_sql(facet_deltas_sql('reports', 1)); END $$;
