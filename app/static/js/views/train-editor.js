// The input.json editor of the training page: a textarea with a line gutter that marks the
// lines of problems, load / example / format buttons, the check status, the problems (each
// selects its span in the text) and the server's warnings. Its own state: the last parsed
// document and the problems shown.

import { api } from '../api.js';
import { h, replace } from '../dom.js';
import { plural } from '../format.js';
import { locate, scanSpans, syntaxErrorPosition } from '../jsonloc.js';
import { problemList } from './common.js';

/**
 * onEdit({ now, reset }): the text changed (now: check at once; reset: a new document, so
 * automatic choices elsewhere start over). onError(err): a button could not do its work.
 * onProblems(problems): the problems shown changed (for the parts they point into).
 */
export function inputEditor({ onEdit, onError, onProblems }) {
  const textarea = h('textarea', {
    id: 'input-json', class: 'code-input', spellcheck: 'false', wrap: 'off', autocomplete: 'off',
    rows: 22, 'aria-describedby': 'input-json-status input-json-problems',
    placeholder: 'Paste a DeePMD-kit input.json here (dipole or polar model), or load a file.',
  });
  const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
  const fileInput = h('input', { type: 'file', id: 'input-json-file', accept: '.json,application/json', class: 'visually-hidden' });
  const loadBtn = h('label', { for: 'input-json-file', class: 'btn btn-small', role: 'button', tabindex: 0 }, 'Load input.json…');
  const exampleBtn = h('button', { type: 'button', class: 'btn btn-small', id: 'insert-example' }, 'Insert the water example');
  const formatBtn = h('button', { type: 'button', class: 'btn btn-small' }, 'Format');
  const checkStatus = h('p', { id: 'input-json-status', class: 'check-status', role: 'status' });
  const problemsBox = h('div', { id: 'input-json-problems' });
  const warningsBox = h('div');
  const el = h('section', { class: 'card', 'aria-labelledby': 'json-h' },
    h('div', { class: 'card-head' }, h('h2', { id: 'json-h' }, h('label', { for: 'input-json' }, '1. input.json')),
      h('div', { class: 'tools' }, loadBtn, fileInput, exampleBtn, formatBtn)),
    h('p', { class: 'muted' }, 'Paste the DeePMD-kit input as it is: the systems it names are matched with an uploaded ',
      'dataset below. It is checked by the server as you type, with the same rules as a submission.'),
    h('div', { class: 'editor' }, gutter, textarea),
    checkStatus, problemsBox, warningsBox);

  let parsed = null;
  let lastProblems = [];

  function renderGutter(marks = new Map()) {
    const lines = textarea.value.split('\n').length;
    const frag = [];
    for (let n = 1; n <= Math.max(lines, 1); n += 1) {
      const msg = marks.get(n);
      frag.push(h('div', { class: msg ? 'err' : null, title: msg || null }, String(n)));
    }
    gutter.replaceChildren(...frag);
    gutter.scrollTop = textarea.scrollTop;
  }

  function selectSpan(start, end, line) {
    textarea.focus();
    textarea.setSelectionRange(start, end);
    const lh = parseFloat(getComputedStyle(textarea).lineHeight) || 18;
    textarea.scrollTop = Math.max(0, (line - 1) * lh - textarea.clientHeight / 3);
    gutter.scrollTop = textarea.scrollTop;
  }

  /** The document, parsed now: { empty } | { ok, value } | { error, pos }. */
  function parse() {
    const text = textarea.value;
    if (!text.trim()) { parsed = null; return { empty: true, value: null }; }
    try {
      parsed = JSON.parse(text);
      return { ok: true, value: parsed };
    } catch (err) {
      parsed = null;
      return { error: err, pos: syntaxErrorPosition(text, err), value: null };
    }
  }

  function showProblems(problems, heading) {
    lastProblems = problems;
    const text = textarea.value;
    const spans = scanSpans(text);
    const marks = new Map();
    const located = problems.map(p => ({ p, where: locate(text, p.loc, spans) }));
    for (const { p, where } of located) marks.set(where.line, [marks.get(where.line), `${p.loc}: ${p.msg}`].filter(Boolean).join('\n'));
    renderGutter(marks);
    if (!problems.length) { replace(problemsBox); textarea.removeAttribute('aria-invalid'); return; }
    textarea.setAttribute('aria-invalid', 'true');
    const byLoc = new Map(located.map(({ p, where }) => [p, where]));
    replace(problemsBox, h('div', { class: 'problems-box', role: 'alert' },
      h('p', { class: 'problems-title' }, heading || `${plural(problems.length, 'problem')} in input.json:`),
      problemList(problems, {
        onPick: p => { const w = byLoc.get(p); selectSpan(w.start, w.end, w.line); },
        describeLoc: p => { const w = byLoc.get(p); return w ? `line ${w.line}${w.exact ? '' : ` (in ${w.found || 'the document'})`}` : null; },
      })));
    onProblems(problems);
  }

  function showSyntaxError(r) {
    lastProblems = [];
    replace(problemsBox);
    renderGutter(new Map(r.pos ? [[r.pos.line, r.error.message]] : []));
    textarea.setAttribute('aria-invalid', 'true');
  }

  function setStatus(kind, text) {
    checkStatus.className = kind ? `check-status ${kind}` : 'check-status';
    checkStatus.textContent = text;
  }

  function showWarnings(warnings) {
    replace(warningsBox, warnings?.length
      ? h('div', { class: 'warn-note' }, h('p', {}, 'Accepted but ignored (DeePMD-kit options without effect here):'),
        h('ul', {}, warnings.map(w => h('li', {}, w))))
      : null);
  }

  function setText(text) {
    textarea.value = text;
    renderGutter();
    onEdit({ now: true, reset: true });
  }

  textarea.addEventListener('input', () => {
    renderGutter();
    onEdit({ now: false, reset: false });
  });
  textarea.addEventListener('scroll', () => { gutter.scrollTop = textarea.scrollTop; });
  loadBtn.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); fileInput.click(); } });
  fileInput.addEventListener('change', async () => {
    const f = fileInput.files[0];
    if (!f) return;
    const text = await f.text();
    fileInput.value = '';
    setText(text);
  });
  exampleBtn.addEventListener('click', async () => {
    try {
      const spec = await api('/openapi.json');
      const ex = spec.paths['/v1/jobs/train'].post.requestBody.content['application/json'].examples['water dipole'].value;
      setText(JSON.stringify(ex, null, 2));
    } catch (err) {
      onError(err);
    }
  });
  formatBtn.addEventListener('click', () => {
    const r = parse();
    if (!r.ok) return;
    textarea.value = JSON.stringify(parsed, null, 2);
    renderGutter();
    if (lastProblems.length) showProblems(lastProblems);
  });

  renderGutter();
  setStatus('', 'Waiting for an input.json.');

  return {
    el, parse, showProblems, showSyntaxError, setStatus, showWarnings,
    get parsed() { return parsed; },
    focus: () => textarea.focus(),
    focusFirstProblem: () => problemsBox.querySelector('.problem-loc')?.focus(),
  };
}
