import { useEffect, useState } from "react";
import { fetchWebSettings } from "../api/client";
import { viewerUrl } from "../lib/viewer";

/** "Open in viewer": the gateway's viewer URL template (e.g. OHIF) filled with the study's UIDs; nothing when
 * the template is empty or the study is unknown. Opens in a new tab. */
export function ViewerLink({ study, series, instance }: { study: string; series?: string; instance?: string }) {
  const [template, setTemplate] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    void fetchWebSettings().then((s) => {
      if (live) setTemplate(s.viewerUrlTemplate);
    });
    return () => {
      live = false;
    };
  }, []);
  const href = template ? viewerUrl(template, { study, series, instance }) : null;
  if (!href) return null;
  return (
    <a className="viewer-link" href={href} target="_blank" rel="noopener noreferrer" data-testid="viewer-link">
      Open in viewer<span className="sr-only"> (study {study}, new tab)</span>
    </a>
  );
}
