// A small interactive line plot on <canvas>: linear or log10 y axis, gaps at null/NaN,
// series toggles (legend buttons), drag to zoom (a box, or a horizontal band for x only),
// double-click / Escape to reset, arrow keys to pan, +/- to zoom, hover readout, PNG export.
//
// The figure element carries data attributes for tests and scripts:
//   data-points   finite points drawn (visible series, inside the current x range)
//   data-series   keys of the visible series, comma-separated
//   data-zoomed   "true" while zoomed; data-x-range "x0,x1" of the current view
//   data-bands    keys of the visible series whose band (lo..hi, e.g. mean ± std) was drawn
//   data-band-points  grid points of those bands inside the current x range

import { h } from './dom.js';
import { num } from './format.js';
import { linearTicks, logTicks } from './ticks.js';

export const PALETTE = ['#1f6fd1', '#d9650f', '#23914a', '#c2334d', '#7b4fc9', '#8c6d1f', '#168e9b', '#5a5a5a'];
const MARGIN = { left: 66, right: 18, top: 14, bottom: 44 };
const FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const AXIS = '#4a4f57';
const GRID = '#e6e8ec';
const GRID_MINOR = '#f2f3f5';
const TEXT = '#2b2f36';
export const BAND_ALPHA = 0.22;

/** Index of the x value closest to v in an ascending array (binary search). */
export function nearestIndex(xs, v) {
  let lo = 0;
  let hi = xs.length - 1;
  if (hi < 0) return -1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < v) lo = mid; else hi = mid;
  }
  return Math.abs(xs[lo] - v) <= Math.abs(xs[hi] - v) ? lo : hi;
}

export class Plot {
  /**
   * options: label (accessible name), xLabel, yLabel (axis titles), xName (x in the
   * readout; default xLabel), yLog, height (CSS px), formatX(v) / formatY(v) for the
   * readout, emptyText, markers ('auto' | true | false)
   */
  constructor(options = {}) {
    this.o = { height: 320, yLog: false, formatX: num, formatY: num, emptyText: 'No data yet.',
      markers: 'auto', label: 'plot', ...options };
    this.series = [];
    this.zoom = null;  // {x0, x1, y0, y1} (y null: automatic on the visible x range)
    this.frame = 0;
    this.drag = null;
    this.hoverPx = null;
    this.onToggle = null;

    this.legend = h('div', { class: 'plot-legend', role: 'group', 'aria-label': 'Series shown' });
    this.resetBtn = h('button', { type: 'button', class: 'btn btn-small', disabled: true,
      onclick: () => this.resetZoom() }, 'Reset zoom');
    this.tools = h('div', { class: 'plot-tools' }, this.resetBtn);
    this.base = h('canvas', { class: 'plot-base', role: 'img', tabindex: 0, 'aria-label': this.o.label });
    this.overlay = h('canvas', { class: 'plot-overlay', 'aria-hidden': 'true' });
    this.tip = h('div', { class: 'plot-tip', hidden: true, 'aria-hidden': 'true' });
    this.live = h('p', { class: 'visually-hidden', 'aria-live': 'polite' });
    this.area = h('div', { class: 'plot-area' }, this.base, this.overlay, this.tip);
    this.area.style.height = `${this.o.height}px`;
    this.el = h('figure', { class: 'plot', dataset: { points: '0', series: '', zoomed: 'false' } },
      h('div', { class: 'plot-head' }, this.legend, this.tools),
      this.area,
      h('figcaption', { class: 'plot-help' },
        'Drag to zoom (a flat band zooms the x axis only) · double-click or Esc to reset · ',
        'arrow keys pan, + / − zoom · hover for values'),
      this.live);

    this.overlay.addEventListener('mousedown', e => this.onDown(e));
    this.overlay.addEventListener('mousemove', e => this.onMove(e));
    this.overlay.addEventListener('mouseleave', () => { this.hoverPx = null; if (!this.drag) this.drawOverlay(); });
    this.overlay.addEventListener('dblclick', () => this.resetZoom());
    this.onUp = e => this.finishDrag(e);
    window.addEventListener('mouseup', this.onUp);
    this.base.addEventListener('keydown', e => this.onKey(e));
    this.resizer = new ResizeObserver(() => this.schedule());
    this.resizer.observe(this.area);
  }

  /** Add a button (PNG, CSV…) to the tool bar. */
  addTool(button) {
    this.tools.append(button);
  }

