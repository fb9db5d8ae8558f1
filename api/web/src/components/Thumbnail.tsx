import { useState } from "react";

/**
 * A thumbnail from the gateway. `Image.thumbnailUrl` carries a short-lived signature, so a plain <img> works
 * (and the browser caches it); failures show a reason instead of a broken-image icon.
 */
export function Thumbnail({
  src,
  alt,
  href,
  badge,
  className,
  eager,
}: {
  src: string;
  alt: string;
  href?: string;
  badge?: string;
  className?: string;
  eager?: boolean;
}) {
  // Remember which src finished (a cached image can finish before any effect runs, so the status is
  // derived from the src that loaded rather than reset in an effect).
  const [done, setDone] = useState<{ src: string; ok: boolean } | null>(null);
  const status: "loading" | "ok" | "error" = !src ? "error" : done?.src === src ? (done.ok ? "ok" : "error") : "loading";
  const body = (
    <>
      {src && status !== "error" && (
        <img
          src={src}
          alt={alt}
          loading={eager ? "eager" : "lazy"}
          decoding="async"
          onLoad={() => setDone({ src, ok: true })}
          onError={() => setDone({ src, ok: false })}
        />
      )}
      {status === "loading" && <span className="thumb-msg skeleton" aria-hidden="true" />}
      {status === "error" && <span className="thumb-msg">{src ? "thumbnail unavailable" : "no thumbnail"}</span>}
      {badge && <span className="badge">{badge}</span>}
    </>
  );
  const cls = `thumb ${className ?? ""}`.trim();
  if (href) {
    return (
      <a className={cls} href={href} aria-label={alt} data-testid="thumb-link" data-thumb-status={status}>
        {body}
      </a>
    );
  }
  return (
    <div className={cls} role={status === "ok" ? undefined : "img"} aria-label={status === "ok" ? undefined : alt} data-thumb-status={status}>
      {body}
    </div>
  );
}
