// The recent spectrum jobs (a table that polls /v1/jobs?kind=spectrum): its own state.

import { api } from '../api.js';
import { badge, h, note, replace } from '../dom.js';
import { shortTime } from '../format.js';
import { poll } from '../poll.js';
import { errorNote, syncRows } from './common.js';
import { jobProgress } from './jobs.js';
import { kindTitle } from './spectrum-panel.js';

/** {el, destroy}: the section with the table, refreshed every 2 s while shown. */
export function recentSpectrumJobs() {
  const jobsBody = h('tbody');
  const jobsTable = h('table', { class: 'table', id: 'spectrum-jobs' },
    h('caption', { class: 'visually-hidden' }, 'Recent spectrum jobs'),
    h('thead', {}, h('tr', {}, ['Job', 'Spectrum', 'Model', 'Status', 'Progress', 'Created'].map(t => h('th', { scope: 'col' }, t)))),
    jobsBody);
  const jobsNote = h('div');
  const el = h('section', { class: 'card', 'aria-labelledby': 'spj-h' }, h('h2', { id: 'spj-h' }, 'Recent spectrum jobs'),
    h('div', { class: 'table-wrap' }, jobsTable), jobsNote);
  const p = poll(async () => {
    let list;
    try { list = await api('/v1/jobs', { query: { kind: 'spectrum', limit: 20 } }); } catch (err) { replace(jobsNote, errorNote(err)); return; }
    replace(jobsNote, list.items.length ? null : note('No spectrum jobs yet.', 'empty'));
    syncRows(jobsBody, list.items, j => j.id, j => [
      [`${j.id}|${j.name}`, () => h('a', { href: `#/jobs/${encodeURIComponent(j.id)}`, 'data-focus': 'open' }, j.name || j.id)],
      [j.inputs?.kind, () => kindTitle(j.inputs?.kind) || '—'],
      [j.model_id, () => h('span', { class: 'mono' }, j.model_id || j.inputs?.model_id || '—')],
      [j.status, () => badge(j.status)],
      [`${j.status}|${j.progress.step}|${j.progress.total}`, () => jobProgress(j, { eta: true })],
      [j.created_at, () => shortTime(j.created_at)],
    ]);
  }, 2000);

  return { el, destroy: () => p.stop() };
}
