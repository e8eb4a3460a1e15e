/** JSON for people: like `JSON.stringify(v, null, 2)`, but short arrays and objects stay on one line. */

const WIDTH = 80;

/** Scalars, `[]` and `{}` never need a line of their own. */
function isScalar(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return true;
  return (Array.isArray(value) ? value : Object.keys(value)).length === 0;
}

function inline(value: unknown): string {
  if (Array.isArray(value)) return value.length === 0 ? '[]' : `[${value.map(inline).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    if (entries.length === 0) return '{}';
    return `{ ${entries.map(([k, v]) => `${JSON.stringify(k)}: ${inline(v)}`).join(', ')} }`;
  }
  return JSON.stringify(value);
}

function format(value: unknown, indent: string, used: number): string {
  if (isScalar(value)) return JSON.stringify(value);
  const children = Array.isArray(value) ? value : Object.values(value as object);
  const flat = inline(value);
  if (children.every(isScalar) && used + flat.length <= WIDTH) return flat;
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    const items = value.map((v) => inner + format(v, inner, inner.length));
    return `[\n${items.join(',\n')}\n${indent}]`;
  }
  const entries = Object.entries(value as object);
  if (entries.length === 0) return '{}';
  const lines = entries.map(([k, v]) => {
    const head = `${inner}${JSON.stringify(k)}: `;
    return head + format(v, inner, head.length);
  });
  return `{\n${lines.join(',\n')}\n${indent}}`;
}

export function formatJson(value: unknown): string {
  return format(value, '', 0);
}
