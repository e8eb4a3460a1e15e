/**
 * Secrets out of the effective configuration. A setting is secret when its
 * schema says `writeOnly: true` (the JSON Schema annotation for "may be given,
 * never returned": a plugin marks its password or key fields so), or when its
 * key is one of the usual secret names (`pass`, `password`, `secret`, `token`,
 * `apiKey`, `privateKey`, ...) and its value is a string or a number, so a
 * plugin that forgot the annotation still does not leak (an object under such
 * a name, like the `pass` entry of an action map, is structure: its members
 * are looked at one by one). In any string that is a URL, the password of its
 * user info and query parameters with a secret name are hidden
 * (`postgres://mail:[redacted]@db/mail`). Values are replaced by
 * `"[redacted]"`; paths to files that hold secrets are not secrets and are
 * shown.
 */
import type { TSchema } from 'typebox';

export const REDACTED = '[redacted]';
const SECRET_KEY =
  /^(pass|passwd|password|passphrase|secret|token|api[-_]?key|private[-_]?key|client[-_]?secret)$/i;

type Schema = Record<string, unknown>;

function asSchema(s: unknown): Schema | undefined {
  return typeof s === 'object' && s !== null ? (s as Schema) : undefined;
}

/** The schemas that may describe a value: the schema itself and its anyOf/oneOf/allOf branches. */
function branches(s: Schema | undefined): Schema[] {
  if (!s) return [];
  const out = [s];
  for (const k of ['anyOf', 'oneOf', 'allOf']) {
    const list = s[k];
    if (Array.isArray(list)) for (const b of list) out.push(...branches(asSchema(b)));
  }
  return out;
}

function isSecret(key: string, value: unknown, schemas: readonly Schema[]): boolean {
  if (schemas.some((s) => s['writeOnly'] === true)) return true;
  return (typeof value === 'string' || typeof value === 'number') && SECRET_KEY.test(key);
}

/** `scheme://user:PASSWORD@`: the password (up to the authority's last `@`). */
const URL_PASSWORD = /^([a-z][a-z0-9+.-]*:\/\/[^/?#:@\s]*):[^/?#\s]*@/i;
/** A query parameter `NAME=VALUE` of a URL. */
const QUERY_PARAM = /([?&])([^=&#]+)=([^&#]*)/g;

/** A string with the secrets of a URL in it hidden (other strings unchanged). */
function redactUrl(text: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return text;
  return text
    .replace(URL_PASSWORD, `$1:${REDACTED}@`)
    .replace(QUERY_PARAM, (all, sep: string, name: string) =>
      SECRET_KEY.test(name) ? `${sep}${name}=${REDACTED}` : all,
    );
}

function childSchemas(schemas: readonly Schema[], key: string | number): Schema[] {
  const out: Schema[] = [];
  for (const s of schemas) {
    if (typeof key === 'number') {
      const items = asSchema(s['items']);
      if (items) out.push(...branches(items));
      continue;
    }
    const props = asSchema(s['properties']);
    const own = asSchema(props?.[key]);
    if (own) out.push(...branches(own));
    else {
      const extra = asSchema(s['additionalProperties']);
      if (extra) out.push(...branches(extra));
      const patterns = asSchema(s['patternProperties']);
      for (const [re, p] of Object.entries(patterns ?? {})) {
        if (new RegExp(re, 'u').test(key)) out.push(...branches(asSchema(p)));
      }
    }
  }
  return out;
}

/** A copy of `value` with every secret setting replaced by `"[redacted]"`. */
export function redact(value: unknown, schema: TSchema | undefined): unknown {
  return walk(value, branches(asSchema(schema)));
}

function walk(value: unknown, schemas: readonly Schema[]): unknown {
  if (Array.isArray(value)) return value.map((v, i) => walk(v, childSchemas(schemas, i)));
  if (typeof value === 'string') return redactUrl(value);
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const child = childSchemas(schemas, k);
    out[k] = v !== undefined && isSecret(k, v, child) ? REDACTED : walk(v, child);
  }
  return out;
}