  /**
   * series: [{key, label, x: number[], y: (number|null)[], color?, dash?, visible?}].
   * Keeps the zoom and the visibility chosen by the user for keys seen before.
   */
  setData(series) {
    const previous = new Map(this.series.map(s => [s.key, s.visible]));
    this.series = series.map((s, i) => ({
      color: PALETTE[i % PALETTE.length], dash: null, ...s,
      visible: previous.has(s.key) ? previous.get(s.key) : s.visible !== false,
    }));
    this.renderLegend();
    this.schedule();
  }

  setVisible(key, visible) {
    const s = this.series.find(x => x.key === key);
    if (!s) return;
    s.visible = visible;
    this.renderLegend();
    this.schedule();
    this.onToggle?.(key, visible);
  }

  resetZoom() {
    this.zoom = null;
    this.schedule();
  }

  destroy() {
    this.resizer.disconnect();
    window.removeEventListener('mouseup', this.onUp);
    cancelAnimationFrame(this.frame);
  }

  renderLegend() {
    this.legend.replaceChildren(...this.series.map(s => {
      const swatch = h('span', { class: ['swatch', s.dash && 'swatch-dashed'] });
      swatch.style.borderColor = s.color;
      return h('button', {
        type: 'button', class: 'legend-item', 'aria-pressed': String(s.visible), dataset: { series: s.key },
        title: s.visible ? `hide ${s.label || s.key}` : `show ${s.label || s.key}`,
        onclick: () => this.setVisible(s.key, !s.visible),
      }, swatch, s.label || s.key);
    }));
  }

  schedule() {
    cancelAnimationFrame(this.frame);
    this.frame = requestAnimationFrame(() => this.draw());
  }

  // --- geometry ---------------------------------------------------------------------------

  valid(y) {
    return y !== null && y !== undefined && Number.isFinite(y) && (!this.o.yLog || y > 0);
  }

  /** Bounds of the visible data: {x0, x1} over everything, y over the x range given. */
  bounds(xRange) {
    let x0 = Infinity; let x1 = -Infinity; let y0 = Infinity; let y1 = -Infinity;
    for (const s of this.series) {
      if (!s.visible) continue;
      for (let i = 0; i < s.x.length; i += 1) {
        const x = s.x[i]; const y = s.y[i];
        if (!Number.isFinite(x) || !this.valid(y)) continue;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (xRange && (x < xRange[0] || x > xRange[1])) continue;
        // a band widens the y range to its edges
        const lo = s.lo && this.valid(s.lo[i]) ? Math.min(y, s.lo[i]) : y;
        const hi = s.hi && this.valid(s.hi[i]) ? Math.max(y, s.hi[i]) : y;
        if (lo < y0) y0 = lo;
        if (hi > y1) y1 = hi;
      }
    }
    return { x0, x1, y0, y1 };
  }

  /** The data window drawn: the zoom, or all the data with a margin. */
  window() {
    const all = this.bounds(this.zoom ? [this.zoom.x0, this.zoom.x1] : null);
    if (!Number.isFinite(all.x0)) return null;
    let { x0, x1 } = this.zoom || all;
    if (x1 <= x0) { x0 -= 0.5; x1 += 0.5; }
    let y0; let y1;
    if (this.zoom && this.zoom.y0 !== null && this.zoom.y0 !== undefined) {
      ({ y0, y1 } = this.zoom);
    } else if (Number.isFinite(all.y0)) {
      ({ y0, y1 } = all);
      if (this.o.yLog) {
        const pad = Math.max(0.05, 0.04 * Math.log10(y1 / y0));
        y0 /= 10 ** pad; y1 *= 10 ** pad;
        if (y1 / y0 < 1.5) { const m = Math.sqrt(y0 * y1); y0 = m / 1.3; y1 = m * 1.3; }
      } else {
        const span = y1 - y0 || Math.abs(y1) || 1;
        y0 -= 0.05 * span; y1 += 0.05 * span;
      }
    } else {
      [y0, y1] = this.o.yLog ? [0.1, 10] : [0, 1];
    }
    return { x0, x1, y0, y1 };
  }

