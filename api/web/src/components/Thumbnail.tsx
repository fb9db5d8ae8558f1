import { useEffect, useState } from "react";
import { getToken } from "../lib/auth";

type Load = { status: "loading" } | { status: "ok"; url: string } | { status: "error"; message: string };

/**
 * A thumbnail from the gateway. It is fetched with the bearer token (an <img src> cannot send one) and shown
 * from a blob URL, revoked when the component goes away.
 */
export function Thumbnail({
  src,
  alt,
  href,
  badge,
  className,
}: {
  src: string;
  alt: string;
  href?: string;
  badge?: string;
  className?: string;
}) {
  const [load, setLoad] = useState<Load>({ status: "loading" });
  useEffect(() => {
    if (!src) {
      setLoad({ status: "error", message: "no thumbnail" });
      return;
    }
    const ctrl = new AbortController();
    let url: string | null = null;
    setLoad({ status: "loading" });
    const token = getToken();
    fetch(src, { headers: token ? { Authorization: `Bearer ${token}` } : {}, signal: ctrl.signal })
      .then(async (r) => {
        if (!r.ok) throw new Error(r.status === 404 ? "no thumbnail" : `thumbnail: HTTP ${r.status}`);
        const blob = await r.blob();
        url = URL.createObjectURL(blob);
        if (!ctrl.signal.aborted) setLoad({ status: "ok", url });
      })
      .catch((e: unknown) => {
        if (!ctrl.signal.aborted) setLoad({ status: "error", message: e instanceof Error ? e.message : "thumbnail failed" });
      });
    return () => {
      ctrl.abort();
      if (url) URL.revokeObjectURL(url);
    };
  }, [src]);
  const body = (
    <>
      {load.status === "ok" && <img src={load.url} alt={alt} />}
      {load.status === "loading" && <span className="thumb-msg skeleton" aria-hidden="true" />}
      {load.status === "error" && <span className="thumb-msg">{load.message}</span>}
      {badge && <span className="badge">{badge}</span>}
    </>
  );
  const cls = `thumb ${className ?? ""}`.trim();
  if (href) {
    return (
      <a className={cls} href={href} aria-label={alt} data-testid="thumb-link">
        {body}
      </a>
    );
  }
  return (
    <div className={cls} role={load.status === "ok" ? undefined : "img"} aria-label={load.status === "ok" ? undefined : alt}>
      {body}
    </div>
  );
}
