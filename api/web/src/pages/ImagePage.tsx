import { useId, useMemo, useState } from "react";
import { NotFound, fetchImage } from "../api/client";
import type { Entity, ImageDetail, ReportDetail } from "../api/types";
import { CodeChip } from "../components/Chips";
import { SimilarControlsBar, SimilarGrid, UploadSearch, type SimilarControls } from "../components/SimilarImages";
import { ErrorState, Loading } from "../components/States";
import { FullImage } from "../components/FullImage";
import { Thumbnail } from "../components/Thumbnail";
import { ViewerLink } from "../components/ViewerLink";
import { segments, type Assertion } from "../lib/highlight";
import { imageHref, lastSearchHref, navigate } from "../lib/router";
import { useAsync } from "../lib/useAsync";
import { K_CHOICES } from "../components/SimilarImages";

export function ImagePage({ id, params }: { id: string; params: URLSearchParams }) {
  const detail = useAsync(`image:${id}`, (signal) => fetchImage(id, signal));
  const k = Number(params.get("k"));
  const controls: SimilarControls = {
    k: (K_CHOICES as readonly number[]).includes(k) ? k : 10,
    modality: params.get("modality") ?? "",
    viewPosition: params.get("view") ?? "",
  };
  const setControls = (c: SimilarControls) => {
    const p = new URLSearchParams();
    if (c.k !== 10) p.set("k", String(c.k));
    if (c.modality) p.set("modality", c.modality);
    if (c.viewPosition) p.set("view", c.viewPosition);
    navigate(imageHref(id, p), true);
  };
  const similarQuery = useMemo(() => ({ imageId: id }), [id]);
  const headingId = useId();

  return (
    <div>
      <nav className="crumbs" aria-label="Breadcrumb">
        <a href={lastSearchHref()}>‹ Back to results</a>
      </nav>
      {detail.status === "loading" && !detail.data && <Loading label="Loading the image…" />}
      {detail.status === "error" &&
        (detail.error instanceof NotFound ? (
          <ErrorState error={detail.error} title="Image not found" />
        ) : (
          <ErrorState error={detail.error} onRetry={detail.reload} />
        ))}
      {detail.data && (
        <>
          <h1 id={headingId}>
            {[detail.data.image.modality, detail.data.image.viewPosition, detail.data.image.bodyPart].filter(Boolean).join(" ") || "Image"}
            <span className="hint mono" style={{ marginLeft: "0.6rem", fontWeight: 400 }}>
              {detail.data.image.id}
            </span>
          </h1>
          <div className="image-layout">
            <section className="viewer panel" aria-label="Image and metadata">
              <Thumbnail src={detail.data.image.thumbnailUrl} alt={`Thumbnail of image ${detail.data.image.id}`} eager />
              {detail.data.image.studyUid && (
                <p>
                  <ViewerLink study={detail.data.image.studyUid} series={detail.data.image.seriesUid} instance={detail.data.image.id} />
                </p>
              )}
              <Metadata image={detail.data.image} />
            </section>
            <section className="panel" aria-labelledby={`${headingId}-report`} data-testid="report">
              <h2 id={`${headingId}-report`}>Report {detail.data.report ? detail.data.report.id : ""}</h2>
              {detail.data.report ? (
                <ReportView report={detail.data.report} />
              ) : (
                <p className="hint">No report is linked to this study yet.</p>
              )}
            </section>
          </div>
          {detail.data.image.studyUid && detail.data.image.seriesUid && (
            <section className="panel section-gap" aria-labelledby={`${headingId}-full`}>
              <h2 id={`${headingId}-full`}>Full resolution</h2>
              <FullImage
                uids={{ study: detail.data.image.studyUid, series: detail.data.image.seriesUid, instance: detail.data.image.id }}
                alt={`Full-resolution image ${detail.data.image.id}`}
              />
            </section>
          )}
        </>
      )}
      <section className="panel section-gap" aria-labelledby={`${headingId}-similar`}>
        <h2 id={`${headingId}-similar`}>Similar images</h2>
        <SimilarControlsBar value={controls} onChange={setControls} />
        <SimilarGrid query={similarQuery} controls={controls} label="Similar images" />
      </section>
      <section className="panel section-gap" aria-labelledby={`${headingId}-upload`}>
        <h2 id={`${headingId}-upload`}>Search by uploaded image</h2>
        <UploadSearch />
      </section>
    </div>
  );
}

