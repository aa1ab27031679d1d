// The spectrum of a finished spectrum job: interactive plot (zoom, hover values, series
// toggles iso / aniso / VV / VH or IR), its units on the axis, the band table, an overlaid
// reference spectrum (spectrum-overlay.js), CSV and PNG downloads, the metadata.

import { api, describe, download, saveBlob } from '../api.js';
import { h, replace } from '../dom.js';
import { num } from '../format.js';
import { Plot } from '../plot.js';
import { bandTable, staticDielectric } from './spectrum-bands.js';
import { referenceOverlay } from './spectrum-overlay.js';

const LABELS = {
  ir: 'IR', iso: 'isotropic', aniso: 'anisotropic', vv: 'VV (polarised)', vh: 'VH (depolarised)',
  total: 'total', unpolarized: 'unpolarised', eps_imag: "ε'' (imaginary)", eps_real: "ε' (real)", vdos: 'VDOS (total)',
};
const COLORS = { ir: '#c2334d', iso: '#1f6fd1', aniso: '#d9650f', vv: '#23914a', vh: '#7b4fc9', eps_imag: '#c2334d',
  eps_real: '#1f6fd1', vdos: '#23914a' };
const ORDER = ['ir', 'iso', 'aniso', 'vv', 'vh', 'eps_imag', 'eps_real', 'vdos'];
// absolute IR units (model/spectra_units.py) → what the axis says
const QUANTITY = { absorption: 'absorption n(ω)α(ω)', molar: 'molar absorption ε(ν̃) per molecule', relative: 'IR intensity' };

/** "km mol^-1 (cm^-1)^-1" → "km mol⁻¹ (cm⁻¹)⁻¹" */
export function prettyUnit(text) {
  return String(text).replace(/\^-1/g, '⁻¹').replace(/\^-2/g, '⁻²').replace(/\^2/g, '²').replace(/\^3/g, '³');
}

/**
 * The y-axis title from metadata.units: "arb.: Å⁶·fs, FT of …" -> "intensity (arb. units: Å⁶·fs)",
 * "cm^-1: n(ω)α(ω) = …" -> "intensity (cm⁻¹)"; an object names its "intensity" entry.
 */
export function intensityLabel(metadata) {
  let u = metadata?.units;
  if (metadata?.units_kind && typeof u === 'string') return `${QUANTITY[metadata.units_kind] || 'intensity'} (${prettyUnit(u)})`;
  if (metadata?.kind === 'dielectric') return 'relative permittivity ε (dimensionless)';
  if (metadata?.kind === 'vdos') return `VDOS g(ν̃) (${prettyUnit(u || 'states per cm^-1')})`;
  if (u && typeof u === 'object') u = u.intensity || u.intensities || '';
  if (!u || typeof u !== 'string') return 'intensity';
  const m = /^([^:]+):\s*([^,]*)/.exec(u);
  const unit = (m ? m[1] : u.split(',')[0]).trim().replace('^-1', '⁻¹');
  if (/^arb/.test(unit)) return `intensity (arb. units${m && m[2].trim() ? `: ${m[2].trim()}` : ''})`;
  return `intensity (${unit})`;
}

function metaValue(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return num(v, 6);
  if (Array.isArray(v)) return v.map(metaValue).join(', ');
  if (typeof v === 'object') return Object.entries(v).map(([k, x]) => `${k}: ${metaValue(x)}`).join(' · ');
  return String(v);
}

/** "ir" -> "IR", "raman" -> "Raman" */
export function kindTitle(kind) {
  return { ir: 'IR', raman: 'Raman', dielectric: 'Dielectric ε(ω)', vdos: 'VDOS' }[kind] || kind || '';
}

/** The band y ± std of a committee spectrum: {lo, hi} (null where either is missing). */
export function committeeBand(y, std) {
  const ok = i => y[i] !== null && std[i] !== null && Number.isFinite(y[i]) && Number.isFinite(std[i]);
  return {
    lo: y.map((v, i) => (ok(i) ? v - std[i] : null)),
    hi: y.map((v, i) => (ok(i) ? v + std[i] : null)),
  };
}

/** "1595 ± 4 cm⁻¹ (IR)" for each peak of a committee spectrum. */
export function peakText(peak) {
  return `${num(peak.mean_cm, 5)} ± ${num(peak.std_cm, 2)} cm⁻¹ (${LABELS[peak.channel] || peak.channel})`;
}

/** The keys of intensities in display order (known ones first). */
export function seriesKeys(intensities) {
  const keys = Object.keys(intensities || {});
  return [...ORDER.filter(k => keys.includes(k)), ...keys.filter(k => !ORDER.includes(k))];
}

/**
 * Fill `container` with the spectrum of job `jobId` (fetched; or `data` when given).
 * Returns {plot, destroy}.
 */
