-- medsearch index schema, version 1. Applied by medsearch.provision inside the index's own schema
-- (search_path = <index schema>, public); {ts_config} is the text-search configuration of spec.reports.analyzer.

CREATE TABLE reports (
    report_id          text PRIMARY KEY,
    study_uid          text NOT NULL DEFAULT '',
    text               text NOT NULL,
    findings           text NOT NULL DEFAULT '',
    impression         text NOT NULL DEFAULT '',
    indication         text NOT NULL DEFAULT '',
    sections           jsonb NOT NULL DEFAULT '{}'::jsonb,
    report_date        integer NOT NULL DEFAULT 0,          -- YYYYMMDD, 0 when unknown
    icd10_positive     text[] NOT NULL DEFAULT '{}',
    icd10_negative     text[] NOT NULL DEFAULT '{}',
    icd10_uncertain    text[] NOT NULL DEFAULT '{}',
    positive_signs     text[] NOT NULL DEFAULT '{}',
    negative_signs     text[] NOT NULL DEFAULT '{}',
    positive_diagnoses text[] NOT NULL DEFAULT '{}',
    negative_diagnoses text[] NOT NULL DEFAULT '{}',
    positive_symptoms  text[] NOT NULL DEFAULT '{}',
    negative_symptoms  text[] NOT NULL DEFAULT '{}',
    entities           jsonb NOT NULL DEFAULT '[]'::jsonb,
    nlp_backend        text NOT NULL DEFAULT '',
    ingested_at        bigint NOT NULL DEFAULT 0,           -- epoch milliseconds
    text_vector        vector,                              -- the report text embedding (Milvus is rebuilt from it)
    tsv                tsvector GENERATED ALWAYS AS (to_tsvector('{ts_config}'::regconfig, text)) STORED
);
CREATE INDEX reports_tsv ON reports USING gin (tsv);
CREATE INDEX reports_icd10_positive ON reports USING gin (icd10_positive);
CREATE INDEX reports_icd10_negative ON reports USING gin (icd10_negative);
CREATE INDEX reports_icd10_uncertain ON reports USING gin (icd10_uncertain);
CREATE INDEX reports_newest ON reports (report_date DESC, report_id);
CREATE INDEX reports_study ON reports (study_uid);

CREATE TABLE images (
    sop_instance_uid text PRIMARY KEY,
    study_uid        text NOT NULL DEFAULT '',
    series_uid       text NOT NULL DEFAULT '',
    report_id        text NOT NULL DEFAULT '',
    modality         text NOT NULL DEFAULT '',
    view_position    text NOT NULL DEFAULT '',
    body_part        text NOT NULL DEFAULT '',
    laterality       text NOT NULL DEFAULT '',
    rows             integer NOT NULL DEFAULT 0,
    columns          integer NOT NULL DEFAULT 0,
    frames           integer NOT NULL DEFAULT 0,
    photometric      text NOT NULL DEFAULT '',
    transfer_syntax  text NOT NULL DEFAULT '',
    study_date       integer NOT NULL DEFAULT 0,
    acquisition_date integer NOT NULL DEFAULT 0,
    patient_id       text NOT NULL DEFAULT '',
    patient_name     text NOT NULL DEFAULT '',
    source_uri       text NOT NULL DEFAULT '',
    sha256           text NOT NULL DEFAULT '',
    thumbnail_uri    text NOT NULL DEFAULT '',
    model_name       text NOT NULL DEFAULT '',
    model_version    text NOT NULL DEFAULT '',
    indexed_at       bigint NOT NULL DEFAULT 0,
    embedding        vector                                 -- the image embedding (Milvus is rebuilt from it)
);
CREATE INDEX images_study ON images (study_uid, series_uid, sop_instance_uid);
CREATE INDEX images_modality ON images (modality);
CREATE INDEX images_view_position ON images (view_position);
CREATE INDEX images_body_part ON images (body_part);
CREATE INDEX images_study_date ON images (study_date);

-- What readers of the schema need to know about how it was built.
CREATE TABLE index_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO index_settings (name, value) VALUES ('ts_config', '{ts_config}');
