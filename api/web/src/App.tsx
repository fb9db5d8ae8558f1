import { useCallback, useEffect, useState } from "react";
import { checkToken, fetchAuthConfig } from "./api/client";
import type { AuthConfig } from "./api/types";
import { getToken, onTokenChange, setToken } from "./lib/auth";
import { completeLogin } from "./lib/oidc";
import { ApiError, onUnauthorized } from "./lib/graphql";
import { parseHash, type Route } from "./lib/router";
import { ImagePage } from "./pages/ImagePage";
import { Login } from "./pages/Login";
import { SearchPage } from "./pages/SearchPage";
import { UploadPage } from "./pages/UploadPage";

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(window.location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(window.location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

export function App() {
  const [token, setTokenState] = useState<string | null>(() => getToken());
  const [loginMessage, setLoginMessage] = useState<string | null>(null);
  const [authConfig, setAuthConfig] = useState<AuthConfig | null>(null);
  const route = useRoute();

  useEffect(() => onTokenChange(setTokenState), []);
  useEffect(() => {
    onUnauthorized((msg) => {
      setLoginMessage(`Your session ended: ${msg}`);
      setToken(null);
    });
  }, []);
  useEffect(() => {
    const ctrl = new AbortController();
    fetchAuthConfig(ctrl.signal).then(
      async (config) => {
        setAuthConfig(config);
        if (!config.oidc) return;
        try {
          const done = await completeLogin(config.oidc); // back from the IdP with ?code=...
          if (done) {
            setToken(done.token);
            window.location.hash = done.returnTo;
          }
        } catch (e) {
          setLoginMessage(e instanceof Error ? e.message : String(e));
        }
      },
      () => setAuthConfig(null),
    );
    return () => ctrl.abort();
  }, []);
  useEffect(() => {
    const titles: Record<Route["name"], string> = { search: "Search", image: "Image", upload: "Search by image", notFound: "Not found" };
    document.title = `${token ? titles[route.name] : "Sign in"} · medsearch`;
  }, [route.name, token]);

  const signIn = useCallback(async (t: string) => {
    try {
      await checkToken(t);
    } catch (e) {
      if (e instanceof ApiError && e.kind === "auth") throw new Error("The server did not accept this token.");
      throw e;
    }
    setLoginMessage(null);
    setToken(t);
  }, []);

  if (!token) {
    return (
      <>
        <Header route={route} onSignOut={null} />
        <main id="main">
          <Login message={loginMessage} authConfig={authConfig} onSubmit={signIn} />
        </main>
      </>
    );
  }
  return (
    <>
      <a className="skip-link" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>
        Skip to content
      </a>
      <Header
        route={route}
        onSignOut={() => {
          setLoginMessage(null);
          setToken(null);
        }}
      />
      <main id="main" tabIndex={-1}>
        {route.name === "search" && <SearchPage params={route.params} />}
        {route.name === "image" && <ImagePage key={route.id} id={route.id} params={route.params} />}
        {route.name === "upload" && <UploadPage />}
        {route.name === "notFound" && (
          <div className="state">
            <h1>Page not found</h1>
            <p>
              There is no page at <code>{route.path}</code>. <a href="#/search">Go to search</a>.
            </p>
          </div>
        )}
      </main>
    </>
  );
}

function Header({ route, onSignOut }: { route: Route; onSignOut: (() => void) | null }) {
  return (
    <header className="topbar">
      <a className="brand" href="#/search">
        <svg width="20" height="20" viewBox="0 0 16 16" aria-hidden="true">
          <circle cx="7" cy="7" r="5" fill="none" stroke="currentColor" strokeWidth="2" />
          <path d="M10.5 10.5 15 15" stroke="currentColor" strokeWidth="2" />
        </svg>
        medsearch
      </a>
      {onSignOut && (
        <nav aria-label="Main">
          <a href="#/search" aria-current={route.name === "search" ? "page" : undefined}>
            Search reports
          </a>
          <a href="#/upload" aria-current={route.name === "upload" ? "page" : undefined}>
            Search by image
          </a>
        </nav>
      )}
      {onSignOut && (
        <button type="button" onClick={onSignOut}>
          Sign out
        </button>
      )}
    </header>
  );
}
