// Models: trained and uploaded, with their metrics; download; start a spectrum.

import { api, describe, download, upload } from '../api.js';
import { bytes, fullTime, num, shortTime } from '../format.js';
import { field, h, note, replace } from '../dom.js';
import { errorNote, pageHeader, problemList } from './common.js';

const METRIC_LABELS = {
  val_rmse: 'validation RMSE', val_rmse_atomic: 'validation RMSE (atomic)', val_rmse_global: 'validation RMSE (global)',
  val_rmse_global_per_atom: 'validation RMSE (global, per atom)', steps: 'steps',
};

export function metricsList(metrics) {
  const entries = Object.entries(metrics || {});
  if (!entries.length) return h('span', { class: 'muted' }, 'none');
  return h('dl', { class: 'metrics' }, entries.flatMap(([k, v]) => [
    h('dt', { title: k }, METRIC_LABELS[k] || k), h('dd', { class: 'mono' }, num(v))]));
}

function uploadModelForm(onDone) {
  const file = h('input', { type: 'file', id: 'model-file', required: true, accept: '.pt,.pth' });
  const name = h('input', { type: 'text', id: 'model-name', maxlength: 300, placeholder: 'optional' });
  const submit = h('button', { type: 'submit', class: 'btn' }, 'Upload model');
  const result = h('div', { 'aria-live': 'polite' });
  return h('form', { class: 'form', onsubmit: async e => {
    e.preventDefault();
    if (!file.files.length) return;
    const data = new FormData();
    data.append('file', file.files[0]);
    if (name.value.trim()) data.append('name', name.value.trim());
    submit.disabled = true;
    replace(result, h('span', { class: 'muted' }, 'uploading and checking…'));
    try {
      const m = await upload('/v1/models', data);
      replace(result, h('p', { class: 'success-note' }, `Registered ${m.name} (${m.kind}) as `, h('code', {}, m.id)));
      e.target.reset();
      onDone();
    } catch (err) {
      replace(result, h('div', { class: 'error-note', role: 'alert' }, describe(err)),
        err.problems?.length ? problemList(err.problems) : null);
    } finally { submit.disabled = false; }
  } },
  h('div', { class: 'form-row' },
    field('Checkpoint', file, { hint: 'a dptensor checkpoint or a DeePMD-kit PyTorch (slim) checkpoint' }),
    field('Name', name)),
  h('div', { class: 'form-actions' }, submit), result);
}

export function modelsView(main, { query }) {
  const message = h('div');
  const tbody = h('tbody');
  const table = h('table', { class: 'table models-table', id: 'models-table' },
    h('caption', { class: 'visually-hidden' }, 'Models, newest first'),
    h('thead', {}, h('tr', {}, ['Model', 'Kind', 'Elements', 'Metrics', 'Source', 'Size', 'Created', '']
      .map(t => h('th', { scope: 'col' }, t)))), tbody);
  const empty = h('div');
  replace(main, pageHeader('Models'), message, h('div', { class: 'table-wrap' }, table), empty,
    h('details', { class: 'card' }, h('summary', {}, 'Upload a checkpoint'), uploadModelForm(() => load())));

  async function load() {
    let models;
    try { models = await api('/v1/models'); } catch (err) { replace(message, errorNote(err)); return; }
    replace(message);
    replace(empty, models.length ? null : note('No models yet: a training registers its model when it succeeds.', 'empty'));
    replace(tbody, models.map(m => h('tr', { dataset: { id: m.id }, class: query.id === m.id ? 'highlight' : null },
      h('td', {}, h('strong', {}, m.name), h('div', { class: 'sub mono' }, m.id)),
      h('td', {}, h('span', { class: `kind kind-${m.kind}` }, m.kind),
        m.committee_size > 1 ? h('div', { class: 'sub committee', title: 'predictions report the members\' mean, '
          + 'their std per component and the per-frame deviations; spectra carry a ± std band' },
        `committee of ${m.committee_size}`) : null),
      h('td', {}, m.type_map.join(' '), h('div', { class: 'sub' }, `sel_type ${JSON.stringify(m.sel_type)}${m.info?.rcut ? ` · rcut ${m.info.rcut} Å` : ''}`)),
      h('td', {}, m.committee_size > 1 ? h('div', { class: 'sub' }, 'mean over members') : null, metricsList(m.metrics)),
      h('td', {}, m.source === 'trained' && m.source_job_id
        ? ['trained by ', h('a', { href: `#/jobs/${encodeURIComponent(m.source_job_id)}`, class: 'mono' }, m.source_job_id)]
        : `uploaded${m.info?.format ? ` (${m.info.format})` : ''}`),
      h('td', { class: 'num' }, bytes(m.size_bytes)),
      h('td', {}, h('time', { datetime: m.created_at, title: fullTime(m.created_at) }, shortTime(m.created_at))),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Download ${m.name}`, onclick: () =>
          download(`/v1/models/${encodeURIComponent(m.id)}/download`, `${m.id}.pt`).catch(err => replace(message, errorNote(err))) },
        'Download'),
        h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Export ${m.name} for DeePMD-kit`,
          title: 'DeePMD-kit serialized model (.dp): dp convert-backend model.dp model.pth', onclick: () =>
          download(`/v1/models/${encodeURIComponent(m.id)}/export?format=dp`, `${m.id}.dp`).catch(err => replace(message, errorNote(err))) },
        'DeePMD-kit .dp'),
        h('a', { class: 'btn btn-small', href: `#/spectra?model=${encodeURIComponent(m.id)}` },
          m.kind === 'dipole' ? 'IR spectrum…' : 'Raman spectrum…')))));
    tbody.querySelector('tr.highlight')?.scrollIntoView({ block: 'center' });
  }
  load();
  return null;
}
