import type { ReactNode } from "react";
import { ApiError } from "../lib/graphql";

export function ErrorState({ error, onRetry, title }: { error: Error; onRetry?: () => void; title?: string }) {
  const kind = error instanceof ApiError ? error.kind : "graphql";
  const heading =
    title ??
    (kind === "network"
      ? "The gateway cannot be reached"
      : kind === "forbidden"
        ? "Not allowed"
        : kind === "auth"
          ? "Sign-in needed"
          : "Something went wrong");
  return (
    <div className="state error" role="alert">
      <h2>{heading}</h2>
      <p>{error.message}</p>
      {onRetry && (
        <button type="button" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function EmptyState({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="state" role="status">
      <h2>{title}</h2>
      {children}
    </div>
  );
}

export function CardSkeletons({ count = 3 }: { count?: number }) {
  return (
    <div aria-hidden="true" style={{ display: "flex", flexDirection: "column", gap: "0.8rem" }}>
      {Array.from({ length: count }, (_, i) => (
        <div key={i} className="skeleton card-sk" />
      ))}
    </div>
  );
}

export function Loading({ label }: { label: string }) {
  return (
    <p role="status" className="hint">
      <span className="spinner" aria-hidden="true" /> {label}
    </p>
  );
}
