// The band table of a spectrum (its "bands": integrated intensities, their errors, units,
// and for Raman the depolarisation ratio), and the static dielectric constant when there is one.

import { h } from '../dom.js';
import { num } from '../format.js';

/** A table of spectrum.bands, or null when the spectrum has none. */
export function bandTable(spectrum) {
  const bands = spectrum?.bands;
  if (!Array.isArray(bands) || !bands.length) return null;
  const raman = bands.some(b => 'depolarization_ratio' in b);
  const head = ['Band (cm⁻¹)', 'Integral', '± error', 'Unit', ...(raman ? ['Depolarisation ratio ρ'] : [])];
  return h('table', { class: 'table band-table', id: 'spectrum-bands' },
    h('caption', {}, 'Integrated bands', bands[0].error_kind ? ` (error: ${bands[0].error_kind})` : ''),
    h('thead', {}, h('tr', {}, head.map(t => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, bands.map(b => h('tr', { 'data-band': `${b.lo}:${b.hi}` },
      h('td', {}, `${num(b.lo)}–${num(b.hi)}`),
      h('td', { class: 'num' }, num(b.integral, 5)),
      h('td', { class: 'num' }, b.error === null || b.error === undefined ? '—' : num(b.error, 3)),
      h('td', {}, b.unit || ''),
      ...(raman ? [h('td', { class: 'num' }, b.depolarization_ratio === null ? '—' : num(b.depolarization_ratio, 3))] : [])))));
}

/** "static dielectric constant 78.1 ± 2.3 (ε∞ 1.8)" or null. */
export function staticDielectric(metadata) {
  const s = metadata?.static;
  if (!s || !Number.isFinite(s.eps_static)) return null;
  const err = Number.isFinite(s.error) ? ` ± ${num(s.error, 3)}` : '';
  return h('p', { class: 'meta-brief', id: 'spectrum-static-eps' },
    `Static dielectric constant ε = ${num(s.eps_static, 4)}${err} (${s.error_kind || 'fluctuations'}), ε∞ = ${num(s.eps_inf, 4)}`);
}
