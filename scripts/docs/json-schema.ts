/**
 * The slice of JSON Schema (draft-07, as TypeBox emits it) the docs generator
 * reads, and a walker over every subschema of a schema.
 */

export interface JsonSchema {
  readonly [keyword: string]: unknown;
  readonly type?: string | readonly string[];
  readonly description?: string;
  readonly default?: unknown;
  readonly const?: unknown;
  readonly enum?: readonly unknown[];
  readonly properties?: Readonly<Record<string, JsonSchema>>;
  readonly patternProperties?: Readonly<Record<string, JsonSchema>>;
  readonly additionalProperties?: boolean | JsonSchema;
  readonly required?: readonly string[];
  readonly items?: JsonSchema | readonly JsonSchema[];
  readonly anyOf?: readonly JsonSchema[];
  readonly oneOf?: readonly JsonSchema[];
  readonly allOf?: readonly JsonSchema[];
}

/** A plain, mutable deep copy (drops anything that is not JSON, such as TypeBox's symbols). */
export function cloneSchema<T>(schema: T): T {
  return JSON.parse(JSON.stringify(schema)) as T;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Keywords whose value is one subschema. */
const SINGLE = [
  'additionalProperties',
  'additionalItems',
  'contains',
  'not',
  'if',
  'then',
  'else',
  'propertyNames',
];
/** Keywords whose value is a list of subschemas. */
const LIST = ['anyOf', 'oneOf', 'allOf'];
/** Keywords whose value maps names to subschemas (the names are data, not keywords). */
const MAP = ['properties', 'patternProperties', 'definitions', '$defs', 'dependencies'];

/**
 * Call `visit` on `schema` and on every subschema below it, parents first.
 * Values of data keywords (`default`, `examples`, `const`, `enum`) are never
 * entered, so a setting that happens to be called `default` is safe.
 */
export function forEachSchema(schema: unknown, visit: (node: Record<string, unknown>) => void): void {
  if (!isObject(schema)) return;
  visit(schema);
  for (const key of SINGLE) forEachSchema(schema[key], visit);
  for (const key of LIST) {
    const list = schema[key];
    if (Array.isArray(list)) for (const s of list) forEachSchema(s, visit);
  }
  const items = schema['items'];
  if (Array.isArray(items)) for (const s of items) forEachSchema(s, visit);
  else forEachSchema(items, visit);
  for (const key of MAP) {
    const map = schema[key];
    if (isObject(map)) for (const s of Object.values(map)) forEachSchema(s, visit);
  }
}