function Metadata({ image }: { image: ImageDetail }) {
  const rows: [string, string][] = [
    ["Modality", image.modality],
    ["View position", image.viewPosition],
    ["Body part", image.bodyPart],
    ["Laterality", image.laterality],
    ["Study date", image.studyDate],
    ["Size", image.rows && image.columns ? `${image.columns} × ${image.rows}${image.frames && image.frames > 1 ? ` × ${image.frames} frames` : ""}` : ""],
    ["Photometric", image.photometric],
    ["Patient", [image.patientName, image.patientId].filter(Boolean).join(" · ")],
    ["Study UID", image.studyUid],
    ["Series UID", image.seriesUid],
    ["SOP Instance UID", image.id],
    ["Transfer syntax", image.transferSyntax],
    ["Embedding model", [image.modelName, image.modelVersion].filter(Boolean).join(" ")],
    ["Indexed", image.indexedAt],
  ];
  return (
    <dl className="metadata">
      {rows
        .filter(([, v]) => v)
        .map(([k, v]) => (
          <div key={k} style={{ display: "contents" }}>
            <dt>{k}</dt>
            <dd className={k.includes("UID") || k === "Transfer syntax" ? "mono" : undefined}>{v}</dd>
          </div>
        ))}
    </dl>
  );
}

const ASSERTION_WORD: Record<Assertion, string> = {
  positive: "present",
  negative: "negated",
  uncertain: "uncertain",
  historical: "historical",
  other: "other",
};

function ReportView({ report }: { report: ReportDetail }) {
  const [selected, setSelected] = useState<number | null>(null);
  const segs = useMemo(() => segments(report.text, report.entities), [report]);
  const hasEntities = report.entities.length > 0;
  return (
    <div>
      <p className="meta">
        {[report.reportDate && `Reported ${report.reportDate}`, report.studyUid && `study ${report.studyUid}`].filter(Boolean).join(" · ")}
      </p>
      {hasEntities && (
        <div className="legend" aria-label="Highlight colours">
          <span><i className="positive" /> present</span>
          <span><i className="negative" /> negated</span>
          <span><i className="uncertain" /> uncertain</span>
          <span><i className="historical" /> historical / other</span>
        </div>
      )}
      <div className="report-text" data-testid="report-text">
        {segs.map((s) =>
          s.entity ? (
            <mark
              key={s.start}
              className={`ent ${s.entity.assertion}`}
              tabIndex={0}
              data-assertion={s.entity.assertion}
              title={entityTitle(s.entity)}
              aria-label={`${s.text}: ${s.entity.category || "entity"}, ${ASSERTION_WORD[s.entity.assertion]}${s.entity.codes[0] ? `, ${s.entity.codes[0].code}` : ""}`}
              onFocus={() => setSelected(report.entities.indexOf(s.entity as Entity))}
              onMouseEnter={() => setSelected(report.entities.indexOf(s.entity as Entity))}
            >
              {s.text}
            </mark>
          ) : (
            <span key={s.start}>{s.text}</span>
          ),
        )}
      </div>
      {report.positive.length + report.negative.length + report.uncertain.length > 0 && (
        <div className="section-gap">
          <h3>ICD-10-CM codes</h3>
          <div className="chips">
            {report.positive.map((c) => (
              <CodeChip key={`p${c.code}`} code={c} kind="positive" />
            ))}
            {report.negative.map((c) => (
              <CodeChip key={`n${c.code}`} code={c} kind="negative" />
            ))}
            {report.uncertain.map((c) => (
              <CodeChip key={`u${c.code}`} code={c} kind="uncertain" />
            ))}
          </div>
        </div>
      )}
      {hasEntities && (
        <details className="section-gap">
          <summary>Entities ({report.entities.length})</summary>
          <table className="entity-table">
            <thead>
              <tr>
                <th scope="col">Text</th>
                <th scope="col">Category</th>
                <th scope="col">Assertion</th>
                <th scope="col">ICD-10-CM</th>
              </tr>
            </thead>
            <tbody>
              {report.entities.map((e, i) => (
                <tr key={`${e.start}-${i}`} style={selected === i ? { background: "var(--brand-soft)" } : undefined}>
                  <td>{e.text}</td>
                  <td>{e.category}</td>
                  <td>{ASSERTION_WORD[e.assertion]}</td>
                  <td className="mono">{e.codes.map((c) => c.code).join(", ")}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </details>
      )}
    </div>
  );
}

function entityTitle(e: Entity): string {
  const codes = e.codes.map((c) => `${c.code} ${c.description}`).join("; ");
  return `${e.category || "entity"} · ${ASSERTION_WORD[e.assertion]}${codes ? ` · ${codes}` : ""}`;
}
