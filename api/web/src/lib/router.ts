// Hash routing (#/search?..., #/image/<id>?...): works from any static host path, no server fallback needed.
export type Route =
  | { name: "search"; params: URLSearchParams }
  | { name: "image"; id: string; params: URLSearchParams }
  | { name: "upload"; params: URLSearchParams }
  | { name: "notFound"; path: string };

export function parseHash(hash: string): Route {
  const raw = hash.replace(/^#/, "");
  const [pathPart = "", query = ""] = raw.split("?", 2) as [string?, string?];
  const path = pathPart.replace(/^\/+/, "");
  const params = new URLSearchParams(query);
  if (path === "" || path === "search") return { name: "search", params };
  if (path === "upload") return { name: "upload", params };
  const m = /^image\/(.+)$/.exec(path);
  if (m && m[1]) {
    try {
      return { name: "image", id: decodeURIComponent(m[1]), params };
    } catch {
      return { name: "notFound", path };
    }
  }
  return { name: "notFound", path };
}

export function searchHref(params: URLSearchParams): string {
  const q = params.toString();
  return `#/search${q ? `?${q}` : ""}`;
}

export function imageHref(id: string, params?: URLSearchParams): string {
  const q = params?.toString();
  return `#/image/${encodeURIComponent(id)}${q ? `?${q}` : ""}`;
}

export function navigate(href: string, replace = false): void {
  if (replace) {
    history.replaceState(null, "", href);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } else {
    window.location.hash = href.replace(/^#/, "");
  }
}

let lastSearch = "#/search";
/** Remember the search the user came from, so "Back to results" restores it (query, filters, page). */
export function rememberSearch(href: string): void {
  lastSearch = href;
}
export function lastSearchHref(): string {
  return lastSearch;
}
