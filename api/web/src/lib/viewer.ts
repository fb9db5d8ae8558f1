// "Open in viewer" links and window/level: pure helpers (unit-tested in viewer.test.ts).

/** The gateway's MEDSEARCH_VIEWER_URL_TEMPLATE with {study}, {series}, {instance} replaced (URL-encoded); null
 * when there is no template or the study UID it needs is unknown. */
export function viewerUrl(template: string, uids: { study: string; series?: string; instance?: string }): string | null {
  if (!template.trim() || !uids.study) return null;
  const values: Record<string, string | undefined> = { study: uids.study, series: uids.series, instance: uids.instance };
  let missing = false;
  const url = template.replace(/\{(study|series|instance)\}/g, (_m, name: string) => {
    const v = values[name];
    if (!v) missing = true;
    return encodeURIComponent(v ?? "");
  });
  if (missing) return null;
  // only web links: a template is configuration, but never let it become a javascript: URL
  return /^(https?:)?\/\//i.test(url) || url.startsWith("/") ? url : null;
}

export interface WindowLevel {
  center: number;
  width: number;
}

/** Presets in Hounsfield units (CT); other images keep their own window as "Default" and adjust freely. */
export const PRESETS: { id: string; label: string; window: WindowLevel | null }[] = [
  { id: "default", label: "Default", window: null },
  { id: "lung", label: "Lung", window: { center: -600, width: 1500 } },
  { id: "mediastinum", label: "Mediastinum", window: { center: 40, width: 400 } },
  { id: "bone", label: "Bone", window: { center: 400, width: 1800 } },
];

/** The WADO-RS rendered-frame URL (relative to the web client) of an instance, with an optional window. */
export function renderedUrl(
  uids: { study: string; series: string; instance: string },
  window: WindowLevel | null,
  mediaType: "image/jpeg" | "image/png" = "image/jpeg",
): string {
  const path = ["dicomweb", "studies", uids.study, "series", uids.series, "instances", uids.instance, "frames", "1", "rendered"]
    .map((p, i) => (i % 2 === 0 ? p : encodeURIComponent(p)))
    .join("/");
  const q = new URLSearchParams({ accept: mediaType });
  if (window) q.set("window", `${Math.round(window.center)},${Math.max(1, Math.round(window.width))},linear`);
  return `${path}?${q.toString()}`;
}

/** Slider bounds from the instance metadata (DICOM JSON): stored value range through the modality LUT. */
export function valueRange(meta: Record<string, { Value?: unknown[] }>): { min: number; max: number; window: WindowLevel | null } {
  const num = (tag: string, fallback: number): number => {
    const v = meta[tag]?.Value?.[0];
    const n = typeof v === "number" ? v : typeof v === "string" ? Number(v) : NaN;
    return Number.isFinite(n) ? n : fallback;
  };
  const bits = num("00280101", 16);
  const signed = num("00280103", 0) === 1;
  const slope = num("00281053", 1);
  const intercept = num("00281052", 0);
  const lo = signed ? -(2 ** (bits - 1)) : 0;
  const hi = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
  const a = lo * slope + intercept;
  const b = hi * slope + intercept;
  const c = meta["00281050"]?.Value?.[0];
  const w = meta["00281051"]?.Value?.[0];
  const window = c !== undefined && w !== undefined && Number.isFinite(Number(c)) && Number(w) > 1
    ? { center: Number(c), width: Number(w) }
    : null;
  return { min: Math.min(a, b), max: Math.max(a, b), window };
}