  frameFor(width, height, win) {
    const left = MARGIN.left; const top = MARGIN.top;
    const pw = Math.max(10, width - MARGIN.left - MARGIN.right);
    const ph = Math.max(10, height - MARGIN.top - MARGIN.bottom);
    const ty = this.o.yLog ? Math.log10 : v => v;
    const ya = ty(win.y0); const yb = ty(win.y1);
    return {
      left, top, pw, ph, win,
      px: x => left + ((x - win.x0) / (win.x1 - win.x0)) * pw,
      py: y => top + ph - ((ty(y) - ya) / (yb - ya)) * ph,
      xAt: p => win.x0 + ((p - left) / pw) * (win.x1 - win.x0),
      yAt: p => {
        const t = ya + ((top + ph - p) / ph) * (yb - ya);
        return this.o.yLog ? 10 ** t : t;
      },
    };
  }

  // --- drawing ------------------------------------------------------------------------------

  size() {
    const r = this.area.getBoundingClientRect();
    return { width: Math.max(50, Math.round(r.width)), height: Math.max(50, Math.round(r.height)) };
  }

  draw() {
    const { width, height } = this.size();
    const dpr = window.devicePixelRatio || 1;
    for (const c of [this.base, this.overlay]) {
      if (c.width !== Math.round(width * dpr) || c.height !== Math.round(height * dpr)) {
        c.width = Math.round(width * dpr);
        c.height = Math.round(height * dpr);
      }
    }
    const ctx = this.base.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const drawn = this.render(ctx, width, height, { legend: false });
    this.el.dataset.points = String(drawn.points);
    this.el.dataset.bands = (drawn.bands || []).join(',');
    this.el.dataset.bandPoints = String(drawn.bandPoints || 0);
    this.el.dataset.series = this.series.filter(s => s.visible).map(s => s.key).join(',');
    this.el.dataset.zoomed = String(Boolean(this.zoom));
    this.el.dataset.xRange = drawn.f ? `${drawn.f.win.x0},${drawn.f.win.x1}` : '';
    this.el.dataset.yLabel = this.o.yLabel || '';
    this.resetBtn.disabled = !this.zoom;
    const shown = this.series.filter(s => s.visible).map(s => s.label || s.key).join(', ');
    this.base.setAttribute('aria-label', drawn.f
      ? `${this.o.label}: ${shown || 'no series shown'}; ${drawn.points} points; ${this.o.xLabel || 'x'} from `
        + `${num(drawn.f.win.x0)} to ${num(drawn.f.win.x1)}`
      : `${this.o.label}: ${this.o.emptyText}`);
    this.f = drawn.f;
    this.drawOverlay();
  }

  /** Draw everything on ctx (CSS pixel units); returns {points, f}. */
  render(ctx, width, height, { legend, background }) {
    if (background) {
      ctx.fillStyle = background;
      ctx.fillRect(0, 0, width, height);
    } else {
      ctx.clearRect(0, 0, width, height);
    }
    ctx.font = FONT;
    const win = this.window();
    if (!win) {
      ctx.fillStyle = '#6b7280';
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(this.o.emptyText, width / 2, height / 2);
      return { points: 0, f: null };
    }
    const f = this.frameFor(width, height, win);
    this.drawAxes(ctx, f);
    ctx.save();
    ctx.beginPath();
    ctx.rect(f.left, f.top, f.pw, f.ph);
    ctx.clip();
    let points = 0;
    const bands = [];
    let bandPoints = 0;
    for (const s of this.series) {  // bands first, so that every line stays on top
      if (!s.visible || !s.lo || !s.hi) continue;
      const n = this.drawBand(ctx, f, s);
      if (n) { bands.push(s.key); bandPoints += n; }
    }
    for (const s of this.series) if (s.visible) points += this.drawSeries(ctx, f, s);
    ctx.restore();
    if (legend) this.drawLegend(ctx, f);
    return { points, f, bands, bandPoints };
  }