export function spectrumPanel(container, jobId, { title = '', data = null } = {}) {
  const plot = new Plot({ label: 'Spectrum', xLabel: 'wavenumber (cm⁻¹)', xName: 'wavenumber', yLabel: 'intensity',
    height: 380, formatX: v => `${num(v, 5)} cm⁻¹`, emptyText: 'Loading the spectrum…' });
  const normalise = h('input', { type: 'checkbox', id: `norm-${jobId}` });
  const status = h('span', { class: 'tool-status', role: 'status' });
  const csv = h('button', { type: 'button', class: 'btn btn-small', id: 'spectrum-csv' }, 'Download CSV');
  const png = h('button', { type: 'button', class: 'btn btn-small', id: 'spectrum-png' }, 'Download PNG');
  plot.addTool(h('label', { class: 'check' }, normalise, 'Normalise each series'));
  plot.addTool(csv);
  plot.addTool(png);
  const meta = h('div', { class: 'spectrum-meta' });
  const bands = h('div', { class: 'spectrum-bands' });
  const overlay = referenceOverlay({ onChange: () => show() });
  const committee = h('div', { class: 'committee-note', id: `committee-${jobId}` });
  const wrap = h('section', { class: 'spectrum-panel', 'aria-label': 'Spectrum' }, plot.el, committee, status, overlay.el,
    bands, meta);
  replace(container, wrap);
  let spectrum = null;

  /** The CSV of what is shown: the spectrum's channels and, when overlaid, the reference. */
  function csvText() {
    const x = spectrum.wavenumber_cm || [];
    const keys = seriesKeys(spectrum.intensities);
    const extra = overlay.columns();
    const names = ['wavenumber_cm', ...keys, ...Object.keys(extra)];
    const cols = [x, ...keys.map(k => spectrum.intensities[k]), ...Object.values(extra)];
    const rows = Math.max(...cols.map(c => c.length));
    const lines = [names.join(',')];
    for (let i = 0; i < rows; i += 1) lines.push(cols.map(c => (i < c.length && c[i] !== null ? c[i] : '')).join(','));
    return `${lines.join('\n')}\n`;
  }

  function show() {
    if (!spectrum) return;
    const x = spectrum.wavenumber_cm || [];
    const keys = seriesKeys(spectrum.intensities);
    plot.o.yLabel = normalise.checked ? 'intensity (each series ÷ its maximum)' : intensityLabel(spectrum.metadata);
    const std = spectrum.intensities_std || {};
    plot.setData(keys.map(k => {
      let y = spectrum.intensities[k].map(v => (v === null ? null : Number(v)));
      let scale = 1;
      if (normalise.checked) {
        const max = Math.max(...y.filter(Number.isFinite).map(Math.abs));
        if (max > 0) { scale = 1 / max; y = y.map(v => (v === null ? null : v * scale)); }
      }
      const series = { key: k, label: LABELS[k] || k, x, y, color: COLORS[k] };
      if (std[k]) {  // a committee: mean ± std over its members, shaded
        Object.assign(series, committeeBand(y, std[k].map(v => (v === null ? null : Number(v) * scale))));
      }
      return series;
    }).concat(overlay.series().map(r => {
      if (!normalise.checked) return r;
      const max = Math.max(...r.y.filter(Number.isFinite).map(Math.abs));
      return max > 0 ? { ...r, y: r.y.map(v => v / max) } : r;
    })));
  }

  function showMeta(metadata) {
    const m = metadata || {};
    const entries = Object.entries(m);
    const brief = [
      m.window && `window ${m.window}`, m.correction && `correction ${m.correction}`,
      Number.isFinite(m.temperature_k) && `${num(m.temperature_k)} K`, Number.isFinite(m.dt_fs) && `Δt ${num(m.dt_fs)} fs`,
      Number.isFinite(m.n_frames) && `${m.n_frames} frames`, Number.isFinite(m.max_corr_fs) && `τmax ${num(m.max_corr_fs)} fs`,
      Number.isFinite(m.resolution_cm) && `resolution ${num(m.resolution_cm, 3)} cm⁻¹`,
      Number.isFinite(m.nyquist_cm) && `Nyquist ${num(m.nyquist_cm, 5)} cm⁻¹`,
      m.units && `units ${prettyUnit(m.units)}`, m.normalisation,
    ].filter(Boolean);
    replace(meta, brief.length ? h('p', { class: 'meta-brief' }, brief.join(' · ')) : null,
      entries.length ? h('details', { class: 'meta-details' },
        h('summary', {}, 'All settings, units and provenance'),
        h('dl', { class: 'meta-list' }, entries.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, metaValue(v))]))) : null);
  }

  function showCommittee(s) {
    if (!s.intensities_std) { replace(committee); return; }
    const k = s.metadata?.committee_size;
    replace(committee, h('p', { class: 'meta-brief' },
      `Committee of ${k ?? 'several'} members: the line is their mean spectrum, the shaded band ± one standard `
      + 'deviation over members.'),
    s.peaks?.length ? h('p', { class: 'meta-brief peaks' }, 'Peaks: ', s.peaks.map(peakText).join(' · ')) : null);
  }

  normalise.addEventListener('change', show);
  csv.addEventListener('click', async () => {
    status.textContent = '';
    try {
      if (spectrum && overlay.series().length) {
        saveBlob(new Blob([csvText()], { type: 'text/csv' }), `${jobId}-spectrum-with-reference.csv`);
      } else {
        await download(`/v1/jobs/${encodeURIComponent(jobId)}/spectrum.csv`, `${jobId}-spectrum.csv`);
      }
      status.textContent = 'CSV downloaded.';
    } catch (err) { status.textContent = describe(err); }
  });
  png.addEventListener('click', async () => {
    status.textContent = '';
    try {
      saveBlob(await plot.toPNG(title || `Spectrum ${jobId}`), `${jobId}-spectrum.png`);
      status.textContent = 'PNG downloaded.';
    } catch (err) { status.textContent = describe(err); }
  });

  async function load() {
    try {
      spectrum = data || await api(`/v1/jobs/${encodeURIComponent(jobId)}/spectrum`);
      plot.o.emptyText = 'The spectrum has no finite values.';
      show();
      showMeta(spectrum.metadata);
      replace(bands, staticDielectric(spectrum.metadata), bandTable(spectrum));
      showCommittee(spectrum);
    } catch (err) {
      plot.o.emptyText = 'No spectrum.';
      plot.schedule();
      status.textContent = `Could not load the spectrum: ${describe(err)}`;
    }
  }
  load();
  return { plot, destroy: () => plot.destroy() };
}
