import { useEffect, useRef, useState } from "react";
import { ApiError } from "./graphql";

export type AsyncState<T> =
  | { status: "idle"; data: null; error: null }
  | { status: "loading"; data: T | null; error: null }
  | { status: "success"; data: T; error: null }
  | { status: "error"; data: T | null; error: Error };

/**
 * Run `load` whenever `key` changes; the previous request is aborted, so a slow answer to an old query never
 * overwrites a newer one. `key === null` means "nothing to load".
 */
export function useAsync<T>(key: string | null, load: (signal: AbortSignal) => Promise<T>): AsyncState<T> & { reload: () => void } {
  const [state, setState] = useState<AsyncState<T>>({ status: "idle", data: null, error: null });
  const [nonce, setNonce] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    if (key === null) {
      setState({ status: "idle", data: null, error: null });
      return;
    }
    const ctrl = new AbortController();
    setState((s) => ({ status: "loading", data: s.data, error: null }));
    loadRef.current(ctrl.signal).then(
      (data) => {
        if (!ctrl.signal.aborted) setState({ status: "success", data, error: null });
      },
      (error: unknown) => {
        if (ctrl.signal.aborted || (error instanceof ApiError && error.kind === "aborted")) return;
        setState((s) => ({ status: "error", data: s.data, error: error instanceof Error ? error : new Error(String(error)) }));
      },
    );
    return () => ctrl.abort();
  }, [key, nonce]);
  return { ...state, reload: () => setNonce((n) => n + 1) };
}
