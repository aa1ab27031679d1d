// Building DOM nodes without innerHTML: every piece of server data goes in as text.

/**
 * h('a', {href: '#/jobs', class: 'x', onclick: fn, dataset: {id: 1}}, 'text', child, [more])
 * Attributes: class, text, value (set as a property, after the children), dataset,
 * style (object), on<event> handlers, boolean attributes (true/false), everything
 * else through setAttribute. Children: nodes,
 * strings, numbers, arrays (flattened), null/undefined/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  let initial;
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'value') initial = value;
    else if (key === 'class') el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'style') Object.assign(el.style, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, '');
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  if (initial !== undefined) el.value = initial;  // after the children: a <select> needs its options
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace all children of el. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let uid = 0;
/** A unique id for label/aria wiring. */
export function nextId(prefix = 'id') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form field: <div class="field"><label>…</label>control<small hint/><p error/></div>. */
export function field(label, control, { hint, loc, wide } = {}) {
  if (!control.id) control.id = nextId('f');
  const error = h('p', { class: 'field-error', id: `${control.id}-err`, hidden: true });
  const hintEl = hint ? h('small', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  const described = [hintEl?.id, error.id].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', described);
  const wrap = h('div', { class: ['field', wide && 'field-wide'], dataset: loc ? { loc } : {} },
    h('label', { for: control.id }, label), control, hintEl, error);
  return wrap;
}

/** field() for one checkbox: a title, the box with its own label, the error line. */
export function checkField(title, checkbox, text, { hint } = {}) {
  if (!checkbox.id) checkbox.id = nextId('f');
  const error = h('p', { class: 'field-error', id: `${checkbox.id}-err`, hidden: true });
  const hintEl = hint ? h('small', { class: 'hint', id: `${checkbox.id}-hint` }, hint) : null;
  checkbox.setAttribute('aria-describedby', [hintEl?.id, error.id].filter(Boolean).join(' '));
  return h('div', { class: 'field', role: 'group', 'aria-label': title },
    h('span', { class: 'field-title', 'aria-hidden': 'true' }, title),
    h('label', { class: 'check', for: checkbox.id }, checkbox, text), hintEl, error);
}

/** Show or clear the error of a field() wrapper. */
export function setFieldError(wrap, message) {
  const error = wrap.querySelector('.field-error');
  const control = wrap.querySelector('input, select, textarea');
  if (message) {
    error.textContent = message;
    error.hidden = false;
    control?.setAttribute('aria-invalid', 'true');
  } else {
    error.textContent = '';
    error.hidden = true;
    control?.removeAttribute('aria-invalid');
  }
}

export function select(options, { value, ...attrs } = {}) {
  const el = h('select', attrs, options.map(o => {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    return h('option', { value: v, selected: v === value }, label);
  }));
  return el;
}

/** A status badge: queued / running / succeeded / failed / cancelled. */
export function badge(status, extra = '') {
  return h('span', { class: `badge badge-${status}`, dataset: { status } }, status + extra);
}

/** A progress bar (role=progressbar) for value/max (null max: indeterminate). */
export function progressBar(value, max, label) {
  const known = Number.isFinite(value) && Number.isFinite(max) && max > 0;
  const pct = known ? Math.max(0, Math.min(100, (100 * value) / max)) : 0;
  const bar = h('div', {
    class: ['progress', !known && 'progress-unknown'],
    role: 'progressbar',
    'aria-label': label || 'progress',
    'aria-valuemin': 0,
    'aria-valuemax': known ? max : undefined,
    'aria-valuenow': known ? value : undefined,
  }, h('div', { class: 'progress-fill' }));
  bar.firstChild.style.width = `${pct.toFixed(1)}%`;
  return bar;
}

/** An empty-state / note paragraph. */
export function note(text, cls = 'note') {
  return h('p', { class: cls }, text);
}
