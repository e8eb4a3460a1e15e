/**
 * Turns a config schema into documentation rows (one per setting, nested
 * objects walked with dotted paths) and renders them as Markdown tables.
 */
import { isObject, type JsonSchema } from './json-schema.ts';

export interface SettingRow {
  /** Dotted path: `limits.maxRecipients`, `listeners[].port`, `map.<key>.value`. */
  readonly path: string;
  /** TypeScript-like type: `integer`, `string[]`, `"a" | "b"`. */
  readonly type: string;
  /** Constraints worth knowing (`≥ 1`, `non-empty`), or ''. */
  readonly constraints: string;
  /** The default as JSON, or undefined when there is none. */
  readonly default: string | undefined;
  /** Must be given: listed in `required` and without a default. */
  readonly required: boolean;
  readonly description: string;
}

/** A short, TypeScript-like name for the type a schema accepts. */
export function typeName(schema: JsonSchema): string {
  if ('const' in schema) return JSON.stringify(schema.const);
  if (Array.isArray(schema.enum)) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
  const union = schema.anyOf ?? schema.oneOf;
  // A typed schema whose oneOf/anyOf only adds constraints (required keys) is still its type.
  if (union && schema.type === undefined) return [...new Set(union.map(typeName))].join(' | ');
  if (Array.isArray(schema.type)) return schema.type.join(' | ');
  switch (schema.type) {
    case 'array': {
      const items = schema.items;
      if (!isObject(items) || Array.isArray(items)) return 'array';
      const inner = typeName(items);
      return inner.includes(' | ') ? `(${inner})[]` : `${inner}[]`;
    }
    case 'object': {
      const value = recordValue(schema);
      return value ? `Record<string, ${typeName(value)}>` : 'object';
    }
    case undefined:
      return 'unknown';
    default:
      return String(schema.type);
  }
}

/** The value schema of a map-like object (`Type.Record`), if it is one. */
function recordValue(schema: JsonSchema): JsonSchema | undefined {
  if (schema.properties && Object.keys(schema.properties).length > 0) return undefined;
  const patterns = schema.patternProperties ? Object.values(schema.patternProperties) : [];
  if (patterns.length === 1) return patterns[0];
  return isObject(schema.additionalProperties) ? schema.additionalProperties : undefined;
}

/** Human-readable limits: `≥ 1`, `0–65535`, `non-empty`, `at least 2 items`. */
export function constraintsOf(schema: JsonSchema): string {
  const out: string[] = [];
  const num = (k: string) => (typeof schema[k] === 'number' ? (schema[k] as number) : undefined);
  const min = num('minimum');
  const max = num('maximum');
  if (min !== undefined && max !== undefined) out.push(`${min}–${max}`);
  else if (min !== undefined) out.push(`≥ ${min}`);
  else if (max !== undefined) out.push(`≤ ${max}`);
  if (num('exclusiveMinimum') !== undefined) out.push(`> ${num('exclusiveMinimum')}`);
  if (num('exclusiveMaximum') !== undefined) out.push(`< ${num('exclusiveMaximum')}`);
  const minLength = num('minLength');
  if (minLength === 1) out.push('non-empty');
  else if (minLength !== undefined) out.push(`at least ${minLength} characters`);
  if (num('maxLength') !== undefined) out.push(`at most ${num('maxLength')} characters`);
  if (num('minItems') !== undefined)
    out.push(`at least ${num('minItems')} item${num('minItems') === 1 ? '' : 's'}`);
  if (num('maxItems') !== undefined) out.push(`at most ${num('maxItems')} items`);
  if (typeof schema['format'] === 'string') out.push(`format: ${schema['format']}`);
  if (typeof schema['pattern'] === 'string') out.push(`pattern: \`${schema['pattern']}\``);
  return out.join(', ');
}

/** The object schema a setting's children live in, and the path segment that leads there. */
function childrenOf(schema: JsonSchema): { schema: JsonSchema; segment: string } | undefined {
  if (schema.properties && Object.keys(schema.properties).length > 0) return { schema, segment: '' };
  const items = schema.items;
  if (schema.type === 'array' && isObject(items) && !Array.isArray(items)) {
    const inner = childrenOf(items);
    return inner ? { schema: inner.schema, segment: `[]${inner.segment}` } : undefined;
  }
  const value = schema.type === 'object' ? recordValue(schema) : undefined;
  if (value) {
    const inner = childrenOf(value);
    return inner ? { schema: inner.schema, segment: `.<key>${inner.segment}` } : undefined;
  }
  return undefined;
}

/** One row per setting of an object schema, depth first, in declaration order. */
export function settingRows(schema: JsonSchema, prefix = ''): SettingRow[] {
  const rows: SettingRow[] = [];
  const required = new Set(schema.required ?? []);
  for (const [key, prop] of Object.entries(schema.properties ?? {})) {
    if (key.startsWith('$')) continue; // `$schema` and friends are for editors
    const path = prefix === '' ? key : `${prefix}.${key}`;
    rows.push({
      path,
      type: typeName(prop),
      constraints: constraintsOf(prop),
      default: 'default' in prop ? JSON.stringify(prop.default) : undefined,
      required: required.has(key) && !('default' in prop),
      description: prop.description ?? '',
    });
    const children = childrenOf(prop);
    if (children) rows.push(...settingRows(children.schema, `${path}${children.segment}`));
  }
  return rows;
}

/** Text safe inside a Markdown table cell: no line breaks, pipes escaped (also inside code spans, as GFM wants). */
export function cell(text: string): string {
  return text.replace(/\s*\r?\n\s*/g, ' ').replace(/\|/g, '\\|');
}

function code(text: string): string {
  return `\`${text}\``;
}

function typeCell(row: SettingRow): string {
  return cell(row.constraints === '' ? code(row.type) : `${code(row.type)} (${row.constraints})`);
}

/**
 * A Markdown table with its columns padded to equal width, as the project's
 * formatter (Biome) writes tables, so generated pages pass `npm run lint`.
 */
export function markdownTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const width = (text: string) => [...text].length;
  const widths = header.map((h, i) => Math.max(3, width(h), ...rows.map((r) => width(r[i] ?? ''))));
  const line = (cells: readonly string[]) =>
    `| ${widths.map((w, i) => (cells[i] ?? '') + ' '.repeat(w - width(cells[i] ?? ''))).join(' | ')} |`;
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** A table of plugin settings: key, type, default, required, description. */
export function pluginSettingsTable(rows: readonly SettingRow[]): string {
  return markdownTable(
    ['Key', 'Type', 'Default', 'Required', 'Description'],
    rows.map((r) => [
      cell(code(r.path)),
      typeCell(r),
      r.default === undefined ? '—' : cell(code(r.default)),
      r.required ? 'yes' : 'no',
      cell(r.description),
    ]),
  );
}

/** A table of core settings: key path, type, default, description (required ones say so). */
export function coreSettingsTable(rows: readonly SettingRow[]): string {
  return markdownTable(
    ['Key', 'Type', 'Default', 'Description'],
    rows.map((r) => [
      cell(code(r.path)),
      typeCell(r),
      r.default === undefined ? '—' : cell(code(r.default)),
      cell(r.required ? `**Required.** ${r.description}` : r.description),
    ]),
  );
}

/** Settings without a description (they make poor docs): their paths. */
export function undocumented(rows: readonly SettingRow[]): string[] {
  return rows.filter((r) => r.description.trim() === '').map((r) => r.path);
}
