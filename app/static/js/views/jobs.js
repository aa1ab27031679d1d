// Jobs list: every visible job, polled about once a second.

import { api, ApiError } from '../api.js';
import { badge, h, note, progressBar, replace, select } from '../dom.js';
import { duration, elapsed, fullTime, shortTime } from '../format.js';
import { poll } from '../poll.js';
import { errorNote, liveIndicator, pageHeader, syncRows } from './common.js';

export const ACTIVE = new Set(['queued', 'running']);
const PAGE = 50;

export function progressText(job) {
  const p = job.progress || {};
  if (p.total) return `${p.step ?? 0} / ${p.total} ${p.unit || 'steps'}`;
  if (p.step !== null && p.step !== undefined) return `${p.step} ${p.unit || 'steps'}`;
  return '';
}

export function jobProgress(job, { eta = false } = {}) {
  const p = job.progress || {};
  const done = job.status === 'succeeded';
  const value = done && p.total ? p.total : p.step;
  const label = `progress of ${job.name || job.id}`;
  const bar = ACTIVE.has(job.status) || p.total ? progressBar(value ?? 0, p.total ?? null, label) : null;
  const text = [progressText(job)];
  if (eta && job.status === 'running' && Number.isFinite(p.eta_s)) text.push(`ETA ${duration(p.eta_s)}`);
  return h('div', { class: 'progress-cell' }, bar, h('span', { class: 'progress-text' }, text.filter(Boolean).join(' · ')));
}

export function modelLink(job) {
  const id = job.model_id || job.inputs?.model_id;
  if (!id) return job.kind === 'train' && ACTIVE.has(job.status) ? h('span', { class: 'muted' }, 'training…') : '—';
  if (job.model_deleted) return h('span', { class: 'mono muted', title: 'this model has been deleted' }, `${id} (deleted)`);
  return h('a', { href: `#/models?id=${encodeURIComponent(id)}`, class: 'mono' }, id);
}

export async function cancelJob(job, onDone) {
  try {
    await api(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`, { method: 'POST' });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 409)) throw err;  // already finished: fine
  }
  onDone?.();
}

export function jobsView(main) {
  const kind = select([['', 'all kinds'], 'train', 'predict', 'spectrum'], { id: 'filter-kind' });
  const status = select([['', 'any status'], 'queued', 'running', 'succeeded', 'failed', 'cancelled'],
    { id: 'filter-status' });
  const live = liveIndicator();
  const filters = h('div', { class: 'filters' },
    h('label', { for: 'filter-kind' }, 'Kind'), kind,
    h('label', { for: 'filter-status' }, 'Status'), status, live.el);
  const tbody = h('tbody');
  const table = h('table', { class: 'table jobs-table', id: 'jobs-table' },
    h('caption', { class: 'visually-hidden' }, 'Jobs, newest first; updates automatically'),
    h('thead', {}, h('tr', {}, ['Job', 'Kind', 'Model', 'Status', 'Progress', 'Started', 'Finished', 'Owner', '']
      .map(t => h('th', { scope: 'col' }, t)))),
    tbody);
  const footer = h('div', { class: 'table-foot' });
  const message = h('div', { class: 'view-message' });
  let limit = PAGE;

  replace(main,
    pageHeader('Jobs', h('a', { class: 'btn btn-primary', href: '#/train' }, 'New training'),
      h('a', { class: 'btn', href: '#/spectra' }, 'New spectrum')),
    filters, message, h('div', { class: 'table-wrap' }, table), footer);

  const p = poll(async () => {
    let list;
    try {
      list = await api('/v1/jobs', { query: { kind: kind.value, status: status.value, limit } });
    } catch (err) {
      live.stale();
      replace(message, errorNote(err));
      return;
    }
    live.ok();
    replace(message);
    render(list);
  }, 1200);

  function render(list) {
    syncRows(tbody, list.items, j => j.id, j => [
      [`${j.id}|${j.name}`, () => [h('a', { href: `#/jobs/${encodeURIComponent(j.id)}`, class: 'job-link', 'data-focus': 'open' },
        j.name || j.id), j.name ? h('div', { class: 'sub mono' }, j.id) : null]],
      [j.kind, () => h('span', { class: `kind kind-${j.kind}` }, j.kind)],
      [`${j.model_id}|${j.status}|${j.model_deleted}`, () => modelLink(j)],
      [`${j.status}|${j.cancel_requested}|${j.attempt}`, () => [badge(j.status),
        j.cancel_requested && ACTIVE.has(j.status) ? h('div', { class: 'sub' }, 'cancelling…') : null,
        j.attempt > 1 ? h('div', { class: 'sub' }, `attempt ${j.attempt}/${j.max_attempts}`) : null]],
      [`${j.status}|${j.progress.step}|${j.progress.total}|${j.progress.eta_s}`, () => jobProgress(j, { eta: true })],
      [j.started_at, () => h('time', { datetime: j.started_at || '', title: fullTime(j.started_at) }, shortTime(j.started_at))],
      [`${j.finished_at}|${j.status === 'running' ? Math.floor(elapsed(j.started_at) / 5) : ''}`, () => (j.finished_at
        ? h('time', { datetime: j.finished_at, title: `after ${duration(elapsed(j.started_at || j.created_at, j.finished_at))}` },
          shortTime(j.finished_at))
        : h('span', { class: 'muted' }, j.status === 'running' ? `running ${duration(elapsed(j.started_at))}` : '—'))],
      [j.owner, () => j.owner],
      [`${ACTIVE.has(j.status)}|${j.cancel_requested}`, () => (ACTIVE.has(j.status) && !j.cancel_requested
        ? h('button', { type: 'button', class: 'btn btn-small btn-danger', 'data-focus': 'cancel',
          'aria-label': `Cancel ${j.name || j.id}`, onclick: e => {
            e.currentTarget.disabled = true;
            cancelJob(j, () => p.now()).catch(err => replace(message, errorNote(err)));
          } }, 'Cancel')
        : null)],
    ], j => ({ status: j.status, kind: j.kind }));
    if (!list.items.length) {
      replace(footer, note(kind.value || status.value ? 'No job matches these filters.'
        : 'No jobs yet. Upload a dataset, then start a training from “New training”.', 'empty'));
    } else {
      replace(footer, h('span', { class: 'muted' }, `${list.items.length} of ${list.total} jobs`),
        list.total > list.items.length
          ? h('button', { type: 'button', class: 'btn btn-small', onclick: () => { limit += PAGE; p.now(); } }, 'Show more')
          : null);
    }
  }

  kind.addEventListener('change', () => p.now());
  status.addEventListener('change', () => p.now());
  return () => p.stop();
}
