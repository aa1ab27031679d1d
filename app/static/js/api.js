// The REST client: bearer token from localStorage on every request, one error type
// (ApiError: status, detail, problems[{loc, msg}]) and a window event on 401.

const TOKEN_KEY = 'dptensor.token';

export function getToken() {
  try { return localStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch { /* storage disabled: the token lives for this page only */ }
}

export class ApiError extends Error {
  constructor(status, detail, problems = []) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail || `HTTP ${status}`;
    this.problems = Array.isArray(problems) ? problems : [];
  }
}

/** Network failure (server down, connection reset): status 0. */
export class NetworkError extends ApiError {
  constructor(message) { super(0, message || 'the server cannot be reached'); }
}

function authHeaders(extra = {}) {
  const token = getToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

function signalUnauthorized(detail) {
  window.dispatchEvent(new CustomEvent('dptensor:unauthorized', { detail }));
}

function signalReachable(ok) {
  window.dispatchEvent(new CustomEvent('dptensor:reachable', { detail: ok }));
}

async function errorFrom(response) {
  let detail = `${response.status} ${response.statusText}`;
  let problems = [];
  try {
    const body = await response.json();
    if (body && typeof body.detail === 'string') detail = body.detail;
    if (body && Array.isArray(body.problems)) problems = body.problems;
  } catch { /* not JSON */ }
  if (response.status === 401) signalUnauthorized(detail);
  return new ApiError(response.status, detail, problems);
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') params.set(k, v);
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/**
 * api('/v1/jobs', {query: {kind: 'train'}}) -> parsed JSON (or text for text/plain).
 * json: a body sent as JSON; form: a FormData body; raw: return the Response.
 */
export async function api(path, { method = 'GET', query, json, form, signal, raw = false } = {}) {
  const init = { method, headers: authHeaders({ Accept: 'application/json' }), signal };
  if (json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(withQuery(path, query), init);
  } catch (exc) {
    if (exc?.name === 'AbortError') throw exc;
    signalReachable(false);
    throw new NetworkError();
  }
  signalReachable(true);
  if (!response.ok) throw await errorFrom(response);
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  return type.includes('application/json') ? response.json() : response.text();
}

/**
 * POST a FormData with upload progress (fetch has none): onProgress(loaded, total).
 * Resolves with the JSON answer; rejects with ApiError.
 */
export function upload(path, form, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    for (const [k, v] of Object.entries(authHeaders({ Accept: 'application/json' }))) xhr.setRequestHeader(k, v);
    if (onProgress) xhr.upload.addEventListener('progress', e => onProgress(e.loaded, e.lengthComputable ? e.total : null));
    xhr.addEventListener('load', () => {
      signalReachable(true);
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) { resolve(body); return; }
      if (xhr.status === 401) signalUnauthorized(body?.detail);
      reject(new ApiError(xhr.status, body?.detail || `${xhr.status} ${xhr.statusText}`, body?.problems));
    });
    xhr.addEventListener('error', () => { signalReachable(false); reject(new NetworkError()); });
    xhr.addEventListener('abort', () => reject(new DOMException('upload aborted', 'AbortError')));
    signal?.addEventListener('abort', () => xhr.abort());
    xhr.send(form);
  });
}

/** Save a Blob under a file name (an <a download> on an object URL). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Download an api file with the token (a plain link could not send it). */
export async function download(path, filename) {
  const response = await api(path, { raw: true });
  saveBlob(await response.blob(), filename);
}

/** One line for an error, for banners and notes. */
export function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 0) return 'The server cannot be reached; retrying…';
    if (err.status === 401) return `Not signed in: ${err.detail}. Enter your API token at the top right.`;
    return err.detail;
  }
  return String(err?.message || err);
}
