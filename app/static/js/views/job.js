// One job: status, progress with ETA, live learning curve, logs and errors, cancel,
// downloads; the spectrum for spectrum jobs.

import { api, describe, download } from '../api.js';
import { badge, h, note, replace } from '../dom.js';
import { bytes, duration, elapsed, fullTime, num, shortTime } from '../format.js';
import { Plot } from '../plot.js';
import { poll } from '../poll.js';
import { errorNote, liveIndicator } from './common.js';
import { ACTIVE, cancelJob, jobProgress, modelLink } from './jobs.js';
import { kindTitle, spectrumPanel } from './spectrum-panel.js';

const LCURVE_COLORS = { rmse: '#1f6fd1', rmse_lc: '#d9650f', rmse_gl: '#23914a' };

/** lcurve {columns, rows} -> plot series: one per rmse_* column; *_trn dashed. */
export function lcurveSeries(lcurve) {
  const x = lcurve.rows.map(r => r.step);
  return lcurve.columns.filter(c => c.startsWith('rmse')).map((c, i) => {
    const base = c.replace(/_(val|trn)$/, '');
    return {
      key: c, label: c, x,
      y: lcurve.rows.map(r => (r[c] === null || r[c] === undefined ? null : r[c])),
      color: LCURVE_COLORS[base] || ['#c2334d', '#7b4fc9', '#8c6d1f'][i % 3],
      dash: c.endsWith('_trn') ? [6, 4] : null,
    };
  });
}

const FILE_NOTES = {
  'model.pt': 'final model (checkpoint)', 'model.ckpt.pt': 'latest checkpoint', 'lcurve.out': 'learning curve',
  'input.json': 'input as submitted', 'input.resolved.json': 'input with dataset paths resolved',
  'job.log': 'log', 'predictions.json': 'predictions', 'predictions.npz': 'predictions (NumPy)',
  'structures.json': 'structures sent', 'spectrum.json': 'spectrum (JSON)', 'spectrum.csv': 'spectrum (CSV)',
};

function fileRank(name) {
  const order = ['model.pt', 'model.ckpt.pt', 'lcurve.out', 'spectrum.csv', 'spectrum.json', 'predictions.json', 'predictions.npz',
    'input.json', 'input.resolved.json', 'job.log'];
  const i = order.indexOf(name);
  return i < 0 ? order.length : i;
}