  drawAxes(ctx, f) {
    const { left, top, pw, ph, win } = f;
    ctx.lineWidth = 1;
    // y grid and labels
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    let yTicks;
    if (this.o.yLog) {
      const t = logTicks(win.y0, win.y1, Math.max(3, Math.floor(ph / 40)));
      ctx.strokeStyle = GRID_MINOR;
      for (const v of t.minor) this.hLine(ctx, f, f.py(v));
      yTicks = t.major;
    } else {
      yTicks = linearTicks(win.y0, win.y1, Math.max(3, Math.floor(ph / 45)));
    }
    for (const t of yTicks) {
      const y = f.py(t.value);
      if (y < top - 0.5 || y > top + ph + 0.5) continue;
      ctx.strokeStyle = GRID;
      this.hLine(ctx, f, y);
      ctx.fillStyle = TEXT;
      ctx.fillText(t.label, left - 6, y);
    }
    // x grid and labels
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const xTicks = linearTicks(win.x0, win.x1, Math.max(2, Math.floor(pw / 90)));
    for (const t of xTicks) {
      const x = Math.round(f.px(t.value)) + 0.5;
      if (x < left - 0.5 || x > left + pw + 0.5) continue;
      ctx.strokeStyle = GRID;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + ph); ctx.stroke();
      ctx.fillStyle = TEXT;
      ctx.fillText(t.label, x, top + ph + 6);
    }
    // frame
    ctx.strokeStyle = AXIS;
    ctx.strokeRect(left + 0.5, top + 0.5, pw, ph);
    // axis titles
    ctx.fillStyle = TEXT;
    if (this.o.xLabel) {
      ctx.textAlign = 'center';
      ctx.textBaseline = 'bottom';
      ctx.fillText(this.o.xLabel, left + pw / 2, top + ph + MARGIN.bottom - 4);
    }
    if (this.o.yLabel) {
      let label = this.o.yLabel;
      while (label.length > 4 && ctx.measureText(label).width > ph) label = `${label.slice(0, -2)}…`;
      ctx.save();
      ctx.translate(14, top + ph / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(label, 0, 0);
      ctx.restore();
    }
  }

  hLine(ctx, f, y) {
    const yy = Math.round(y) + 0.5;
    ctx.beginPath(); ctx.moveTo(f.left, yy); ctx.lineTo(f.left + f.pw, yy); ctx.stroke();
  }

  /** The shaded band lo..hi of a series (its colour, translucent), one polygon per run of
   * valid points. Returns the points drawn inside the x range. */
  drawBand(ctx, f, s) {
    const { x0, x1 } = f.win;
    let drawn = 0;
    let run = [];
    ctx.fillStyle = s.color;
    ctx.globalAlpha = BAND_ALPHA;
    const close = () => {
      if (run.length > 1) {
        ctx.beginPath();
        run.forEach((i, k) => (k ? ctx.lineTo(f.px(s.x[i]), f.py(s.hi[i])) : ctx.moveTo(f.px(s.x[i]), f.py(s.hi[i]))));
        for (let k = run.length - 1; k >= 0; k -= 1) ctx.lineTo(f.px(s.x[run[k]]), f.py(s.lo[run[k]]));
        ctx.closePath();
        ctx.fill();
      }
      run = [];
    };
    for (let i = 0; i < s.x.length; i += 1) {
      if (!Number.isFinite(s.x[i]) || !this.valid(s.lo[i]) || !this.valid(s.hi[i])) { close(); continue; }
      run.push(i);
      if (s.x[i] >= x0 && s.x[i] <= x1) drawn += 1;
    }
    close();
    ctx.globalAlpha = 1;
    return drawn;
  }

  /** One series as polylines broken at invalid values; isolated points as dots. */
  drawSeries(ctx, f, s) {
    const { x0, x1 } = f.win;
    const n = s.x.length;
    let inView = 0;
    for (let i = 0; i < n; i += 1) if (this.valid(s.y[i]) && s.x[i] >= x0 && s.x[i] <= x1) inView += 1;
    const markers = this.o.markers === true || (this.o.markers === 'auto' && inView <= 60);
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.lineWidth = 1.6;
    ctx.lineJoin = 'round';
    ctx.setLineDash(s.dash || []);
    // when far more points than pixels, draw each pixel column as its min..max span
    const dense = inView > 3 * f.pw;
    ctx.beginPath();
    let open = false;
    let col = null; let cMin = 0; let cMax = 0;
    const flush = () => {
      if (col === null) return;
      if (!open) { ctx.moveTo(col, cMin); open = true; } else ctx.lineTo(col, cMin);
      if (cMax !== cMin) ctx.lineTo(col, cMax);
      col = null;
    };
    for (let i = 0; i < n; i += 1) {
      const y = s.y[i];
      if (!this.valid(y) || !Number.isFinite(s.x[i])) { flush(); open = false; continue; }
      const px = f.px(s.x[i]);
      const py = f.py(y);
      if (dense) {
        const c = Math.round(px);
        if (c !== col) { flush(); col = c; cMin = py; cMax = py; } else { cMin = Math.min(cMin, py); cMax = Math.max(cMax, py); }
      } else if (!open) { ctx.moveTo(px, py); open = true; } else ctx.lineTo(px, py);
    }
    flush();
    ctx.stroke();
    ctx.setLineDash([]);
    for (let i = 0; i < n; i += 1) {
      if (!this.valid(s.y[i])) continue;
      const alone = !this.valid(s.y[i - 1]) && !this.valid(s.y[i + 1]);
      if (!markers && !alone) continue;
      ctx.beginPath();
      ctx.arc(f.px(s.x[i]), f.py(s.y[i]), alone ? 2.6 : 2.1, 0, 2 * Math.PI);
      ctx.fill();
    }
    return inView;
  }

