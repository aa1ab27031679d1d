// Pieces shared by the views: headings, error notes, problem lists, keyed table rows.

import { describe } from '../api.js';
import { h } from '../dom.js';

export function pageHeader(title, ...extra) {
  return h('div', { class: 'page-head' }, h('h1', {}, title), ...extra);
}

/** A note for a failed request (role=alert so screen readers announce it). */
export function errorNote(err, prefix = '') {
  return h('div', { class: 'error-note', role: 'alert' }, prefix, describe(err));
}

/**
 * The problems of a 422 answer as a list: "loc — msg". onPick(problem) makes each
 * location a button (e.g. to select the JSON path in an editor).
 */
export function problemList(problems, { onPick, describeLoc } = {}) {
  return h('ul', { class: 'problems' }, problems.map(p => {
    const loc = p.loc || '(document)';
    const where = onPick
      ? h('button', { type: 'button', class: 'problem-loc', onclick: () => onPick(p) }, loc)
      : h('code', { class: 'problem-loc' }, loc);
    const extra = describeLoc ? describeLoc(p) : null;
    return h('li', { dataset: { loc } }, where, extra ? h('span', { class: 'problem-line' }, extra) : null,
      h('span', { class: 'problem-msg' }, p.msg));
  }));
}

/**
 * Update a table body in place from items keyed by id: rows are reused, and a cell is
 * rebuilt only when its signature changes, so keyboard focus and hover survive polling.
 * cells(item) -> [[signature, () => content], …]
 */
export function syncRows(tbody, items, key, cells, rowAttrs = () => ({})) {
  const existing = new Map([...tbody.rows].map(r => [r.dataset.key, r]));
  const wanted = new Set(items.map(key));
  for (const [k, row] of existing) if (!wanted.has(k)) row.remove();
  let previous = null;
  for (const item of items) {
    const k = key(item);
    let row = existing.get(k);
    if (!row) {
      row = h('tr', { dataset: { key: k } });
    }
    const attrs = rowAttrs(item);
    for (const [name, value] of Object.entries(attrs)) row.dataset[name] = value;
    const spec = cells(item);
    spec.forEach(([sig, build], i) => {
      let td = row.cells[i];
      if (!td) { td = h('td'); row.append(td); }
      const s = String(sig);
      if (td.dataset.sig === s) return;
      const hadFocus = td.contains(document.activeElement) ? document.activeElement.dataset.focus : null;
      td.dataset.sig = s;
      const content = build();
      td.replaceChildren(...[content].flat().filter(c => c !== null && c !== undefined && c !== false)
        .map(c => (c instanceof Node ? c : document.createTextNode(String(c)))));
      if (hadFocus) td.querySelector(`[data-focus="${hadFocus}"]`)?.focus();
    });
    const expectedPos = previous ? previous.nextSibling : tbody.firstChild;
    if (expectedPos !== row) tbody.insertBefore(row, expectedPos);
    previous = row;
  }
}

/** A small "updated hh:mm:ss" live indicator. */
export function liveIndicator() {
  const el = h('span', { class: 'live-indicator', 'aria-hidden': 'true' }, 'live');
  return {
    el,
    ok() { el.classList.remove('stale'); el.title = `updated ${new Date().toLocaleTimeString()}`; },
    stale() { el.classList.add('stale'); el.title = 'not updating: the last request failed'; },
    done() { el.classList.add('done'); el.textContent = 'final'; el.title = 'the job has finished: nothing changes any more'; },
  };
}
