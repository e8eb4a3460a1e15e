/**
 * Finds plugin definitions: given values first, then files (`./x.ts`, `/abs`),
 * then bundled plugins (`plugins/<name>/index.ts`, or `index.js` in the built
 * package), then npm packages.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Errors } from './errors.ts';
import type { PluginDefinition } from './plugin.ts';

export const BUNDLED_PLUGINS_DIR = fileURLToPath(new URL('../plugins/', import.meta.url));
/** `index.ts` when running from the sources, `index.js` when running the build (dist/) from npm. */
const BUNDLED_INDEX = import.meta.url.endsWith('.ts') ? 'index.ts' : 'index.js';

function isDefinition(value: unknown): value is PluginDefinition {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v['name'] === 'string' && typeof v['register'] === 'function' && typeof v['schema'] === 'object'
  );
}

async function importDefinition(name: string, url: string): Promise<PluginDefinition> {
  const mod = (await import(url)) as { default?: unknown; plugin?: unknown };
  const def = mod.default ?? mod.plugin;
  if (!isDefinition(def)) {
    throw Errors.pluginInvalid(
      name,
      'its module must `export default definePlugin({ name, schema, register })`',
    );
  }
  return def;
}

export function bundledPluginPath(name: string): string | undefined {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) return undefined;
  const file = join(BUNDLED_PLUGINS_DIR, name, BUNDLED_INDEX);
  return existsSync(file) ? file : undefined;
}

export async function resolvePlugin(
  name: string,
  baseDir: string,
  given: ReadonlyMap<string, PluginDefinition>,
): Promise<PluginDefinition> {
  const known = given.get(name);
  if (known) return known;
  if (name.startsWith('.') || isAbsolute(name)) {
    const file = resolve(baseDir, name);
    if (!existsSync(file)) throw Errors.pluginNotFound(name, [file]);
    return importDefinition(name, pathToFileURL(file).href);
  }
  const bundled = bundledPluginPath(name);
  if (bundled) return importDefinition(name, pathToFileURL(bundled).href);
  let resolved: string;
  try {
    resolved = createRequire(join(baseDir, 'mailframe.json')).resolve(name);
  } catch (err) {
    throw Errors.pluginNotFound(
      name,
      [`bundled plugins/${name}`, `npm package "${name}" from ${baseDir}`],
      err,
    );
  }
  return importDefinition(name, pathToFileURL(resolved).href);
}
