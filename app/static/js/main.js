// Entry point: the token box, the server status, the banner and the routes.

import { api, describe, getToken, setToken } from './api.js';
import { h, replace } from './dom.js';
import { poll } from './poll.js';
import { refresh, route, start } from './router.js';
import { datasetsView } from './views/datasets.js';
import { jobView } from './views/job.js';
import { jobsView } from './views/jobs.js';
import { modelsView } from './views/models.js';
import { spectraView } from './views/spectra.js';
import { trainView } from './views/train.js';

const AUTH_MODE = document.querySelector('meta[name="dptensor-auth"]')?.content === 'none' ? 'none' : 'token';

// --- banner (page-wide messages) --------------------------------------------------------

const banner = document.getElementById('banner');
let bannerKind = null;

function showBanner(kind, ...content) {
  bannerKind = kind;
  banner.className = `banner banner-${kind}`;
  replace(banner, ...content);
  banner.hidden = false;
}

function hideBanner(kind) {
  if (kind && bannerKind !== kind) return;
  banner.hidden = true;
  bannerKind = null;
}

// --- authentication ---------------------------------------------------------------------
// Token mode: nothing but the sign-in card is shown (and no api request is made) until
// /v1/me accepts the token; a 401 later (token revoked) brings the card back.

const authBox = document.getElementById('auth-box');
let user = null;
let signInMessage = '';

function signInCard(main) {
  const input = h('input', {
    type: 'password', id: 'token-input', name: 'token', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'dpt_…', 'aria-describedby': 'token-help token-msg', required: true,
  });
  const msg = h('p', { class: 'auth-msg', id: 'token-msg', role: 'status' }, signInMessage);
  const button = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Sign in');
  const form = h('form', { class: 'token-form', onsubmit: async e => {
    e.preventDefault();
    button.disabled = true;
    msg.textContent = await signIn(input.value.trim());
    button.disabled = false;
    if (msg.textContent) input.select();
  } },
  h('label', { for: 'token-input' }, 'API token'), input, button);
  replace(main, h('section', { class: 'card signin-card', 'aria-labelledby': 'signin-h' },
    h('h1', { id: 'signin-h' }, 'Sign in'),
    h('p', { id: 'token-help' }, 'This dptensor service needs an API token. Paste yours here; it is kept in this ',
      'browser (localStorage) and sent with every request. An administrator creates one with ',
      h('code', {}, 'dptensor token create --user NAME'), '.'),
    form, msg));
  replace(authBox, h('span', { class: 'user' }, 'Not signed in'));
  input.focus();
}

function showUser(u) {
  user = u;
  const out = h('button', { type: 'button', class: 'btn btn-link btn-small', id: 'sign-out', onclick: () => {
    setToken('');
    user = null;
    signInMessage = 'Signed out.';
    refresh();
  } }, 'Sign out');
  replace(authBox, h('span', { class: 'user', id: 'signed-in-user', dataset: { user: u.name } },
    'Signed in as ', h('strong', {}, u.name), u.is_admin ? ' (admin)' : ''), AUTH_MODE === 'token' ? out : null);
}

/** Try a token; '' on success (the view of the current hash is mounted), else the reason. */
async function signIn(token) {
  if (!token) return 'Paste a token first.';
  setToken(token);
  try {
    showUser(await api('/v1/me'));
    signInMessage = '';
    refresh();
    return '';
  } catch (err) {
    setToken('');
    return err.status === 401 ? 'This token was rejected.' : describe(err);
  }
}

async function initAuth() {
  if (AUTH_MODE === 'none') {
    showUser({ name: 'local', is_admin: true });
    replace(authBox, h('span', { class: 'user', id: 'signed-in-user', dataset: { user: 'local' } },
      'Local mode · no authentication'));
    return;
  }
  if (!getToken()) return;
  try {
    showUser(await api('/v1/me'));
  } catch (err) {
    if (err.status === 401) { setToken(''); signInMessage = 'The saved token was rejected; paste a valid one.'; }
    else signInMessage = describe(err);
  }
}

window.addEventListener('dptensor:unauthorized', e => {
  if (AUTH_MODE === 'none' || !user) return;
  user = null;
  setToken('');
  signInMessage = `The server refused the token (401: ${e.detail || 'unknown token'}). Sign in again.`;
  refresh();
});

window.addEventListener('dptensor:reachable', e => {
  if (e.detail) hideBanner('offline');
  else showBanner('offline', 'The server cannot be reached. Retrying…');
});

function guard(main) {
  if (user) return true;
  document.title = 'Sign in · dptensor';
  signInCard(main);
  return false;
}

// --- server status ----------------------------------------------------------------------

const statusEl = document.getElementById('server-status');

function showStatus(ready) {
  const workers = ready.workers || [];
  const devices = [...new Set(workers.map(w => w.gpu || w.device))].join(', ');
  const missing = ready.queues_without_worker || [];
  let text;
  if (ready.ready && missing.length === 0) text = `ready · ${workers.length} worker${workers.length === 1 ? '' : 's'}`;
  else if (ready.ready) text = `no worker for ${missing.join(', ')}`;
  else if (!ready.database?.ok) text = 'database down';
  else if (!ready.broker?.ok) text = 'broker down';
  else text = 'no worker running';
  statusEl.className = `server-status ${ready.ready && !missing.length ? 'is-ok' : 'is-warn'}`;
  statusEl.textContent = text;
  statusEl.title = devices ? `workers on ${devices}` : '';
}

poll(async () => {
  try {
    // 503 also carries the Ready body (which check failed)
    const response = await fetch('/v1/health/ready', { headers: { Accept: 'application/json' } });
    showStatus(await response.json());
  } catch {
    statusEl.className = 'server-status is-bad';
    statusEl.textContent = 'offline';
  }
}, 10_000);

// --- routes -----------------------------------------------------------------------------

route('/jobs', jobsView, 'Jobs');
route('/jobs/:id', jobView, 'Job');
route('/train', trainView, 'New training');
route('/datasets', datasetsView, 'Datasets');
route('/models', modelsView, 'Models');
route('/spectra', spectraView, 'Spectra');

initAuth().finally(() => start({ guard }));
