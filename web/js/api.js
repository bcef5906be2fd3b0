// The REST API with the signed-in token, and the sign-in itself (token or pairing code).

const TOKEN_KEY = "parley.token";

export class ApiError extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || "ERROR";
  }
}

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function signOut() {
  localStorage.removeItem(TOKEN_KEY);
}

/** Calls the API; throws ApiError with the server's code on failure. */
export async function api(method, path, body) {
  const headers = { authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Stores `file` in the workspace at `path`: `{path, size}`. */
export async function upload(path, file) {
  const encoded = path.split("/").map(encodeURIComponent).join("/");
  const response = await fetch(`/api/workspace/file/${encoded}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token()}`, "content-type": "application/octet-stream" },
    body: file,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Downloads `path` (an authenticated GET) as the file the server names, or `name`. */
export async function download(path, name) {
  const response = await fetch(path, { headers: { authorization: `Bearer ${token()}` } });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new ApiError(response.status, data);
  }
  const named = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = named ? named[1] : name || "download";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

/** Signs in with a token, or trades a pairing code (like `K7QD-M2XH`) for one. */
export async function signIn(secret) {
  let candidate = secret.trim();
  if (!candidate.startsWith("pk_")) {
    const response = await fetch("/api/pair", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ code: candidate, label: "web chat" }),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, data);
    candidate = data.token;
  }
  localStorage.setItem(TOKEN_KEY, candidate);
  try {
    await api("GET", "/api/sessions?limit=1");
  } catch (err) {
    signOut();
    throw err;
  }
}

/** Plain words for the stable error codes. */
export function explain(code, message) {
  const words = {
    PROVIDER_ERROR: "The model could not answer",
    PROVIDER_NOT_CONFIGURED: "No model is configured on the server",
    AGENT_ERROR: "The agent stopped with an error",
    SESSION_QUEUE_FULL: "Too many messages are waiting in this chat",
    RATE_LIMITED: "Slow down a little",
    MESSAGE_TOO_LARGE: "That message is too long",
    EMPTY_CONTENT: "The message is empty",
    AUTH_ERROR: "You are signed out",
    NOT_FOUND: "Not found",
    UNKNOWN_MODEL: "That model is not offered any more; pick another",
    BUDGET_EXCEEDED: "You have spent this month's budget",
  };
  const plain = words[code] || "Something went wrong";
  return `${plain}: ${message} (${code})`;
}
