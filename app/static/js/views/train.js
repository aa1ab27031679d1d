// New training: paste or load a DeePMD-kit input.json (checked by the api while it is
// edited, problems shown at their JSON path), pick the uploaded systems for training and
// validation (matched from the paths written in input.json, so the example input can be
// pasted unchanged), start the job. The parts are components with their own state:
// the editor (train-editor.js) and the systems (train-systems.js); this view checks the
// document they make together and submits it.

import { api, ApiError } from '../api.js';
import { field, h, note, replace } from '../dom.js';
import { plural } from '../format.js';
import { navigate } from '../router.js';
import { errorNote, pageHeader } from './common.js';
import { inputEditor } from './train-editor.js';
import { systemsPicker } from './train-systems.js';

const CHECK_DELAY_MS = 500;

export function trainView(main, { query }) {
  const nameInput = h('input', { type: 'text', id: 'job-name', maxlength: 300, placeholder: 'e.g. water dipole, small net' });
  const startBtn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'start-training' }, 'Start training');
  const submitMsg = h('div', { id: 'submit-message', 'aria-live': 'polite' });

  const editor = inputEditor({
    onEdit: ({ now, reset }) => { if (reset) systems.reset(); scheduleCheck(now ? 0 : CHECK_DELAY_MS); },
    onError: err => replace(submitMsg, errorNote(err)),
    onProblems: problems => systems.showProblems(problems),
  });
  const systems = systemsPicker({ preselect: query.dataset, currentInput: () => editor.parsed, onChange: () => scheduleCheck(0) });
  const startCard = h('form', { class: 'card form', 'aria-labelledby': 'start-h', onsubmit: onSubmit },
    h('h2', { id: 'start-h' }, '3. Start'),
    h('div', { class: 'form-row' }, field('Job name', nameInput, { hint: 'optional; shown in the jobs list' })),
    h('div', { class: 'form-actions' }, startBtn), submitMsg);

  replace(main, pageHeader('New training'), editor.el, systems.el, startCard);

  // the server's check of the document being edited: the latest answer wins
  let checkTimer = null;
  let checkSeq = 0;
  let disposed = false;

  function scheduleCheck(delay = CHECK_DELAY_MS) {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(check, delay);
  }

  async function check() {
    const seq = ++checkSeq;
    const r = editor.parse();
    editor.showWarnings([]);
    if (r.empty) {
      editor.setStatus('', 'Waiting for an input.json.');
      editor.showProblems([]);
      return;
    }
    if (r.error) {
      editor.setStatus('bad', `Not valid JSON${r.pos ? ` (line ${r.pos.line}, column ${r.pos.column})` : ''}: ${r.error.message}`);
      editor.showSyntaxError(r);
      return;
    }
    systems.follow();
    editor.setStatus('', 'Checking…');
    let result;
    try {
      result = await api('/v1/jobs/train/check', { method: 'POST', json: systems.body(r.value) });
    } catch (err) {
      if (seq !== checkSeq || disposed) return;
      if (err instanceof ApiError && err.status === 422 && err.problems.length) {
        result = { valid: false, problems: err.problems, warnings: [] };  // not an object at all
      } else {
        editor.setStatus('bad', `Could not check: ${err.detail || err.message}`);
        return;
      }
    }
    if (seq !== checkSeq || disposed) return;
    if (result.valid) {
      editor.setStatus('good', `✓ Valid: ready to start (${plural(result.dataset_ids.length, 'dataset')}).`);
    } else {
      editor.setStatus('bad', `${plural(result.problems.length, 'problem')} — a submission would be refused.`);
    }
    editor.showProblems(result.problems);
    editor.showWarnings(result.warnings);
  }

  async function onSubmit(e) {
    e.preventDefault();
    clearTimeout(checkTimer);
    replace(submitMsg);
    const r = editor.parse();
    if (!r.ok) {
      await check();
      replace(submitMsg, note(r.empty ? 'Paste or load an input.json first.' : 'input.json is not valid JSON (see above).', 'error-note'));
      editor.focus();
      return;
    }
    startBtn.disabled = true;
    try {
      const job = await api('/v1/jobs/train', { method: 'POST', json: systems.body(r.value), query: { name: nameInput.value.trim() } });
      navigate(`#/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) {
        editor.setStatus('bad', 'The server refused this input.json.');
        editor.showProblems(err.problems.length ? err.problems : [{ loc: '(document)', msg: err.detail }],
          `Not started — ${plural(err.problems.length || 1, 'problem')}:`);
        replace(submitMsg, note(`Not started: ${err.detail}`, 'error-note'));
        editor.focusFirstProblem();
      } else {
        replace(submitMsg, errorNote(err, 'Not started: '));
      }
    } finally {
      startBtn.disabled = false;
    }
  }

  return () => { disposed = true; clearTimeout(checkTimer); systems.destroy(); };
}
