import { useEffect, useId, useMemo, useRef, useState } from "react";
import { fetchFilterOptions, similarImages, type SimilarQuery } from "../api/client";
import { SelectField } from "./SelectField";
import { Loading, EmptyState, ErrorState } from "./States";
import { Thumbnail } from "./Thumbnail";
import { imageHref } from "../lib/router";
import { useAsync } from "../lib/useAsync";

export const K_CHOICES = [5, 10, 20, 50] as const;

export interface SimilarControls {
  k: number;
  modality: string;
  viewPosition: string;
}

/** k and filter controls for a similar-images search. */
export function SimilarControlsBar({ value, onChange }: { value: SimilarControls; onChange: (v: SimilarControls) => void }) {
  const id = useId();
  const options = useAsync("filter-options", (signal) => fetchFilterOptions(signal));
  return (
    <div className="similar-controls" role="group" aria-label="Similar image options">
      <SelectField id={`${id}-k`} label="Neighbours (k)" value={value.k} choices={K_CHOICES}
        onChange={(k) => onChange({ ...value, k: Number(k) })} />
      <SelectField id={`${id}-mod`} label="Modality" value={value.modality} anyLabel="Any"
        choices={options.data?.modalities ?? []} onChange={(modality) => onChange({ ...value, modality })} />
      <SelectField id={`${id}-view`} label="View position" value={value.viewPosition} anyLabel="Any"
        choices={options.data?.viewPositions ?? []} onChange={(viewPosition) => onChange({ ...value, viewPosition })} />
    </div>
  );
}

/** The neighbours of an indexed image or of an uploaded file, as a grid of thumbnails with similarity. */
export function SimilarGrid({ query, controls, label }: { query: SimilarQuery | null; controls: SimilarControls; label: string }) {
  const key = useMemo(() => {
    if (!query) return null;
    const q = query.imageId ? `id:${query.imageId}` : `file:${query.file?.name}:${query.file?.size}:${query.nonce ?? 0}`;
    return `${q}|${controls.k}|${controls.modality}|${controls.viewPosition}`;
  }, [query, controls]);
  const result = useAsync(key, (signal) => similarImages({ ...(query as SimilarQuery), ...controls }, signal));
  const headingId = useId();
  if (!query) return null;
  return (
    <section aria-labelledby={headingId} aria-busy={result.status === "loading"} data-testid="similar">
      <h3 id={headingId} className="visually-hidden">
        {label}
      </h3>
      {result.status === "loading" && <Loading label={query.file ? "Embedding the image and searching…" : "Finding similar images…"} />}
      {result.status === "error" && <ErrorState error={result.error} onRetry={result.reload} title="Similar-image search failed" />}
      {result.data && result.data.hits.length === 0 && result.status !== "loading" && (
        <EmptyState title="No similar images">
          <p>Nothing matches these filters. Widen them or raise k.</p>
        </EmptyState>
      )}
      {result.data && result.data.hits.length > 0 && (
        <>
          {result.data.queryInfo && <p className="hint">{result.data.queryInfo}</p>}
          <ol className="grid" aria-label={label} style={{ opacity: result.status === "loading" ? 0.6 : 1 }}>
            {result.data.hits.map((h, i) => {
              const what = [h.image.modality, h.image.viewPosition, h.image.bodyPart].filter(Boolean).join(" ");
              return (
                <li key={h.image.id} data-testid="similar-item">
                  <Thumbnail
                    src={h.image.thumbnailUrl}
                    href={imageHref(h.image.id)}
                    alt={`Neighbour ${i + 1}: ${what || "image"}, similarity ${h.score.toFixed(3)}`}
                    badge={what || undefined}
                  />
                  <span>
                    <span className="sim">{h.score.toFixed(3)}</span> <span className="hint">similarity</span>
                  </span>
                  <span className="hint mono" title={h.image.id} style={{ overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" }}>
                    {h.image.studyDate || h.image.id}
                  </span>
                </li>
              );
            })}
          </ol>
        </>
      )}
    </section>
  );
}

const ACCEPT = ".dcm,.dicom,application/dicom,image/png,image/jpeg";
export const MAX_UPLOAD_BYTES = 64 * 1024 * 1024;

/** Drop (or pick, by keyboard too) one DICOM or PNG/JPEG file. */
export function DropZone({ onFile }: { onFile: (file: File) => void }) {
  const [over, setOver] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);
  const id = useId();
  const take = (files: FileList | null) => {
    const f = files?.[0];
    if (!f) return;
    if (f.size === 0) return setError(`${f.name} is empty.`);
    if (f.size > MAX_UPLOAD_BYTES) return setError(`${f.name} is larger than ${MAX_UPLOAD_BYTES / 1024 / 1024} MB.`);
    setError(null);
    onFile(f);
  };
  return (
    <div>
      <div
        className={`dropzone${over ? " over" : ""}`}
        role="button"
        tabIndex={0}
        aria-describedby={`${id}-help`}
        data-testid="dropzone"
        onClick={() => input.current?.click()}
        onKeyDown={(e) => {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            input.current?.click();
          }
        }}
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={(e) => {
          e.preventDefault();
          setOver(false);
          take(e.dataTransfer.files);
        }}
      >
        <strong>Drop a DICOM or PNG file here</strong>, or press to choose one
        <div id={`${id}-help`} className="hint">
          The image is embedded with the same model as the index and never stored.
        </div>
      </div>
      <input
        ref={input}
        type="file"
        accept={ACCEPT}
        className="visually-hidden"
        tabIndex={-1}
        aria-label="Query image file"
        data-testid="upload-input"
        onChange={(e) => {
          take(e.target.files);
          e.target.value = "";
        }}
      />
      {error && (
        <p role="alert" style={{ color: "var(--neg)" }}>
          {error}
        </p>
      )}
    </div>
  );
}

/** Preview of the uploaded file (PNG/JPEG only; a DICOM shows its name). */
export function UploadPreview({ file }: { file: File }) {
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    if (!/^image\/(png|jpe?g)$/.test(file.type)) {
      setUrl(null);
      return;
    }
    const u = URL.createObjectURL(file);
    setUrl(u);
    return () => URL.revokeObjectURL(u);
  }, [file]);
  return (
    <figure style={{ margin: 0 }}>
      <div className={url ? "thumb" : "thumb empty"}>
        {url ? (
          <img src={url} alt={`Uploaded query image ${file.name}`} />
        ) : (
          <span className="thumb-msg">DICOM</span>
        )}
      </div>
      <figcaption className="hint mono" style={{ overflowWrap: "anywhere" }}>
        {file.name} · {(file.size / 1024).toFixed(0)} KB
      </figcaption>
    </figure>
  );
}

/** "Search by uploaded image": drop zone, preview, controls and neighbours. */
export function UploadSearch({ initialControls }: { initialControls?: SimilarControls }) {
  const [file, setFile] = useState<File | null>(null);
  const [nonce, setNonce] = useState(0);
  const [controls, setControls] = useState<SimilarControls>(initialControls ?? { k: 10, modality: "", viewPosition: "" });
  return (
    <div data-testid="upload-search">
      <div className="upload-row">
        {file ? <UploadPreview file={file} /> : <div className="thumb empty" aria-hidden="true"><span className="thumb-msg">no file yet</span></div>}
        <div>
          <DropZone
            onFile={(f) => {
              setFile(f);
              setNonce((n) => n + 1);
            }}
          />
          <SimilarControlsBar value={controls} onChange={setControls} />
        </div>
      </div>
      <SimilarGrid query={file ? { file, nonce } : null} controls={controls} label="Images similar to the uploaded image" />
    </div>
  );
}
