// New training: paste or load a DeePMD-kit input.json (checked by the api while it is
// edited, problems shown at their JSON path), pick the uploaded systems for training and
// validation (matched from the paths written in input.json, so the example input can be
// pasted unchanged), start the job.

import { api, ApiError } from '../api.js';
import { field, h, note, replace } from '../dom.js';
import { plural } from '../format.js';
import { locate, scanSpans, syntaxErrorPosition } from '../jsonloc.js';
import { navigate } from '../router.js';
import { errorNote, pageHeader, problemList } from './common.js';
import { uploadForm } from './datasets.js';

const CHECK_DELAY_MS = 500;

/** "./a/b/" -> "a/b" */
export function normalisePath(p) {
  return String(p).replace(/\\/g, '/').replace(/^(\.\/)+/, '').replace(/^\/+/, '').replace(/\/+$/, '');
}

/** Does a systems entry of input.json (a path or a dataset: reference) name this system of dataset dsId? */
export function entryMatches(entry, dsId, systemPath) {
  const sys = systemPath === '.' ? '' : systemPath;
  if (entry.startsWith('dataset:')) {
    const [id, ...rest] = entry.slice('dataset:'.length).split('/');
    const sub = normalisePath(rest.join('/'));
    return id === dsId && (!sub || sys === sub || sys.startsWith(`${sub}/`));
  }
  const ref = normalisePath(entry);
  if (!ref || !sys) return false;
  const s = `/${sys}`;
  const r = `/${ref}`;
  // same path; the archive has an extra top folder; the entry is a folder of systems;
  // the entry is an absolute path ending with the system's path
  return s === r || s.endsWith(r) || s.includes(`${r}/`) || r.endsWith(s);
}

function systemsOf(section) {
  const v = section?.systems;
  if (typeof v === 'string') return [v];
  return Array.isArray(v) ? v.filter(x => typeof x === 'string') : [];
}

export function reference(dsId, path) {
  return path === '.' ? `dataset:${dsId}` : `dataset:${dsId}/${path}`;
}

