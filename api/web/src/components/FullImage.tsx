import { useEffect, useId, useRef, useState } from "react";
import { fetchInstanceMetadata, fetchRendered } from "../api/client";
import { PRESETS, renderedUrl, valueRange, type WindowLevel } from "../lib/viewer";

type Uids = { study: string; series: string; instance: string };

/**
 * The full-resolution image from WADO-RS rendered frames (server-side decode through the gateway's imaging
 * pipeline, JPEG), with window/level presets and free adjustment of centre and width (range inputs: arrow
 * keys, Page Up/Down, Home/End). The time to the first full-resolution frame is kept in data-first-frame-ms.
 */
export function FullImage({ uids, alt }: { uids: Uids; alt: string }) {
  const [preset, setPreset] = useState("default");
  const [custom, setCustom] = useState<WindowLevel | null>(null);
  const [range, setRange] = useState<{ min: number; max: number; window: WindowLevel | null } | null>(null);
  const [src, setSrc] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(true);
  const [firstMs, setFirstMs] = useState<number | null>(null);
  const started = useRef(performance.now());
  const id = useId();

  const win: WindowLevel | null = preset === "custom" ? custom : (PRESETS.find((p) => p.id === preset)?.window ?? null);
  const url = renderedUrl(uids, win);

  useEffect(() => {
    const ctrl = new AbortController();
    void fetchInstanceMetadata(uids, ctrl.signal).then(
      (meta) => setRange(valueRange(meta)),
      () => undefined, // sliders fall back to a generic range; the image itself reports errors
    );
    return () => ctrl.abort();
  }, [uids.study, uids.series, uids.instance]); // the UIDs, not the object identity, decide a reload

  useEffect(() => {
    const ctrl = new AbortController();
    setBusy(true);
    const timer = setTimeout(() => {
      fetchRendered(url, ctrl.signal).then(
        (blob) => {
          const next = URL.createObjectURL(blob);
          setSrc((old) => {
            if (old) URL.revokeObjectURL(old);
            return next;
          });
          setError(null);
        },
        (e: unknown) => {
          if (!ctrl.signal.aborted) {
            setError(e instanceof Error ? e.message : String(e));
            setBusy(false);
          }
        },
      );
    }, preset === "custom" ? 120 : 0); // debounce slider drags
    return () => {
      clearTimeout(timer);
      ctrl.abort();
    };
  }, [url, preset]);

  const current: WindowLevel = custom ?? win ?? range?.window ?? { center: 0, width: 1 };
  const lo = range?.min ?? -2048;
  const hi = range?.max ?? 4096;
  const setWindow = (w: WindowLevel) => {
    setCustom(w);
    setPreset("custom");
  };

  return (
    <div className="full-image" data-testid="full-image" data-first-frame-ms={firstMs ?? undefined} data-busy={busy ? "true" : "false"}
      data-window={win ? `${win.center},${win.width}` : "default"}>
      <div className="wl-controls" role="group" aria-labelledby={`${id}-wl`}>
        <span id={`${id}-wl`} className="wl-label">Window</span>
        {PRESETS.map((p) => (
          <button key={p.id} type="button" aria-pressed={preset === p.id} data-preset={p.id}
            onClick={() => { setPreset(p.id); setCustom(null); }}>
            {p.label}
          </button>
        ))}
        <label>
          Centre <output>{Math.round(current.center)}</output>
          <input type="range" min={lo} max={hi} step={Math.max(1, Math.round((hi - lo) / 400))} value={current.center}
            data-testid="wl-center" onChange={(e) => setWindow({ ...current, center: Number(e.target.value) })} />
        </label>
        <label>
          Width <output>{Math.round(current.width)}</output>
          <input type="range" min={1} max={Math.max(2, hi - lo)} step={Math.max(1, Math.round((hi - lo) / 400))} value={current.width}
            data-testid="wl-width" onChange={(e) => setWindow({ ...current, width: Number(e.target.value) })} />
        </label>
        {busy && <span className="hint" role="status">rendering…</span>}
      </div>
      {error && <p className="error" role="alert">Full-resolution image unavailable: {error}</p>}
      {src && (
        <img src={src} alt={alt} data-testid="full-image-img"
          onLoad={() => {
            setBusy(false);
            if (firstMs === null) setFirstMs(Math.round(performance.now() - started.current));
          }} />
      )}
    </div>
  );
}
