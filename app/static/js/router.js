// Hash routes ("#/jobs/job-123?x=1"): views mount into <main> and return a dispose
// function that the router calls before the next view mounts (stops their polling).

const routes = [];
let dispose = null;
let mountedKey = null;
let guard = () => true;

/**
 * route('/jobs/:id', view, 'Job'): view(main, {params, query}) -> dispose function
 * (optional); the title goes to document.title until the view sets a better one.
 */
export function route(pattern, view, title = '') {
  const names = [];
  const source = pattern.replace(/:[a-z]+/g, m => { names.push(m.slice(1)); return '([^/]+)'; });
  routes.push({ regex: new RegExp(`^${source}$`), names, view, pattern, title });
}

export function currentPath() {
  const hash = window.location.hash.replace(/^#/, '') || '/jobs';
  const [path, qs = ''] = hash.split('?');
  return { path, query: Object.fromEntries(new URLSearchParams(qs)) };
}

export function navigate(hash) {
  if (window.location.hash === hash) render(true);
  else window.location.hash = hash;
}

function render(force = false) {
  const main = document.getElementById('main');
  const { path, query } = currentPath();
  const key = `${path}?${new URLSearchParams(query)}`;
  if (!force && key === mountedKey) return;
  if (!guard(main)) { suspend(); return; }
  for (const r of routes) {
    const m = r.regex.exec(path);
    if (!m) continue;
    const params = Object.fromEntries(r.names.map((n, i) => [n, decodeURIComponent(m[i + 1])]));
    if (dispose) dispose();
    dispose = null;
    main.replaceChildren();
    mountedKey = key;
    highlightNav(path);
    document.title = r.title ? `${r.title} · dptensor` : 'dptensor';
    dispose = r.view(main, { params, query }) || null;
    return;
  }
  navigate('#/jobs');
}

function highlightNav(path) {
  const section = path.split('/')[1];
  for (const a of document.querySelectorAll('[data-nav]')) {
    const on = a.dataset.nav === section || (section === 'jobs' && a.dataset.nav === 'jobs');
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/**
 * Start routing. guard(main) -> false keeps the views out (e.g. not signed in): it
 * fills <main> itself, and the next refresh() mounts the view of the current hash.
 */
export function start(options = {}) {
  if (options.guard) guard = options.guard;
  window.addEventListener('hashchange', () => render());
  render(true);
}

/** Dispose of the mounted view (its polling stops). */
export function suspend() {
  if (dispose) dispose();
  dispose = null;
  mountedKey = null;
}

/** Re-mount the current view (after signing in, for instance). */
export function refresh() {
  render(true);
}