export function trainView(main, { query }) {
  // --- input.json editor --------------------------------------------------------------------
  const textarea = h('textarea', {
    id: 'input-json', class: 'code-input', spellcheck: 'false', wrap: 'off', autocomplete: 'off',
    rows: 22, 'aria-describedby': 'input-json-status input-json-problems',
    placeholder: 'Paste a DeePMD-kit input.json here (dipole or polar model), or load a file.',
  });
  const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
  const fileInput = h('input', { type: 'file', id: 'input-json-file', accept: '.json,application/json', class: 'visually-hidden' });
  const loadBtn = h('label', { for: 'input-json-file', class: 'btn btn-small', role: 'button', tabindex: 0 }, 'Load input.json…');
  const exampleBtn = h('button', { type: 'button', class: 'btn btn-small', id: 'insert-example' }, 'Insert the water example');
  const formatBtn = h('button', { type: 'button', class: 'btn btn-small' }, 'Format');
  const checkStatus = h('p', { id: 'input-json-status', class: 'check-status', role: 'status' });
  const problemsBox = h('div', { id: 'input-json-problems' });
  const warningsBox = h('div');
  const editorCard = h('section', { class: 'card', 'aria-labelledby': 'json-h' },
    h('div', { class: 'card-head' }, h('h2', { id: 'json-h' }, h('label', { for: 'input-json' }, '1. input.json')),
      h('div', { class: 'tools' }, loadBtn, fileInput, exampleBtn, formatBtn)),
    h('p', { class: 'muted' }, 'Paste the DeePMD-kit input as it is: the systems it names are matched with an uploaded ',
      'dataset below. It is checked by the server as you type, with the same rules as a submission.'),
    h('div', { class: 'editor' }, gutter, textarea),
    checkStatus, problemsBox, warningsBox);

  // --- datasets -------------------------------------------------------------------------------
  const dsSelect = h('select', { id: 'train-dataset' });
  const dsField = field('Dataset', dsSelect, { hint: 'the uploaded archive whose systems this training reads', loc: 'dataset', wide: true });
  const systemsBox = h('div', { id: 'train-systems' });
  const matchNote = h('p', { class: 'muted', role: 'status' });
  const sentBox = h('div', { class: 'sent-preview' });
  const systemsProblems = h('div');
  const uploadDetails = h('details', { class: 'inline-upload' }, h('summary', {}, 'Upload a dataset archive'),
    uploadForm({ idPrefix: 'train-ds', onUploaded: ds => {
      datasets = [ds, ...datasets.filter(d => d.id !== ds.id)];
      fillDatasets(ds.id);
      uploadDetails.open = false;
    } }));
  const dataCard = h('section', { class: 'card', 'aria-labelledby': 'data-h' },
    h('h2', { id: 'data-h' }, '2. Training and validation systems'),
    h('div', { class: 'form-row' }, dsField),
    matchNote, systemsBox, systemsProblems, sentBox, uploadDetails);

  // --- start ------------------------------------------------------------------------------------
  const nameInput = h('input', { type: 'text', id: 'job-name', maxlength: 300, placeholder: 'e.g. water dipole, small net' });
  const startBtn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'start-training' }, 'Start training');
  const submitMsg = h('div', { id: 'submit-message', 'aria-live': 'polite' });
  const startCard = h('form', { class: 'card form', 'aria-labelledby': 'start-h', onsubmit: onSubmit },
    h('h2', { id: 'start-h' }, '3. Start'),
    h('div', { class: 'form-row' }, field('Job name', nameInput, { hint: 'optional; shown in the jobs list' })),
    h('div', { class: 'form-actions' }, startBtn), submitMsg);

  replace(main, pageHeader('New training'), editorCard, dataCard, startCard);

  let datasets = [];
  let chosen = { train: new Set(), valid: new Set() };
  let manual = false;
  let parsed = null;
  let checkTimer = null;
  let checkSeq = 0;
  let disposed = false;
  let lastProblems = [];

  // --- editor helpers -----------------------------------------------------------------------------
  function renderGutter(marks = new Map()) {
    const lines = textarea.value.split('\n').length;
    const frag = [];
    for (let n = 1; n <= Math.max(lines, 1); n += 1) {
      const msg = marks.get(n);
      frag.push(h('div', { class: msg ? 'err' : null, title: msg || null }, String(n)));
    }
    gutter.replaceChildren(...frag);
    gutter.scrollTop = textarea.scrollTop;
  }

  function selectSpan(start, end, line) {
    textarea.focus();
    textarea.setSelectionRange(start, end);
    const lh = parseFloat(getComputedStyle(textarea).lineHeight) || 18;
    textarea.scrollTop = Math.max(0, (line - 1) * lh - textarea.clientHeight / 3);
    gutter.scrollTop = textarea.scrollTop;
  }

  function showProblems(problems, heading) {
    lastProblems = problems;
    const text = textarea.value;
    const spans = scanSpans(text);
    const marks = new Map();
    const located = problems.map(p => ({ p, where: locate(text, p.loc, spans) }));
    for (const { p, where } of located) marks.set(where.line, [marks.get(where.line), `${p.loc}: ${p.msg}`].filter(Boolean).join('\n'));
    renderGutter(marks);
    if (!problems.length) { replace(problemsBox); textarea.removeAttribute('aria-invalid'); return; }
    textarea.setAttribute('aria-invalid', 'true');
    const byLoc = new Map(located.map(({ p, where }) => [p, where]));
    replace(problemsBox, h('div', { class: 'problems-box', role: 'alert' },
      h('p', { class: 'problems-title' }, heading || `${plural(problems.length, 'problem')} in input.json:`),
      problemList(problems, {
        onPick: p => { const w = byLoc.get(p); selectSpan(w.start, w.end, w.line); },
        describeLoc: p => { const w = byLoc.get(p); return w ? `line ${w.line}${w.exact ? '' : ` (in ${w.found || 'the document'})`}` : null; },
      })));
    const sysProblems = problems.filter(p => /^training\.(training|validation)_data\.systems/.test(p.loc || ''));
    replace(systemsProblems, sysProblems.length && dsSelect.value
      ? h('div', { class: 'error-note', role: 'alert' }, problemList(sysProblems)) : null);
    setFieldError(sysProblems.length && dsSelect.value ? sysProblems.map(p => p.msg).join('; ') : '');
  }

  function setFieldError(msg) {
    const error = dsField.querySelector('.field-error');
    error.hidden = !msg;
    error.textContent = msg || '';
  }

  // --- datasets -------------------------------------------------------------------------------------
  function currentDataset() {
    return datasets.find(d => d.id === dsSelect.value) || null;
  }

  function fillDatasets(selectId) {
    const options = [['', datasets.length ? '— none: input.json already names dataset:<id> references —' : '— no dataset uploaded yet —'],
      ...datasets.map(d => [d.id, `${d.name} (${d.id}, ${plural(d.systems.length, 'system')})`])];
    replace(dsSelect, options.map(([v, label]) => h('option', { value: v }, label)));
    dsSelect.value = selectId && datasets.some(d => d.id === selectId) ? selectId : '';
    manual = false;
    autoMatch();
    renderSystems();
    scheduleCheck(0);
  }

  /** Choose systems from the entries of input.json; guess from folder names if none matches. */
  function autoMatch() {
    const ds = currentDataset();
    chosen = { train: new Set(), valid: new Set() };
    if (!ds) { matchNote.textContent = ''; return; }
    const training = parsed?.training || {};
    const trainEntries = systemsOf(training.training_data);
    const validEntries = systemsOf(training.validation_data);
    for (const s of ds.systems) {
      if (trainEntries.some(e => entryMatches(e, ds.id, s.path))) chosen.train.add(s.path);
      if (validEntries.some(e => entryMatches(e, ds.id, s.path))) chosen.valid.add(s.path);
    }
    if (chosen.train.size || chosen.valid.size) {
      matchNote.textContent = `Matched with the systems named in input.json: ${chosen.train.size} for training, `
        + `${chosen.valid.size} for validation. Change the ticks to override.`;
      return;
    }
    const isValid = p => /(^|[/_-])(valid|validation|val|test)([/_-]|$)/i.test(p);
    for (const s of ds.systems) (isValid(s.path) && (!parsed || parsed.training?.validation_data !== undefined) ? chosen.valid : chosen.train).add(s.path);
    matchNote.textContent = trainEntries.length
      ? 'No path of input.json matched this dataset; the systems were chosen by folder name — check the ticks.'
      : 'Systems chosen by folder name — check the ticks.';
  }

  function renderSystems() {
    const ds = currentDataset();
    if (!ds) {
      replace(systemsBox, datasets.length
        ? note('The systems of input.json are used as written: each must be a dataset:<id>[/<folder>] reference.', 'muted')
        : note('Upload an archive of DeePMD systems first (below).', 'muted'));
      renderSent();
      return;
    }
    const box = (role, path, label) => {
      const input = h('input', { type: 'checkbox', checked: chosen[role].has(path), dataset: { role, path },
        'aria-label': `use ${path} for ${label}`, onchange: e => {
          if (e.target.checked) chosen[role].add(path); else chosen[role].delete(path);
          manual = true;
          renderSent();
          scheduleCheck(0);
        } });
      return input;
    };
    replace(systemsBox, h('table', { class: 'table systems-pick' },
      h('caption', { class: 'visually-hidden' }, `Systems of ${ds.name}`),
      h('thead', {}, h('tr', {}, ['Training', 'Validation', 'System', 'Frames', 'Atoms', 'Labels'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ds.systems.map(s => h('tr', {},
        h('td', { class: 'center' }, box('train', s.path, 'training')),
        h('td', { class: 'center' }, box('valid', s.path, 'validation')),
        h('td', { class: 'mono' }, s.path),
        h('td', { class: 'num' }, s.frames),
        h('td', { class: 'num' }, s.atoms),
        h('td', {}, Object.keys(s.labels || {}).join(', ') || 'none'))))));
    renderSent();
  }

  /** The document sent: input.json with the chosen systems filled in. */
  function body() {
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return parsed;
    const ds = currentDataset();
    if (!ds) return parsed;
    const out = structuredClone(parsed);
    const order = ds.systems.map(s => s.path);
    const refs = set => order.filter(p => set.has(p)).map(p => reference(ds.id, p));
    if (!out.training || typeof out.training !== 'object') return out;
    out.training.training_data = { ...(out.training.training_data || {}), systems: refs(chosen.train) };
    if (chosen.valid.size) out.training.validation_data = { ...(out.training.validation_data || {}), systems: refs(chosen.valid) };
    else delete out.training.validation_data;
    return out;
  }

  function renderSent() {
    const b = body();
    const ds = currentDataset();
    if (!ds || !b?.training) { replace(sentBox); return; }
    const list = section => (b.training[section]?.systems || []);
    replace(sentBox, h('details', {}, h('summary', {}, 'Sent as'),
      h('pre', { class: 'code small' }, `training.training_data.systems = ${JSON.stringify(list('training_data'), null, 1)}\n`
        + (b.training.validation_data ? `training.validation_data.systems = ${JSON.stringify(list('validation_data'), null, 1)}`
          : 'training.validation_data: removed (no validation system ticked)'))));
  }

  // --- checking -----------------------------------------------------------------------------------------
  function parse() {
    const text = textarea.value;
    if (!text.trim()) { parsed = null; return { empty: true }; }
    try {
      parsed = JSON.parse(text);
      return { ok: true };
    } catch (err) {
      parsed = null;
      return { error: err, pos: syntaxErrorPosition(text, err) };
    }
  }

  function scheduleCheck(delay = CHECK_DELAY_MS) {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(check, delay);
  }

  async function check() {
    const seq = ++checkSeq;
    const r = parse();
    replace(warningsBox);
    if (r.empty) {
      checkStatus.className = 'check-status';
      checkStatus.textContent = 'Waiting for an input.json.';
      showProblems([]);
      return;
    }
    if (r.error) {
      checkStatus.className = 'check-status bad';
      checkStatus.textContent = `Not valid JSON${r.pos ? ` (line ${r.pos.line}, column ${r.pos.column})` : ''}: ${r.error.message}`;
      lastProblems = [];
      replace(problemsBox);
      const marks = new Map(r.pos ? [[r.pos.line, r.error.message]] : []);
      renderGutter(marks);
      textarea.setAttribute('aria-invalid', 'true');
      return;
    }
    if (!manual) { autoMatch(); renderSystems(); } else renderSent();
    checkStatus.className = 'check-status';
    checkStatus.textContent = 'Checking…';
    let result;
    try {
      result = await api('/v1/jobs/train/check', { method: 'POST', json: body() });
    } catch (err) {
      if (seq !== checkSeq || disposed) return;
      if (err instanceof ApiError && err.status === 422 && err.problems.length) {
        result = { valid: false, problems: err.problems, warnings: [] };  // not an object at all
      } else {
        checkStatus.className = 'check-status bad';
        checkStatus.textContent = `Could not check: ${err.detail || err.message}`;
        return;
      }
    }
    if (seq !== checkSeq || disposed) return;
    if (result.valid) {
      checkStatus.className = 'check-status good';
      checkStatus.textContent = `✓ Valid: ready to start (${plural(result.dataset_ids.length, 'dataset')}).`;
    } else {
      checkStatus.className = 'check-status bad';
      checkStatus.textContent = `${plural(result.problems.length, 'problem')} — a submission would be refused.`;
    }
    showProblems(result.problems);
    if (result.warnings?.length) {
      replace(warningsBox, h('div', { class: 'warn-note' }, h('p', {}, 'Accepted but ignored (DeePMD-kit options without effect here):'),
        h('ul', {}, result.warnings.map(w => h('li', {}, w)))));
    }
  }

  // --- submit --------------------------------------------------------------------------------------------
  async function onSubmit(e) {
    e.preventDefault();
    clearTimeout(checkTimer);
    replace(submitMsg);
    const r = parse();
    if (!r.ok) {
      await check();
      replace(submitMsg, note(r.empty ? 'Paste or load an input.json first.' : 'input.json is not valid JSON (see above).', 'error-note'));
      textarea.focus();
      return;
    }
    startBtn.disabled = true;
    try {
      const job = await api('/v1/jobs/train', { method: 'POST', json: body(), query: { name: nameInput.value.trim() } });
      navigate(`#/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) {
        checkStatus.className = 'check-status bad';
        checkStatus.textContent = 'The server refused this input.json.';
        showProblems(err.problems.length ? err.problems : [{ loc: '(document)', msg: err.detail }],
          `Not started — ${plural(err.problems.length || 1, 'problem')}:`);
        replace(submitMsg, note(`Not started: ${err.detail}`, 'error-note'));
        problemsBox.querySelector('.problem-loc')?.focus();
      } else {
        replace(submitMsg, errorNote(err, 'Not started: '));
      }
    } finally {
      startBtn.disabled = false;
    }
  }

  // --- events -----------------------------------------------------------------------------------------------
  textarea.addEventListener('input', () => {
    renderGutter();
    scheduleCheck();
  });
  textarea.addEventListener('scroll', () => { gutter.scrollTop = textarea.scrollTop; });
  loadBtn.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); fileInput.click(); } });
  fileInput.addEventListener('change', async () => {
    const f = fileInput.files[0];
    if (!f) return;
    textarea.value = await f.text();
    fileInput.value = '';
    manual = false;
    renderGutter();
    scheduleCheck(0);
  });
  exampleBtn.addEventListener('click', async () => {
    try {
      const spec = await api('/openapi.json');
      const ex = spec.paths['/v1/jobs/train'].post.requestBody.content['application/json'].examples['water dipole'].value;
      textarea.value = JSON.stringify(ex, null, 2);
      manual = false;
      renderGutter();
      scheduleCheck(0);
    } catch (err) {
      replace(submitMsg, errorNote(err));
    }
  });
  formatBtn.addEventListener('click', () => {
    const r = parse();
    if (!r.ok) return;
    textarea.value = JSON.stringify(parsed, null, 2);
    renderGutter();
    if (lastProblems.length) showProblems(lastProblems);
  });
  dsSelect.addEventListener('change', () => {
    manual = false;
    parse();
    autoMatch();
    renderSystems();
    scheduleCheck(0);
  });

  // --- load ------------------------------------------------------------------------------------------------
  renderGutter();
  checkStatus.textContent = 'Waiting for an input.json.';
  api('/v1/datasets').then(items => {
    if (disposed) return;
    datasets = items;
    fillDatasets(query.dataset || (items.length === 1 ? items[0].id : ''));
    if (!items.length) uploadDetails.open = true;
  }).catch(err => replace(systemsBox, errorNote(err)));

  return () => { disposed = true; clearTimeout(checkTimer); };
}
