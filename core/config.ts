/**
 * Reads and validates `mailframe.json`: the core schema first, then each
 * plugin's own schema. Every error is reported with its JSON pointer (and the
 * plugin's name); start-up is refused while any remain.
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import type { TSchema } from 'typebox';
import { type CoreConfig, CoreConfigSchema } from './config-schema.ts';
import { parseNameServer } from './dns/servers.ts';
import { Errors } from './errors.ts';

export function createAjv(): Ajv {
  return new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true });
}

export function formatErrors(
  errors: readonly ErrorObject[] | null | undefined,
  prefix = '',
  suffix = '',
): string[] {
  const list = errors ?? [];
  // A union of literals fails once per option plus once for the anyOf: report it as one line.
  const choices = new Map<string, unknown[]>();
  for (const e of list) {
    const m = /^(.*)\/anyOf\/\d+\/const$/.exec(e.schemaPath);
    if (e.keyword === 'const' && m) {
      const key = `${e.instancePath}|${m[1]}/anyOf`;
      const values = choices.get(key) ?? [];
      values.push((e.params as { allowedValue?: unknown }).allowedValue);
      choices.set(key, values);
    }
  }
  const out: string[] = [];
  for (const e of list) {
    let where = `${prefix}${e.instancePath}` || '/';
    let msg = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties') {
      where = `${where === '/' ? '' : where}/${String((e.params as { additionalProperty?: string }).additionalProperty)}`;
      msg = 'is not a known setting';
    } else if (e.keyword === 'anyOf' && choices.has(`${e.instancePath}|${e.schemaPath}`)) {
      const values = choices.get(`${e.instancePath}|${e.schemaPath}`) ?? [];
      msg = `must be one of ${values.map((v) => JSON.stringify(v)).join(', ')}`;
    } else if (e.keyword === 'const' && /\/anyOf\/\d+\/const$/.test(e.schemaPath)) {
      continue;
    } else if (e.keyword === 'const' || e.keyword === 'enum') {
      const allowed = (e.params as { allowedValues?: unknown[]; allowedValue?: unknown }).allowedValues ?? [
        (e.params as { allowedValue?: unknown }).allowedValue,
      ];
      msg = `must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}`;
    }
    out.push(`${where}: ${msg}${suffix}`);
  }
  return out;
}

/** Validate the core part; fills in defaults. Returns errors instead of throwing. */
export function validateCoreConfig(ajv: Ajv, raw: unknown): { config: CoreConfig; errors: string[] } {
  const validate = ajv.compile<CoreConfig>(CoreConfigSchema);
  const copy = structuredClone(raw ?? {});
  if (validate(copy))
    return { config: copy, errors: [...listenerErrors(copy.listeners), ...dnsErrors(copy.dns)] };
  // Collapse the noise a union produces into one line per pointer.
  const errors = [...new Set(formatErrors(validate.errors))];
  return { config: copy as CoreConfig, errors };
}

/** What the schema does not say about listeners: no LMTP on port 25. */
function listenerErrors(listeners: CoreConfig['listeners']): string[] {
  const errors: string[] = [];
  for (const [i, l] of listeners.entries()) {
    // RFC 2033 section 1: LMTP MUST NOT be used on TCP port 25.
    if (l.protocol === 'lmtp' && l.port === 25)
      errors.push(`/listeners/${i}/port: LMTP must not use port 25`);
  }
  return errors;
}

/** What the schema does not say about DNS servers: each is an IP address with an optional port. */
function dnsErrors(dns: CoreConfig['dns']): string[] {
  const errors: string[] = [];
  for (const [i, s] of (dns.servers ?? []).entries()) {
    if (!parseNameServer(s))
      errors.push(
        `/dns/servers/${i}: must be an IP address with an optional port, e.g. "127.0.0.1:5353" or "[::1]:53"`,
      );
  }
  if (dns.minTtl > dns.maxTtl) errors.push('/dns/minTtl: must not exceed /dns/maxTtl');
  return errors;
}

/** Validate one plugin's config against its schema; fills in defaults. */
export function validatePluginConfig(
  ajv: Ajv,
  schema: TSchema,
  raw: unknown,
  pointer: string,
  pluginName: string,
): { config: unknown; errors: string[] } {
  const validate = ajv.compile(schema);
  const copy = structuredClone(raw ?? {});
  if (validate(copy)) return { config: copy, errors: [] };
  return {
    config: copy,
    errors: [...new Set(formatErrors(validate.errors, pointer, ` (plugin ${pluginName})`))],
  };
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** Read a JSON config file; relative paths in it resolve against its directory. */
export async function readConfigFile(file: string): Promise<{ raw: unknown; baseDir: string }> {
  const path = resolve(file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw Errors.configRead(path, err);
  }
  try {
    return { raw: JSON.parse(text), baseDir: dirname(path) };
  } catch (err) {
    throw Errors.configInvalid([`${path}: not valid JSON: ${(err as Error).message}`]);
  }
}
