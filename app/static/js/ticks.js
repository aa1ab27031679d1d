// Axis ticks: "nice" linear steps (1, 2, 5 × 10^k) and decades for log axes.

const SUPERSCRIPT = { '-': '⁻', 0: '⁰', 1: '¹', 2: '²', 3: '³', 4: '⁴', 5: '⁵', 6: '⁶', 7: '⁷', 8: '⁸', 9: '⁹' };

export function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const mult = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  return mult * mag;
}

/** Labels for values on a grid of `step`: enough decimals, exponent form when huge/tiny. */
export function stepFormatter(step, maxAbs) {
  if (maxAbs >= 1e6 || (maxAbs > 0 && maxAbs < 1e-3)) {
    return v => (v === 0 ? '0' : v.toExponential(Math.max(0, Math.min(3, Math.round(Math.log10(maxAbs / step)))))
      .replace('e+', 'e'));
  }
  const decimals = Math.max(0, Math.min(10, -Math.floor(Math.log10(step) + 1e-9)));
  return v => {
    const s = v.toFixed(decimals);
    return s === `-${(0).toFixed(decimals)}` ? s.slice(1) : s;
  };
}

/** [{value, label}] for a linear axis over [min, max]. */
export function linearTicks(min, max, target = 6) {
  if (!(max > min)) return [{ value: min, label: String(min) }];
  const step = niceStep(max - min, target);
  const fmt = stepFormatter(step, Math.max(Math.abs(min), Math.abs(max)));
  const out = [];
  const first = Math.ceil(min / step - 1e-9);
  for (let i = first; i * step <= max + step * 1e-9; i += 1) {
    const value = i * step;
    out.push({ value, label: fmt(value) });
    if (out.length > 100) break;
  }
  return out;
}

export function powerOfTen(k) {
  return `10${String(k).split('').map(c => SUPERSCRIPT[c] ?? c).join('')}`;
}

/**
 * Ticks for a log10 axis over [min, max] (both > 0): {major: [{value, label}], minor: [values]}.
 * Three decades or more: labelled powers of ten (every n-th when many) and 2…9 minors;
 * fewer: 1-2-5 values, or linear ticks when even those are too few.
 */
export function logTicks(min, max, target = 6) {
  const lo = Math.log10(min);
  const hi = Math.log10(max);
  const minor = [];
  if (hi - lo < 8) {
    for (let k = Math.floor(lo); k <= Math.ceil(hi); k += 1) {
      for (let m = 2; m <= 9; m += 1) {
        const v = m * 10 ** k;
        if (v >= min && v <= max) minor.push(v);
      }
    }
  }
  const decades = [];
  for (let k = Math.ceil(lo - 1e-9); k <= Math.floor(hi + 1e-9); k += 1) decades.push(k);
  if (decades.length >= 3) {
    const every = Math.max(1, Math.ceil(decades.length / target));
    return { major: decades.filter(k => k % every === 0).map(k => ({ value: 10 ** k, label: powerOfTen(k) })), minor };
  }
  // about one or two decades: label 1, 2 and 5 × 10^k
  const major = [];
  for (let k = Math.floor(lo) - 1; k <= Math.ceil(hi); k += 1) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** k;
      if (v >= min * (1 - 1e-9) && v <= max * (1 + 1e-9)) major.push({ value: v, label: shortLabel(v) });
    }
  }
  if (major.length >= 3) return { major, minor };
  // less than a factor of ~3: plain linear ticks
  return { major: linearTicks(min, max, Math.min(target, 5)).filter(t => t.value > 0), minor: [] };
}

function shortLabel(v) {
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-2) {
    const k = Math.floor(Math.log10(a) + 1e-9);
    const m = Number((v / 10 ** k).toPrecision(2));
    return m === 1 ? powerOfTen(k) : `${m}·${powerOfTen(k)}`;
  }
  return String(Number(v.toPrecision(3)));
}