  drawLegend(ctx, f) {
    const shown = this.series.filter(s => s.visible);
    if (!shown.length) return;
    ctx.font = FONT;
    const w = Math.max(...shown.map(s => ctx.measureText(s.label || s.key).width)) + 40;
    const x = f.left + f.pw - w - 8;
    const y = f.top + 8;
    ctx.fillStyle = 'rgba(255,255,255,0.9)';
    ctx.fillRect(x, y, w, shown.length * 18 + 8);
    ctx.strokeStyle = GRID;
    ctx.strokeRect(x + 0.5, y + 0.5, w, shown.length * 18 + 8);
    shown.forEach((s, i) => {
      const yy = y + 13 + i * 18;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.setLineDash(s.dash || []);
      ctx.beginPath(); ctx.moveTo(x + 8, yy); ctx.lineTo(x + 28, yy); ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = TEXT;
      ctx.textAlign = 'left';
      ctx.textBaseline = 'middle';
      ctx.fillText(s.label || s.key, x + 34, yy);
    });
  }

  // --- interaction ------------------------------------------------------------------------

  localPoint(e) {
    const r = this.overlay.getBoundingClientRect();
    return { x: e.clientX - r.left, y: e.clientY - r.top };
  }

  inside(p) {
    const f = this.f;
    return f && p.x >= f.left && p.x <= f.left + f.pw && p.y >= f.top && p.y <= f.top + f.ph;
  }

  onDown(e) {
    if (e.button !== 0) return;
    const p = this.localPoint(e);
    if (!this.inside(p)) return;
    e.preventDefault();
    this.drag = { a: p, b: p };
  }

  onMove(e) {
    const p = this.localPoint(e);
    if (this.drag) {
      const f = this.f;
      this.drag.b = { x: Math.min(Math.max(p.x, f.left), f.left + f.pw), y: Math.min(Math.max(p.y, f.top), f.top + f.ph) };
    }
    this.hoverPx = this.inside(p) ? p : null;
    this.drawOverlay();
  }

  finishDrag() {
    if (!this.drag) return;
    const { a, b } = this.drag;
    this.drag = null;
    const f = this.f;
    if (f && Math.abs(b.x - a.x) >= 6) {
      const x0 = f.xAt(Math.min(a.x, b.x));
      const x1 = f.xAt(Math.max(a.x, b.x));
      if (Math.abs(b.y - a.y) >= 12) {
        this.zoom = { x0, x1, y0: f.yAt(Math.max(a.y, b.y)), y1: f.yAt(Math.min(a.y, b.y)) };
      } else {
        this.zoom = { x0, x1, y0: null, y1: null };
      }
      this.live.textContent = `Zoomed to ${this.o.xLabel || 'x'} ${num(x0)} – ${num(x1)}`;
      this.schedule();
    } else {
      this.drawOverlay();
    }
  }

  onKey(e) {
    const f = this.f;
    if (!f) return;
    const { x0, x1 } = f.win;
    const span = x1 - x0;
    let next = null;
    if (e.key === 'Escape' || e.key === '0' || e.key === 'Home') { this.resetZoom(); e.preventDefault(); return; }
    if (e.key === 'ArrowLeft') next = [x0 - 0.1 * span, x1 - 0.1 * span];
    else if (e.key === 'ArrowRight') next = [x0 + 0.1 * span, x1 + 0.1 * span];
    else if (e.key === '+' || e.key === '=') next = [x0 + 0.25 * span, x1 - 0.25 * span];
    else if (e.key === '-' || e.key === '_') next = [x0 - 0.5 * span, x1 + 0.5 * span];
    if (!next) return;
    e.preventDefault();
    this.zoom = { x0: next[0], x1: next[1], y0: null, y1: null };
    this.live.textContent = `${this.o.xLabel || 'x'} ${num(next[0])} – ${num(next[1])}`;
    this.schedule();
  }

