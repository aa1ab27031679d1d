// The systems of a training: pick an uploaded dataset (or upload one) and tick its systems
// for training and validation. The ticks start from the paths input.json names (so the
// example input can be pasted unchanged) until the user changes them. Its own state: the
// datasets, the ticks, and whether the user has overridden them.

import { api } from '../api.js';
import { field, h, note, replace } from '../dom.js';
import { plural } from '../format.js';
import { errorNote, problemList } from './common.js';
import { uploadForm } from './datasets.js';

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

/**
 * preselect: a dataset id to choose first (else the only one). currentInput(): input.json
 * as last parsed (or null). onChange(): the document to send changed (a dataset or a
 * tick): check it.
 */
export function systemsPicker({ preselect, currentInput, onChange }) {
  const dsSelect = h('select', { id: 'train-dataset' });
  const dsField = field('Dataset', dsSelect, { hint: 'the uploaded archive whose systems this training reads', loc: 'dataset', wide: true });
  const systemsBox = h('div', { id: 'train-systems' });
  const matchNote = h('p', { class: 'muted', role: 'status' });
  const sentBox = h('div', { class: 'sent-preview' });
  const systemsProblems = h('div');
  const uploadDetails = h('details', { class: 'inline-upload' }, h('summary', {}, 'Upload a dataset archive'),
    uploadForm({ idPrefix: 'train-ds', onUploaded: ds => {
      datasets = [ds, ...datasets.filter(d => d.id !== ds.id)];
      fill(ds.id);
      uploadDetails.open = false;
    } }));
  const el = h('section', { class: 'card', 'aria-labelledby': 'data-h' },
    h('h2', { id: 'data-h' }, '2. Training and validation systems'),
    h('div', { class: 'form-row' }, dsField),
    matchNote, systemsBox, systemsProblems, sentBox, uploadDetails);

  let datasets = [];
  let chosen = { train: new Set(), valid: new Set() };
  let manual = false;
  let disposed = false;

  function currentDataset() {
    return datasets.find(d => d.id === dsSelect.value) || null;
  }

  function fill(selectId) {
    const options = [['', datasets.length ? '— none: input.json already names dataset:<id> references —' : '— no dataset uploaded yet —'],
      ...datasets.map(d => [d.id, `${d.name} (${d.id}, ${plural(d.systems.length, 'system')})`])];
    replace(dsSelect, options.map(([v, label]) => h('option', { value: v }, label)));
    dsSelect.value = selectId && datasets.some(d => d.id === selectId) ? selectId : '';
    manual = false;
    autoMatch(currentInput());
    render();
    onChange();
  }

  /** Choose systems from the entries of input.json; guess from folder names if none matches. */
  function autoMatch(parsed) {
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

  function render() {
    const ds = currentDataset();
    if (!ds) {
      replace(systemsBox, datasets.length
        ? note('The systems of input.json are used as written: each must be a dataset:<id>[/<folder>] reference.', 'muted')
        : note('Upload an archive of DeePMD systems first (below).', 'muted'));
      renderSent();
      return;
    }
    const box = (role, path, label) => h('input', { type: 'checkbox', checked: chosen[role].has(path), dataset: { role, path },
      'aria-label': `use ${path} for ${label}`, onchange: e => {
        if (e.target.checked) chosen[role].add(path); else chosen[role].delete(path);
        manual = true;
        renderSent();
        onChange();
      } });
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
  function body(parsed) {
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
    const b = body(currentInput());
    const ds = currentDataset();
    if (!ds || !b?.training) { replace(sentBox); return; }
    const list = section => (b.training[section]?.systems || []);
    replace(sentBox, h('details', {}, h('summary', {}, 'Sent as'),
      h('pre', { class: 'code small' }, `training.training_data.systems = ${JSON.stringify(list('training_data'), null, 1)}\n`
        + (b.training.validation_data ? `training.validation_data.systems = ${JSON.stringify(list('validation_data'), null, 1)}`
          : 'training.validation_data: removed (no validation system ticked)'))));
  }

  function setFieldError(msg) {
    const error = dsField.querySelector('.field-error');
    error.hidden = !msg;
    error.textContent = msg || '';
  }

  /** Problems of input.json: those about the systems are shown here too. */
  function showProblems(problems) {
    const sysProblems = problems.filter(p => /^training\.(training|validation)_data\.systems/.test(p.loc || ''));
    replace(systemsProblems, sysProblems.length && dsSelect.value
      ? h('div', { class: 'error-note', role: 'alert' }, problemList(sysProblems)) : null);
    setFieldError(sysProblems.length && dsSelect.value ? sysProblems.map(p => p.msg).join('; ') : '');
  }

  dsSelect.addEventListener('change', () => {
    manual = false;
    autoMatch(currentInput());
    render();
    onChange();
  });

  api('/v1/datasets').then(items => {
    if (disposed) return;
    datasets = items;
    fill(preselect || (items.length === 1 ? items[0].id : ''));
    if (!items.length) uploadDetails.open = true;
  }).catch(err => replace(systemsBox, errorNote(err)));

  return {
    el, body, showProblems,
    /** The text of input.json changed: follow it unless the user has set the ticks. */
    follow() { if (!manual) { autoMatch(currentInput()); render(); } else renderSent(); },
    /** A new document: automatic ticks again. */
    reset() { manual = false; },
    destroy() { disposed = true; },
  };
}
