// A reference spectrum (an experiment, another code) laid over ours: the user's CSV of
// wavenumber and intensity, with an intensity scale factor and a frequency scaling
// factor (ν̃ → f·ν̃, as for harmonic frequencies). Its own state; the panel asks for the
// series to draw and the columns to add to the CSV download.

import { h, replace } from '../dom.js';
import { num } from '../format.js';

/**
 * CSV text → {x, y}: the first two numeric columns of each row; a header row, blank lines,
 * '#' comments, and ',', ';', tab or spaces as separators are accepted.
 */
export function parseReferenceCsv(text) {
  const x = [];
  const y = [];
  let skipped = 0;
  for (const raw of String(text).split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const cells = line.split(/[,;\t ]+/).map(Number);
    if (cells.length < 2 || !Number.isFinite(cells[0]) || !Number.isFinite(cells[1])) { skipped += 1; continue; }
    x.push(cells[0]);
    y.push(cells[1]);
  }
  if (x.length < 2) throw new Error('no rows of two numbers (wavenumber, intensity) found');
  return { x, y, skipped };
}

/** The overlay with its controls; onChange() is called when what to draw changes. */
export function referenceOverlay({ onChange, units = '' }) {
  const file = h('input', { type: 'file', id: 'overlay-file', accept: '.csv,.txt,.dat,text/csv' });
  const scale = h('input', { type: 'number', id: 'overlay-scale', step: 'any', value: '1', inputmode: 'decimal' });
  const freq = h('input', { type: 'number', id: 'overlay-freq-scale', step: 'any', value: '1', inputmode: 'decimal' });
  const clear = h('button', { type: 'button', class: 'btn btn-small', id: 'overlay-clear', hidden: true }, 'Remove');
  const status = h('span', { class: 'tool-status', id: 'overlay-status', role: 'status' });
  let reference = null; // {name, x, y}

  const factor = input => (Number.isFinite(Number(input.value)) && input.value.trim() !== '' ? Number(input.value) : 1);

  function describeState() {
    if (!reference) { replace(status, 'No reference spectrum.'); return; }
    replace(status, `${reference.name}: ${reference.x.length} points, intensity × ${num(factor(scale))}, `
      + `wavenumber × ${num(factor(freq))}${units ? ` (drawn in the spectrum's units, ${units})` : ''}`);
  }

  file.addEventListener('change', async () => {
    const f = file.files[0];
    if (!f) return;
    try {
      const parsed = parseReferenceCsv(await f.text());
      reference = { name: f.name, x: parsed.x, y: parsed.y };
      clear.hidden = false;
      describeState();
    } catch (err) {
      reference = null;
      replace(status, `Could not read ${f.name}: ${err.message}`);
    }
    onChange();
  });
  for (const input of [scale, freq]) input.addEventListener('input', () => { describeState(); onChange(); });
  clear.addEventListener('click', () => { reference = null; file.value = ''; clear.hidden = true; describeState(); onChange(); });

  const el = h('fieldset', { class: 'overlay-controls', id: 'spectrum-overlay' },
    h('legend', {}, 'Overlay a reference spectrum (CSV: wavenumber in cm⁻¹, intensity)'),
    h('div', { class: 'form-row' },
      h('label', { class: 'field' }, h('span', {}, 'Reference CSV'), file),
      h('label', { class: 'field' }, h('span', {}, 'Intensity scale factor'), scale),
      h('label', { class: 'field' }, h('span', {}, 'Frequency scaling (ν̃ × f)'), freq), clear),
    status);
  describeState();

  /** The reference as drawn: [] or one series. */
  function series() {
    if (!reference) return [];
    const s = factor(scale);
    const f = factor(freq);
    return [{ key: 'reference', label: `reference: ${reference.name}`, x: reference.x.map(v => v * f),
      y: reference.y.map(v => v * s), color: '#222222' }];
  }

  /** Extra CSV columns (name → values) so that a download keeps both spectra. */
  function columns() {
    const [s] = series();
    return s ? { reference_wavenumber_cm: s.x, reference_intensity: s.y } : {};
  }

  return { el, series, columns };
}