  drawOverlay() {
    const dpr = window.devicePixelRatio || 1;
    const ctx = this.overlay.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.overlay.width / dpr, this.overlay.height / dpr);
    const f = this.f;
    if (!f) { this.tip.hidden = true; return; }
    if (this.drag) {
      const { a, b } = this.drag;
      const band = Math.abs(b.y - a.y) < 12;
      const y0 = band ? f.top : Math.min(a.y, b.y);
      const hgt = band ? f.ph : Math.abs(b.y - a.y);
      ctx.fillStyle = 'rgba(31,111,209,0.12)';
      ctx.strokeStyle = 'rgba(31,111,209,0.7)';
      ctx.fillRect(Math.min(a.x, b.x), y0, Math.abs(b.x - a.x), hgt);
      ctx.strokeRect(Math.min(a.x, b.x) + 0.5, y0 + 0.5, Math.abs(b.x - a.x), hgt);
    }
    if (!this.hoverPx) { this.tip.hidden = true; return; }
    const xv = f.xAt(this.hoverPx.x);
    const rows = [];
    let snapX = null;
    for (const s of this.series) {
      if (!s.visible || !s.x.length) continue;
      const i = nearestIndex(s.x, xv);
      if (i < 0) continue;
      if (snapX === null || Math.abs(s.x[i] - xv) < Math.abs(snapX - xv)) snapX = s.x[i];
      rows.push({ s, i });
    }
    if (snapX === null) { this.tip.hidden = true; return; }
    const px = f.px(snapX);
    ctx.strokeStyle = 'rgba(60,60,60,0.5)';
    ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(Math.round(px) + 0.5, f.top); ctx.lineTo(Math.round(px) + 0.5, f.top + f.ph); ctx.stroke();
    ctx.setLineDash([]);
    const lines = [];
    for (const { s, i } of rows) {
      const y = s.y[i];
      if (this.valid(y) && s.x[i] === snapX) {
        ctx.fillStyle = s.color;
        ctx.beginPath(); ctx.arc(px, f.py(y), 3.5, 0, 2 * Math.PI); ctx.fill();
      }
      lines.push({ s, text: s.x[i] === snapX ? (y === null || y === undefined || Number.isNaN(y) ? 'gap' : this.o.formatY(y)) : '—' });
    }
    this.tip.replaceChildren(
      h('div', { class: 'plot-tip-x' }, `${this.o.xName || this.o.xLabel || 'x'}: ${this.o.formatX(snapX)}`),
      ...lines.map(({ s, text }) => {
        const sw = h('span', { class: ['swatch', s.dash && 'swatch-dashed'] });
        sw.style.borderColor = s.color;
        return h('div', {}, sw, `${s.label || s.key}: `, h('strong', {}, text));
      }));
    this.tip.hidden = false;
    const tw = this.tip.offsetWidth;
    const left = px + 14 + tw > f.left + f.pw ? px - 14 - tw : px + 14;
    this.tip.style.left = `${Math.max(0, left)}px`;
    this.tip.style.top = `${f.top + 6}px`;
  }

  // --- export -----------------------------------------------------------------------------

  /** The plot as a PNG Blob (white background, legend drawn in), at 2× resolution. */
  toPNG(title) {
    const { width, height } = this.size();
    const scale = 2;
    const extra = title ? 24 : 0;
    const canvas = document.createElement('canvas');
    canvas.width = width * scale;
    canvas.height = (height + extra) * scale;
    const ctx = canvas.getContext('2d');
    ctx.scale(scale, scale);
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, width, extra);
    if (title) {
      ctx.font = `600 ${FONT}`;
      ctx.fillStyle = TEXT;
      ctx.textAlign = 'left';
      ctx.textBaseline = 'middle';
      ctx.fillText(title, MARGIN.left, 14);
      ctx.translate(0, extra);
    }
    this.render(ctx, width, height, { legend: true, background: '#ffffff' });
    return new Promise((resolve, reject) => canvas.toBlob(b => (b ? resolve(b) : reject(new Error('PNG export failed'))), 'image/png'));
  }
}
