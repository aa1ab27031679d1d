// The new-spectrum form: pick a model and a trajectory (a file, or a system of an uploaded
// dataset), the options (one schema with the CLI and the api: docs/spectra.md), start a job.
// Its own state: the models and datasets it lists.

import { api, ApiError, upload } from '../api.js';
import { checkField, field, h, replace, select, setFieldError } from '../dom.js';
import { navigate } from '../router.js';
import { errorNote, problemList } from './common.js';

const TRAJECTORY_ACCEPT = '.xyz,.extxyz,.dump,.lammpstrj,.lmp,.traj,.tar.gz,.tgz,.tar,.zip';

function numberInput(id, attrs = {}) {
  return h('input', { type: 'number', id, step: 'any', inputmode: 'decimal', ...attrs });
}

/** {el, destroy}: the form; `query.model` preselects a model. */
export function spectrumForm({ query }) {
  const model = h('select', { id: 'sp-model', required: true });
  const kindIr = h('input', { type: 'radio', name: 'sp-kind', id: 'sp-kind-ir', value: 'ir', checked: true });
  const kindRaman = h('input', { type: 'radio', name: 'sp-kind', id: 'sp-kind-raman', value: 'raman' });
  const kindDielectric = h('input', { type: 'radio', name: 'sp-kind', id: 'sp-kind-dielectric', value: 'dielectric' });
  const kindHint = h('small', { class: 'hint', id: 'sp-kind-hint' });
  const srcFile = h('input', { type: 'radio', name: 'sp-src', id: 'sp-src-file', value: 'file', checked: true });
  const srcData = h('input', { type: 'radio', name: 'sp-src', id: 'sp-src-data', value: 'dataset' });
  const file = h('input', { type: 'file', id: 'sp-file', accept: TRAJECTORY_ACCEPT });
  const dataset = h('select', { id: 'sp-dataset' });
  const system = h('select', { id: 'sp-system' });
  const dt = numberInput('sp-dt', { min: 0, required: true, placeholder: 'e.g. 0.5' });
  const temperature = numberInput('sp-temperature', { value: '300', min: 0 });
  const windowSel = select(['gaussian', 'hann', 'none'], { id: 'sp-window', value: 'gaussian' });
  const maxCorr = numberInput('sp-max-corr', { min: 0, placeholder: 'auto: min(half the run, 2000)' });
  const zeroPad = numberInput('sp-zero-pad', { min: 1, placeholder: '4' });
  const correction = select(['harmonic', 'kubo', 'schofield', 'none'], { id: 'sp-correction', value: 'harmonic' });
  const freqMax = numberInput('sp-freq-max', { min: 0, placeholder: 'auto: min(Nyquist, 5000)' });
  const dipoleMode = select([['global', 'global (model output)'], ['wannier', 'wannier (ions + Wannier centres)']], { id: 'sp-dipole-mode', value: 'global' });
  const ionic = h('input', { type: 'text', id: 'sp-ionic', placeholder: 'O=6,H=1', spellcheck: 'false' });
  const qw = numberInput('sp-qw', { placeholder: '-8' });
  const format = h('input', { type: 'text', id: 'sp-format', placeholder: 'auto (from the file name)', list: 'sp-formats', spellcheck: 'false' });
  const formats = h('datalist', { id: 'sp-formats' }, ['extxyz', 'lammps-dump-text', 'traj', 'deepmd'].map(v => h('option', { value: v })));
  const maxFrames = numberInput('sp-max-frames', { min: 1, step: 1, placeholder: 'all' });
  const index = h('input', { type: 'text', id: 'sp-index', placeholder: ': (all), e.g. 1000: or ::2', spellcheck: 'false' });
  const lammpsTypes = h('input', { type: 'text', id: 'sp-lammps-types', placeholder: '1=O,2=H', spellcheck: 'false' });
  const units = select([['auto', 'auto: n·α (cm⁻¹) with a cell, else per molecule'], ['absorption', 'absorption n·α (cm⁻¹)'],
    ['molar', 'molar ε (km mol⁻¹ per cm⁻¹)'], ['relative', 'relative']], { id: 'sp-units', value: 'auto' });
  const molecules = numberInput('sp-molecules', { min: 1, step: 1, placeholder: '1' });
  const bands = h('input', { type: 'text', id: 'sp-bands', placeholder: 'e.g. 1000:2000,3000:4000', spellcheck: 'false' });
  const epsInf = numberInput('sp-eps-inf', { min: 0, placeholder: '1' });
  const derivative = select([['', 'automatic'], ['true', 'derivative ⟨ẋẋ⟩'], ['false', 'direct ⟨xx⟩']], { id: 'sp-derivative', value: '' });
  const volume = h('input', { type: 'text', id: 'sp-volume', placeholder: 'Å³, or cell', spellcheck: 'false' });
  const reduced = h('input', { type: 'checkbox', id: 'sp-reduced' });
  const laser = numberInput('sp-laser', { min: 0, placeholder: 'none' });
  const jobName = h('input', { type: 'text', id: 'sp-name', maxlength: 300, placeholder: 'default: “IR of <trajectory>”' });
  const kindError = h('p', { class: 'field-error', id: 'sp-kind-err', hidden: true });
  const submitBtn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'sp-submit' }, 'Compute spectrum');
  const message = h('div', { id: 'sp-message', 'aria-live': 'polite' });

  // loc (as the api reports it, last component) -> field wrapper
  const fields = {
    model_id: field('Model', model, { hint: 'IR needs a dipole model, Raman a polarizability model' }),
    file: field('Trajectory file', file, { hint: 'extended XYZ, LAMMPS dump, ASE .traj, or an archive of a DeePMD system' }),
    dataset_id: field('Dataset', dataset),
    system: field('System', system),
    dt_fs: field('Time step between frames (fs)', dt, { hint: 'the interval at which frames were saved' }),
    temperature_k: field('Temperature (K)', temperature),
    window: field('Window', windowSel),
    max_corr_fs: field('Max. correlation time (fs)', maxCorr),
    zero_pad: field('Zero padding factor', zeroPad),
    correction: field('Quantum correction', correction),
    freq_max_cm: field('Max. wavenumber (cm⁻¹)', freqMax),
    dipole_mode: field('Dipole', dipoleMode),
    ionic_charges: field('Ionic charges', ionic, { hint: 'wannier mode: charge of each element, as on the command line' }),
    q_w: field('Wannier centre charge', qw, { hint: 'wannier mode' }),
    format: field('File format', format),
    max_frames: field('Max. frames', maxFrames),
    index: field('Frames (ASE index)', index),
    lammps_type_symbols: field('LAMMPS types', lammpsTypes, { hint: 'dump files without element names' }),
    units: field('IR units', units, { hint: 'band integrals: cm⁻² (absorption), km/mol (molar)' }),
    molecules: field('Molecules per frame', molecules, { hint: 'molar units: normalise per molecule' }),
    bands: field('Bands to integrate (cm⁻¹)', bands, { hint: 'LO:HI, comma separated' }),
    eps_inf: field('ε∞', epsInf, { hint: 'dielectric: electronic permittivity' }),
    derivative: field('Correlation of', derivative),
    volume_a3: field('Volume for absolute IR (Å³)', volume, { hint: 'a number, or “cell” for the mean cell volume' }),
    raman_reduced: checkField('Reduced Raman', reduced, 'reduced: ν̃ · (1 − exp(−hcν̃/kT)) · I'),
    laser_cm: field('Laser wavenumber (cm⁻¹)', laser, { hint: 'Stokes intensities × (ν̃_in − ν̃)⁴' }),
    name: field('Job name', jobName, { hint: 'optional' }),
    kind: h('fieldset', { class: 'field radio-group', 'aria-describedby': 'sp-kind-hint sp-kind-err' }, h('legend', {}, 'Spectrum'),
      h('label', { class: 'check' }, kindIr, 'IR (dipoles)'), h('label', { class: 'check' }, kindRaman, 'Raman (polarizabilities)'),
      h('label', { class: 'check' }, kindDielectric, 'Dielectric ε(ω) (dipoles, periodic)'),
      kindHint, kindError),
  };
  const fileBlock = h('div', { class: 'form-row' }, fields.file);
  const dataBlock = h('div', { class: 'form-row', hidden: true }, fields.dataset_id, fields.system);
  const general = h('div');
  const form = h('form', { class: 'card form', id: 'spectrum-form', 'aria-labelledby': 'sp-h', novalidate: true, onsubmit: onSubmit },
    h('h2', { id: 'sp-h' }, 'New spectrum'),
    h('div', { class: 'form-row' }, fields.model_id, fields.kind, fields.name),
    h('fieldset', { class: 'field radio-group' }, h('legend', {}, 'Trajectory'),
      h('label', { class: 'check' }, srcFile, 'Upload a file'), h('label', { class: 'check' }, srcData, 'A system of an uploaded dataset')),
    fileBlock, dataBlock,
    h('div', { class: 'form-row' }, fields.dt_fs, fields.temperature_k, fields.correction),
    h('details', { class: 'advanced', id: 'sp-advanced' }, h('summary', {}, 'More options'),
      h('div', { class: 'form-row' }, fields.window, fields.max_corr_fs, fields.zero_pad, fields.freq_max_cm),
      h('div', { class: 'form-row' }, fields.derivative, fields.format, formats, fields.index, fields.max_frames),
      h('div', { class: 'form-row' }, fields.lammps_type_symbols),
      h('div', { class: 'form-row' }, fields.dipole_mode, fields.ionic_charges, fields.q_w, fields.volume_a3),
      h('div', { class: 'form-row' }, fields.units, fields.molecules, fields.bands, fields.eps_inf),
      h('div', { class: 'form-row' }, fields.raman_reduced, fields.laser_cm)),
    general,
    h('div', { class: 'form-actions' }, submitBtn), message);

  let models = [];
  let datasets = [];

  function chosenKind() { return kindRaman.checked ? 'raman' : kindDielectric.checked ? 'dielectric' : 'ir'; }

  /** '' or why the chosen model cannot give the chosen spectrum. */
  function kindMismatch() {
    const m = models.find(x => x.id === model.value);
    if (!m) return '';
    if (chosenKind() !== 'raman' && m.kind !== 'dipole') return `${chosenKind() === 'ir' ? 'IR' : 'ε(ω)'} needs a dipole model; ${m.name} predicts polarizabilities.`;
    if (chosenKind() === 'raman' && m.kind !== 'polar') return `Raman needs a polarizability model; ${m.name} predicts dipoles.`;
    return '';
  }

  function syncKind() {
    const m = models.find(x => x.id === model.value);
    const ir = chosenKind() !== 'raman';
    const wannier = ir && dipoleMode.value === 'wannier';
    fields.dipole_mode.hidden = !ir;
    fields.volume_a3.hidden = !ir;
    fields.ionic_charges.hidden = !wannier;
    fields.q_w.hidden = !wannier;
    fields.raman_reduced.hidden = ir;
    fields.laser_cm.hidden = ir;
    fields.units.hidden = chosenKind() !== 'ir';
    fields.molecules.hidden = chosenKind() !== 'ir';
    fields.eps_inf.hidden = chosenKind() !== 'dielectric';
    if (!m) { kindHint.textContent = ''; return; }
    const mismatch = kindMismatch();
    kindHint.className = mismatch ? 'hint warn-text' : 'hint';
    kindHint.textContent = mismatch || (m.kind === 'dipole' ? `${m.name} predicts dipoles: IR.` : `${m.name} predicts polarizabilities: Raman.`);
  }

  function pickKindForModel() {
    const m = models.find(x => x.id === model.value);
    if (m && (m.kind === 'dipole') === kindRaman.checked) { kindIr.checked = m.kind === 'dipole'; kindRaman.checked = m.kind !== 'dipole'; }
    syncKind();
  }

  function syncSource() {
    const fromFile = srcFile.checked;
    fileBlock.hidden = !fromFile;
    dataBlock.hidden = fromFile;
    fields.format.hidden = !fromFile;
    fields.index.hidden = !fromFile;
    fields.lammps_type_symbols.hidden = !fromFile;
  }

  function fillSystems() {
    const ds = datasets.find(d => d.id === dataset.value);
    replace(system, (ds?.systems || []).map(s => h('option', { value: s.path }, `${s.path} (${s.frames} frames, ${s.atoms} atoms)`)));
  }

  function clearErrors() {
    for (const w of Object.values(fields)) setFieldError(w, '');
    replace(general);
  }

  function showProblems(err) {
    clearErrors();
    const unplaced = [];
    let first = null;
    for (const p of err.problems || []) {
      const key = String(p.loc || '').split('.').pop().replace(/\[\d+\]$/, '');
      const wrap = fields[key === 'dataset' ? 'dataset_id' : key];
      if (wrap && !wrap.hidden) {
        setFieldError(wrap, p.msg);
        if (wrap.closest('details')) wrap.closest('details').open = true;
        first = first || wrap;
      } else unplaced.push(p);
    }
    if (unplaced.length || !first) {
      replace(general, h('div', { class: 'error-note', role: 'alert' }, err.detail,
        unplaced.length ? problemList(unplaced) : null));
    }
    (first?.querySelector('input, select') || submitBtn).focus();
  }

  /** The options JSON: only what the user set (the server has the defaults). */
  function options() {
    const out = {};
    const bad = [];
    const numberOf = (input, key) => { if (input.value.trim() !== '') out[key] = Number(input.value); };
    // maps as on the command line (O=6,H=1) or as JSON: the server reads both
    const textOf = (input, key) => {
      const v = input.value.trim();
      if (!v) return;
      if (v.startsWith('{')) {
        try { out[key] = JSON.parse(v); } catch { bad.push({ loc: key, msg: 'not valid JSON; or write it as on the command line, e.g. O=6,H=1' }); }
      } else out[key] = v;
    };
    numberOf(temperature, 'temperature_k');
    out.window = windowSel.value;
    numberOf(maxCorr, 'max_corr_fs');
    numberOf(zeroPad, 'zero_pad');
    out.correction = correction.value;
    numberOf(freqMax, 'freq_max_cm');
    if (derivative.value) out.derivative = derivative.value === 'true';
    if (chosenKind() === 'ir') {
      out.dipole_mode = dipoleMode.value;
      if (dipoleMode.value === 'wannier') {
        textOf(ionic, 'ionic_charges');
        numberOf(qw, 'q_w');
      }
      const v = volume.value.trim();
      if (v) out.volume_a3 = v === 'cell' ? 'cell' : Number(v);
      if (chosenKind() === 'ir') {
        if (units.value !== 'auto') out.units = units.value;
        numberOf(molecules, 'molecules');
      } else numberOf(epsInf, 'eps_inf');
    } else {
      if (reduced.checked) out.raman_reduced = true;
      numberOf(laser, 'laser_cm');
    }
    if (srcFile.checked) {
      if (format.value.trim()) out.format = format.value.trim();
      if (index.value.trim()) out.index = index.value.trim();
      textOf(lammpsTypes, 'lammps_type_symbols');
    }
    numberOf(maxFrames, 'max_frames');
    textOf(bands, 'bands');
    return { out, bad };
  }

  async function onSubmit(e) {
    e.preventDefault();
    clearErrors();
    replace(message);
    const local = [];
    if (!model.value) local.push({ loc: 'model_id', msg: 'choose a model (train or upload one first)' });
    else if (kindMismatch()) local.push({ loc: 'model_id', msg: kindMismatch() });
    if (!(Number(dt.value) > 0)) local.push({ loc: 'dt_fs', msg: 'a time step > 0 is needed' });
    if (srcFile.checked && !file.files.length) local.push({ loc: 'file', msg: 'choose a trajectory file' });
    if (srcData.checked && !system.value) local.push({ loc: 'system', msg: 'choose a dataset and a system' });
    const opts = options();
    local.push(...opts.bad);
    if (local.length) { showProblems({ detail: 'Please fix the marked fields.', problems: local }); return; }
    const data = new FormData();
    data.append('model_id', model.value);
    data.append('kind', chosenKind());
    data.append('dt_fs', dt.value);
    data.append('options', JSON.stringify(opts.out));
    if (jobName.value.trim()) data.append('name', jobName.value.trim());
    if (srcFile.checked) data.append('file', file.files[0]);
    else { data.append('dataset_id', dataset.value); data.append('system', system.value); }
    submitBtn.disabled = true;
    replace(message, h('span', { class: 'muted' }, 'submitting…'));
    try {
      const job = await upload('/v1/jobs/spectrum', data, { onProgress: (a, b) => {
        if (b) replace(message, h('span', { class: 'muted' }, `uploading ${Math.round((100 * a) / b)} %`));
      } });
      navigate(`#/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      replace(message);
      if (err instanceof ApiError && err.status === 422) showProblems(err);
      else replace(message, errorNote(err, 'Not started: '));
    } finally {
      submitBtn.disabled = false;
    }
  }

  model.addEventListener('change', pickKindForModel);
  kindIr.addEventListener('change', syncKind);
  kindRaman.addEventListener('change', syncKind);
  kindDielectric.addEventListener('change', syncKind);
  srcFile.addEventListener('change', syncSource);
  srcData.addEventListener('change', syncSource);
  dataset.addEventListener('change', fillSystems);
  dipoleMode.addEventListener('change', syncKind);

  Promise.all([api('/v1/models'), api('/v1/datasets')]).then(([ms, ds]) => {
    models = ms;
    datasets = ds;
    replace(model, ms.length ? ms.map(m => h('option', { value: m.id }, `${m.name} · ${m.kind} · ${m.id}`))
      : [h('option', { value: '' }, '— no model yet —')]);
    if (query.model && ms.some(m => m.id === query.model)) model.value = query.model;
    replace(dataset, ds.map(d => h('option', { value: d.id }, `${d.name} (${d.id})`)));
    fillSystems();
    pickKindForModel();
    syncSource();
  }).catch(err => replace(message, errorNote(err)));

  syncSource();
  syncKind();
  return { el: form, destroy: () => {} };
}
