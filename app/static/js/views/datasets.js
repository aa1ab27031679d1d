// Datasets: upload an archive of DeePMD systems, see the validation summary per system.

import { api, upload } from '../api.js';
import { bytes, fullTime, plural, shortTime } from '../format.js';
import { field, h, note, progressBar, replace } from '../dom.js';
import { errorNote, pageHeader, problemList } from './common.js';

function labelText(labels) {
  const out = [];
  for (const [kind, info] of Object.entries(labels || {})) {
    const parts = [];
    if (info.global) parts.push('global');
    if (info.atomic) parts.push(`atomic (${info.atomic.layout}${info.atomic.layout === 'nsel' ? `, ${info.atomic.nsel}` : ''})`);
    if (parts.length) out.push(`${kind}: ${parts.join(' + ')}`);
  }
  return out.length ? out.join('; ') : 'no labels';
}

/** The validation summary of a dataset: one row per system. */
export function systemsTable(ds, { caption } = {}) {
  return h('table', { class: 'table systems-table', dataset: { dataset: ds.id } },
    h('caption', {}, caption || `${plural(ds.systems.length, 'system')} in ${ds.name}`),
    h('thead', {}, h('tr', {}, ['System', 'Frames', 'Atoms', 'Elements', 'PBC', 'Sets', 'Labels', 'Notes']
      .map(t => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, ds.systems.map(s => h('tr', { dataset: { path: s.path } },
      h('td', { class: 'mono' }, s.path),
      h('td', { class: 'num' }, s.frames),
      h('td', { class: 'num' }, s.atoms),
      h('td', {}, Object.entries(s.type_counts || {}).map(([el, n]) => `${el}${n}`).join(' ') || '—',
        s.type_map ? h('div', { class: 'sub' }, `type_map ${s.type_map.join(' ')}`) : null),
      h('td', {}, s.pbc ? 'yes' : 'no'),
      h('td', { class: 'num' }, s.sets),
      h('td', {}, labelText(s.labels)),
      h('td', {}, s.warnings?.length ? h('ul', { class: 'warnings' }, s.warnings.map(w => h('li', {}, w))) : h('span', { class: 'ok' }, 'ok'))))));
}

/**
 * The upload form (also used on the training page). onUploaded(dataset) is called with
 * the api's answer; the summary is shown below the form.
 */
export function uploadForm({ onUploaded, idPrefix = 'ds' } = {}) {
  const file = h('input', { type: 'file', name: 'file', id: `${idPrefix}-file`, required: true,
    accept: '.tar.gz,.tgz,.tar,.zip,.hdf5,.h5,application/gzip,application/x-tar,application/zip,application/x-hdf5' });
  const name = h('input', { type: 'text', name: 'name', id: `${idPrefix}-name`, maxlength: 300, placeholder: 'optional' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Upload and check');
  const progress = h('div', { class: 'upload-progress' });
  const result = h('div', { class: 'upload-result', 'aria-live': 'polite' });
  const fileField = field('Archive', file, { hint: '.tar.gz, .tgz, .tar or .zip with one or more DeePMD systems (type.raw, set.*/), or one .hdf5 / .h5 file of them', loc: 'file' });
  const form = h('form', { class: 'form upload-form', id: `${idPrefix}-upload-form`, onsubmit: onSubmit },
    h('div', { class: 'form-row' }, fileField, field('Name', name)),
    h('div', { class: 'form-actions' }, submit, progress),
    result);

  async function onSubmit(e) {
    e.preventDefault();
    if (!file.files.length) { replace(result, note('Choose an archive first.', 'error-note')); file.focus(); return; }
    const data = new FormData();
    data.append('file', file.files[0]);
    if (name.value.trim()) data.append('name', name.value.trim());
    submit.disabled = true;
    replace(result);
    replace(progress, progressBar(0, 1, 'upload progress'), h('span', { class: 'muted' }, 'uploading…'));
    try {
      const ds = await upload('/v1/datasets', data, { onProgress: (loaded, total) => {
        if (total) {
          replace(progress, progressBar(loaded, total, 'upload progress'),
            h('span', { class: 'muted' }, loaded < total ? `uploading ${bytes(loaded)} of ${bytes(total)}` : 'checking the systems…'));
        }
      } });
      replace(progress);
      replace(result, h('div', { class: 'success-note', role: 'status' },
        `Uploaded “${ds.name}” as `, h('code', {}, ds.reference), ` — ${plural(ds.systems.length, 'system')}, all valid.`),
      systemsTable(ds, { caption: 'Validation summary' }));
      form.reset();
      onUploaded?.(ds);
    } catch (err) {
      replace(progress);
      replace(result, h('div', { class: 'error-note', role: 'alert' }, 'The archive was rejected: ', err.detail || String(err)),
        err.problems?.length ? problemList(err.problems.filter(p => p.loc)) : null);
    } finally {
      submit.disabled = false;
    }
  }
  return form;
}

export function datasetsView(main) {
  const list = h('div', { id: 'datasets-list' });
  const message = h('div');
  replace(main,
    pageHeader('Datasets'),
    h('section', { class: 'card', 'aria-labelledby': 'upload-h' },
      h('h2', { id: 'upload-h' }, 'Upload a dataset'),
      h('p', { class: 'muted' }, 'The archive is checked before anything is stored: every system must have type.raw, ',
        'coordinates, boxes (or nopbc) and dipole / polarizability labels. Refer to it in input.json as ',
        h('code', {}, 'dataset:<id>'), ' or ', h('code', {}, 'dataset:<id>/<folder>'), ' — or pick it on the training page.'),
      uploadForm({ onUploaded: () => load() })),
    message,
    h('h2', {}, 'Your datasets'),
    list);

  async function load() {
    try {
      const items = await api('/v1/datasets');
      replace(message);
      if (!items.length) { replace(list, note('No datasets yet.', 'empty')); return; }
      replace(list, items.map(ds => h('details', { class: 'card dataset', dataset: { id: ds.id } },
        h('summary', {}, h('strong', {}, ds.name), ' ', h('code', {}, ds.reference), ' ',
          h('span', { class: 'muted' }, `${plural(ds.systems.length, 'system')} · ${ds.systems.reduce((a, s) => a + s.frames, 0)} frames · `
            + `${bytes(ds.size_bytes)} · ${ds.n_files} files · `),
          h('time', { datetime: ds.created_at, title: fullTime(ds.created_at), class: 'muted' }, shortTime(ds.created_at))),
        h('p', { class: 'dataset-actions' }, h('a', { class: 'btn btn-small', href: `#/train?dataset=${encodeURIComponent(ds.id)}` },
          'Train on this dataset…')),
        systemsTable(ds))));
    } catch (err) {
      replace(message, errorNote(err));
    }
  }
  load();
  return null;
}
