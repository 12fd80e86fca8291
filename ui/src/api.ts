// Calls to annostore's HTTP API: the key (when the server needs one) on every request,
// problem+json turned into errors people can read, and a 401 turned into a request for a
// key (the caller's request is retried once a key is given).

import { askForKey, currentKey } from "./auth";

/** An answer other than 2xx: the problem's detail and, for 422, its field errors. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly fields: string[] = [],
  ) {
    super(`${status}: ${detail}`);
  }
}

async function problem(res: Response): Promise<ApiError> {
  let detail = res.statusText || `HTTP ${res.status}`;
  let fields: string[] = [];
  try {
    const body = await res.json();
    if (typeof body?.detail === "string") detail = body.detail;
    if (Array.isArray(body?.errors)) {
      fields = body.errors.map((e: { field?: string; reason?: string }) =>
        [e.field, e.reason].filter(Boolean).join(": "),
      );
    }
  } catch {
    // Not JSON (a proxy's page): the status line is all there is.
  }
  return new ApiError(res.status, detail, fields);
}

/** `fetch` with the key; on 401 asks for a key and tries again. */
export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  for (;;) {
    const headers = new Headers(init.headers);
    const key = currentKey();
    if (key) headers.set("authorization", `Bearer ${key}`);
    const res = await fetch(path, { ...init, headers });
    if (res.status === 401) {
      await askForKey(key ? "The key was refused: give another." : "This server needs an API key.");
      continue;
    }
    if (!res.ok) throw await problem(res);
    return res;
  }
}

export async function getJson<T>(path: string): Promise<T> {
  return (await request(path)).json() as Promise<T>;
}

export async function postJson<T>(path: string, body: unknown): Promise<T> {
  const res = await request(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return res.json() as Promise<T>;
}

/** Percent-encodes one path segment (media ids may hold `/`, `#`, spaces). */
export function segment(s: string): string {
  return encodeURIComponent(s);
}
