// Where a JSON path ("model.descriptor.sel[1]", as the api reports it) sits in the text
// of a JSON document: a small scanner that records the span of every key and value.

/** "a.b[2].c" -> ['a', 'b', 2, 'c'] */
export function splitPath(path) {
  const out = [];
  const re = /([^.[\]]+)|\[(\d+)\]/g;
  let m;
  while ((m = re.exec(path || '')) !== null) out.push(m[2] !== undefined ? Number(m[2]) : m[1]);
  return out;
}

export function joinPath(parts) {
  return parts.reduce((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

/** Map path -> {start, end} (the key for object members, the value for array items; the root is ''). */
export function scanSpans(text) {
  const spans = new Map();
  let i = 0;
  const ws = () => { while (i < text.length && /\s/.test(text[i])) i += 1; };
  const str = () => {
    const start = i;
    i += 1;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i += 1;
    return { start, end: i, value: JSON.parse(text.slice(start, i)) };
  };
  const value = parts => {
    ws();
    const start = i;
    const c = text[i];
    if (c === '{') {
      i += 1; ws();
      if (text[i] === '}') { i += 1; return { start, end: i }; }
      for (;;) {
        ws();
        const key = str();
        const path = [...parts, key.value];
        ws(); i += 1;  // ':'
        const v = value(path);
        spans.set(joinPath(path), { start: key.start, end: key.end, valueStart: v.start, valueEnd: v.end });
        ws();
        if (text[i] === ',') { i += 1; continue; }
        i += 1;  // '}'
        return { start, end: i };
      }
    }
    if (c === '[') {
      i += 1; ws();
      if (text[i] === ']') { i += 1; return { start, end: i }; }
      for (let k = 0; ; k += 1) {
        const path = [...parts, k];
        const v = value(path);
        spans.set(joinPath(path), { start: v.start, end: v.end, valueStart: v.start, valueEnd: v.end });
        ws();
        if (text[i] === ',') { i += 1; continue; }
        i += 1;  // ']'
        return { start, end: i };
      }
    }
    if (c === '"') { const s = str(); return { start: s.start, end: s.end }; }
    const m = /^-?[\d.eE+-]+|^true|^false|^null/.exec(text.slice(i, i + 64));
    i += m ? m[0].length : 1;
    return { start, end: i };
  };
  try {
    const root = value([]);
    spans.set('', { start: root.start, end: root.end, valueStart: root.start, valueEnd: root.end });
  } catch { /* invalid JSON: keep what was found */ }
  return spans;
}

export function lineOf(text, offset) {
  let line = 1;
  for (let k = 0; k < offset && k < text.length; k += 1) if (text.charCodeAt(k) === 10) line += 1;
  return line;
}

/**
 * The span of `path` in `text`, or of its nearest existing parent (exact: false) — a
 * missing required key points at the object that should hold it.
 * Returns {start, end, line, exact, found: the path located}.
 */
export function locate(text, path, spans = scanSpans(text)) {
  const parts = splitPath(path === '(document)' ? '' : path);
  for (let n = parts.length; n >= 0; n -= 1) {
    const p = joinPath(parts.slice(0, n));
    const span = spans.get(p);
    if (span) {
      const whole = n === 0;
      const start = whole ? span.start : span.start;
      const end = whole ? Math.min(span.end, span.start + 1) : span.end;
      return { start, end, line: lineOf(text, start), exact: n === parts.length, found: p };
    }
  }
  return { start: 0, end: 0, line: 1, exact: false, found: '' };
}

/** Offset of the first syntax error in text (a strict JSON scan), or -1 when it is valid. */
export function firstErrorOffset(text) {
  let i = 0;
  const fail = () => { throw i; };
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i += 1; };
  const expect = c => { if (text[i] !== c) fail(); i += 1; };
  const string = () => {
    expect('"');
    while (i < text.length && text[i] !== '"') {
      if (text.charCodeAt(i) < 0x20) fail();
      if (text[i] === '\\') {
        i += 1;
        if (text[i] === 'u') { if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) fail(); i += 4; }
        else if (!'"\\/bfnrt'.includes(text[i])) fail();
      }
      i += 1;
    }
    expect('"');
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === '{') {
      i += 1; ws();
      if (text[i] === '}') { i += 1; return; }
      for (;;) {
        ws(); string(); ws(); expect(':'); value(); ws();
        if (text[i] === ',') { i += 1; continue; }
        expect('}'); return;
      }
    }
    if (c === '[') {
      i += 1; ws();
      if (text[i] === ']') { i += 1; return; }
      for (;;) {
        value(); ws();
        if (text[i] === ',') { i += 1; continue; }
        expect(']'); return;
      }
    }
    if (c === '"') { string(); return; }
    const m = /^(-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 400));
    if (!m) fail();
    i += m[0].length;
  };
  try {
    value(); ws();
    if (i < text.length) fail();
    return -1;
  } catch (pos) {
    if (typeof pos !== 'number') throw pos;
    return Math.min(pos, text.length);
  }
}

/**
 * Line and column of a JSON.parse error: from the message ("… (line 3 column 5)" or
 * "… at position 12") when the engine gives it, else from a strict scan of the text.
 */
export function syntaxErrorPosition(text, err) {
  const msg = String(err?.message || '');
  const m = /line (\d+) column (\d+)/.exec(msg);
  if (m) return { line: Number(m[1]), column: Number(m[2]) };
  const p = /position (\d+)/.exec(msg);
  const pos = p ? Number(p[1]) : firstErrorOffset(text);
  if (pos < 0) return null;
  return { line: lineOf(text, pos), column: pos - text.lastIndexOf('\n', pos - 1) };
}