export function jobView(main, { params }) {
  const id = params.id;
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  const live = liveIndicator();
  const title = h('h1', { id: 'job-title' }, id);
  const head = h('div', { class: 'page-head' }, h('a', { href: '#/jobs', class: 'back' }, '← Jobs'), title, live.el);
  const message = h('div', { class: 'view-message' });
  const summary = h('section', { class: 'card job-summary', 'aria-labelledby': 'job-title' });
  const errorBox = h('div', { id: 'job-error' });
  const warningsBox = h('div');
  const lcurveSection = h('section', { class: 'card', hidden: true, 'aria-labelledby': 'lcurve-h' });
  const spectrumSection = h('section', { class: 'card', hidden: true, 'aria-labelledby': 'spectrum-h' });
  const logsPre = h('pre', { class: 'logs', id: 'job-logs', tabindex: 0, 'aria-label': 'Job log' });
  const logsSection = h('section', { class: 'card', 'aria-labelledby': 'logs-h' },
    h('h2', { id: 'logs-h' }, 'Log'), logsPre);
  const filesBody = h('div', { id: 'job-files' });
  const filesSection = h('section', { class: 'card', 'aria-labelledby': 'files-h' },
    h('h2', { id: 'files-h' }, 'Downloads'), filesBody);
  const inputsSection = h('section', { class: 'card' });
  replace(main, head, message, summary, errorBox, warningsBox, lcurveSection, spectrumSection,
    h('div', { class: 'two-col' }, logsSection, filesSection), inputsSection);

  let job = null;
  let plot = null;
  // the learning curve held here; each fetch asks only for the rows after its last step
  let lcurve = { columns: [], rows: [] };
  let lcurveAttempt = null;
  let lcurveAtStep;  // job.progress.step at the last fetch (undefined: never fetched)
  const latestRow = h('p', { class: 'latest-row mono small', id: 'lcurve-latest' });
  let lcurveButton = null;
  let lcurveFile = null;  // {file, download} as the lcurve answer gives them; null until the file exists
  let spectrum = null;
  let lastFiles = 0;
  let logsAt = 0;

  function renderSummary() {
    const p = job.progress || {};
    title.textContent = job.name || job.id;
    const pct = job.status === 'running' && p.total ? ` ${Math.floor((100 * (p.step || 0)) / p.total)} %` : '';
    document.title = `${job.status}${pct} · ${job.name || job.id} · dptensor`;
    const canCancel = ACTIVE.has(job.status) && !job.cancel_requested;
    const rate = Number.isFinite(p.rate) ? `${num(p.rate, 3)} ${p.unit || 'steps'}/s` : null;
    const facts = [
      ['Kind', job.kind],
      ['Rate', rate || '—'],
      ['ETA', job.status === 'running' && Number.isFinite(p.eta_s) ? duration(p.eta_s) : '—'],
      ['Model', modelLink(job)],
      ['Owner', job.owner],
      ['Created', h('time', { datetime: job.created_at, title: fullTime(job.created_at) }, shortTime(job.created_at))],
      ['Started', job.started_at ? h('time', { datetime: job.started_at, title: fullTime(job.started_at) }, shortTime(job.started_at)) : '—'],
      ['Finished', job.finished_at ? h('time', { datetime: job.finished_at, title: fullTime(job.finished_at) }, shortTime(job.finished_at)) : '—'],
      ['Run time', job.started_at ? duration(elapsed(job.started_at, job.finished_at)) : '—'],
      ['Attempt', `${job.attempt} of ${job.max_attempts}`],
      ['Queue', job.queue],
      ['Id', h('code', {}, job.id)],
    ];
    summary.dataset.status = job.status;
    replace(summary,
      h('div', { class: 'summary-head' },
        h('div', { class: 'summary-status', id: 'job-status', dataset: { status: job.status } }, badge(job.status),
          job.cancel_requested && ACTIVE.has(job.status) ? h('span', { class: 'muted' }, ' cancel requested…') : null),
        h('div', { class: 'summary-progress' }, jobProgress(job, { eta: true })),
        canCancel ? h('button', { type: 'button', class: 'btn btn-danger', id: 'cancel-job', onclick: onCancel }, 'Cancel job') : null),
      h('dl', { class: 'facts' }, facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))));
  }

  async function onCancel(e) {
    e.currentTarget.disabled = true;
    e.currentTarget.textContent = 'Cancelling…';
    try {
      await cancelJob(job, () => p.now());
    } catch (err) {
      replace(message, errorNote(err, 'Cancel failed: '));
    }
  }

  function renderError() {
    if (!job.error) { replace(errorBox); return; }
    const e = job.error;
    replace(errorBox, h('section', { class: 'card card-error', role: 'alert', 'aria-labelledby': 'error-h' },
      h('h2', { id: 'error-h' }, `Failed: ${e.type}`),
      h('pre', { class: 'error-message' }, e.message),
      e.traceback ? h('details', {}, h('summary', {}, 'Worker traceback'), h('pre', { class: 'logs' }, e.traceback)) : null));
  }

  function renderWarnings() {
    replace(warningsBox, job.warnings?.length
      ? h('section', { class: 'card card-warn', 'aria-label': 'Warnings' }, h('h2', {}, 'Warnings'),
        h('ul', {}, job.warnings.map(w => h('li', {}, w))))
      : null);
  }

  function renderInputs() {
    if (inputsSection.childElementCount) return;
    replace(inputsSection, h('details', {}, h('summary', {}, job.kind === 'train' ? 'input.json as submitted' : 'Request'),
      h('pre', { class: 'code' }, JSON.stringify(job.inputs, null, 2))));
  }

  async function refreshLcurve() {
    if (!plot) {
      lcurveSection.hidden = false;
      plot = new Plot({ label: 'Learning curve', xLabel: 'step', yLabel: 'RMSE (log scale)', yLog: true, height: 340,
        formatX: v => String(v), emptyText: 'No learning-curve rows yet (one every disp_freq steps).' });
      // the file as the API names it (training.disp_file; a committee's member 0): shown once it exists
      lcurveButton = h('button', { type: 'button', class: 'btn btn-small', id: 'lcurve-download', hidden: true,
        onclick: () => download(lcurveFile.download, `${id}-${lcurveFile.file}`).catch(err => replace(message, errorNote(err))) });
      plot.addTool(lcurveButton);
      plot.el.id = 'lcurve-plot';
      replace(lcurveSection, h('h2', { id: 'lcurve-h' }, 'Learning curve'), plot.el, latestRow);
    }
    if (lcurveAttempt !== job.attempt) {
      // a resumed attempt rewrites the rows after its checkpoint: start over
      lcurve = { columns: [], rows: [] };
      lcurveAttempt = job.attempt;
    }
    const have = lcurve.rows[lcurve.rows.length - 1];
    const fresh = await api(`${path}/lcurve`, { query: { after: have ? have.step : undefined } });
    lcurveFile = fresh.download ? { file: fresh.file, download: fresh.download } : null;
    lcurveButton.hidden = !lcurveFile;
    lcurveButton.textContent = lcurveFile ? lcurveFile.file : '';
    lcurveButton.setAttribute('aria-label', lcurveFile ? `Download ${lcurveFile.file}` : 'Download the learning curve');
    if (have && !fresh.rows.length) return;
    lcurve = { columns: fresh.columns.length ? fresh.columns : lcurve.columns, rows: lcurve.rows.concat(fresh.rows) };
    plot.setData(lcurveSeries(lcurve));
    const last = lcurve.rows[lcurve.rows.length - 1];
    replace(latestRow, last ? [h('span', { class: 'muted' }, `latest (step ${last.step}): `),
      ...lcurve.columns.filter(c => c !== 'step').map(c => h('span', { class: 'latest-item' }, `${c} `, h('strong', {}, last[c] === null ? '—' : num(last[c]))))] : null);
  }

  async function refreshLogs() {
    const text = await api(`${path}/logs`, { query: { tail: 400 } });
    const atBottom = logsPre.scrollHeight - logsPre.scrollTop - logsPre.clientHeight < 30;
    logsPre.textContent = text.trim() ? text : (ACTIVE.has(job.status) ? 'No log lines yet.' : 'The log is empty.');
    if (atBottom) logsPre.scrollTop = logsPre.scrollHeight;
  }

  async function refreshFiles() {
    const files = await api(`${path}/files`);
    files.sort((a, b) => fileRank(a.name) - fileRank(b.name) || a.name.localeCompare(b.name));
    const rows = files.map(f => ({ name: f.name, size: f.size_bytes, url: `${path}/files/${encodeURIComponent(f.name)}`,
      save: `${id}-${f.name}`, what: FILE_NOTES[f.name] || (f.name === lcurveFile?.file ? 'learning curve' : '')
        || (/^model\.ckpt-\d+\.pt$/.test(f.name) ? 'checkpoint' : '') }));
    if (job.kind === 'spectrum' && job.status === 'succeeded' && !files.some(f => f.name === 'spectrum.csv')) {
      rows.unshift({ name: 'spectrum.csv', size: null, url: `${path}/spectrum.csv`, save: `${id}-spectrum.csv`, what: 'spectrum' });
    }
    if (job.kind === 'train' && job.model_id && !job.model_deleted) {
      rows.unshift({ name: `${job.model_id}.pt`, size: null, url: `/v1/models/${encodeURIComponent(job.model_id)}/download`,
        save: `${job.model_id}.pt`, what: 'registered model' });
    }
    if (!rows.length) { replace(filesBody, note('No files yet.', 'empty')); return; }
    replace(filesBody, h('ul', { class: 'files' }, rows.map(r => h('li', { dataset: { name: r.name } },
      h('button', { type: 'button', class: 'btn btn-small', dataset: { file: r.name },
        'aria-label': `Download ${r.name}`, onclick: ev => {
          const btn = ev.currentTarget;
          btn.disabled = true;
          download(r.url, r.save).catch(err => replace(message, errorNote(err, `${r.name}: `))).finally(() => { btn.disabled = false; });
        } }, 'Download'),
      h('span', { class: 'file-name' }, h('span', { class: 'mono' }, r.name), r.what ? h('span', { class: 'sub' }, r.what) : null),
      h('span', { class: 'muted small file-size' }, r.size !== null ? bytes(r.size) : '')))));
  }

  function showSpectrum() {
    if (spectrum || job.kind !== 'spectrum' || job.status !== 'succeeded') return;
    spectrumSection.hidden = false;
    const body = h('div');
    const what = `${kindTitle(job.inputs?.kind)} spectrum`.trim();
    replace(spectrumSection, h('h2', { id: 'spectrum-h' }, what.charAt(0).toUpperCase() + what.slice(1)), body);
    spectrum = spectrumPanel(body, id, { title: `${what} · ${job.name || id}` });
  }

  const p = poll(async () => {
    let fresh;
    try {
      fresh = await api(path);
    } catch (err) {
      live.stale();
      replace(message, errorNote(err));
      return err.status !== 404;
    }
    live.ok();
    replace(message);
    const changed = !job || job.status !== fresh.status;
    job = fresh;
    renderSummary();
    renderError();
    renderWarnings();
    renderInputs();
    const tasks = [];
    // new rows can only have come with new progress (or a change of status)
    const step = job.progress?.step ?? null;
    if (job.kind === 'train' && (!plot || changed || step !== lcurveAtStep)) {
      lcurveAtStep = step;
      tasks.push(refreshLcurve().catch(err => { lcurveAtStep = undefined; throw err; }));
    }
    const now = Date.now();
    if (changed || (ACTIVE.has(job.status) && now - logsAt > 1800)) { logsAt = now; tasks.push(refreshLogs()); }
    if (changed || (ACTIVE.has(job.status) && now - lastFiles > 5000)) { lastFiles = now; tasks.push(refreshFiles()); }
    const results = await Promise.allSettled(tasks);
    const failed = results.find(r => r.status === 'rejected');
    if (failed) replace(message, note(describe(failed.reason), 'error-note'));
    showSpectrum();
    if (ACTIVE.has(job.status)) return true;
    live.done();  // a finished job does not change any more
    return false;
  }, 1000);

  return () => { p.stop(); plot?.destroy(); spectrum?.destroy(); };
}
