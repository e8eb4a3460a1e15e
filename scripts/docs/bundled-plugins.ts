/** Finds the bundled plugins (`plugins/<name>/index.ts`) and imports their definitions. */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { JsonSchema } from './json-schema.ts';

export interface BundledPlugin {
  /** The folder name: what a config's `plugin` key says. */
  readonly name: string;
  readonly description: string;
  readonly schema: JsonSchema;
}

function isDefinition(value: unknown): value is { name: string; description?: unknown; schema: JsonSchema } {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v['name'] === 'string' && typeof v['schema'] === 'object' && v['schema'] !== null;
}

/** Every bundled plugin, sorted by name. Throws naming the plugin when one cannot be imported. */
export async function bundledPlugins(pluginsDir: string): Promise<BundledPlugin[]> {
  const folders = (await readdir(pluginsDir, { withFileTypes: true }))
    .filter((d) => d.isDirectory() && existsSync(join(pluginsDir, d.name, 'index.ts')))
    .map((d) => d.name)
    .sort();
  const found: BundledPlugin[] = [];
  for (const name of folders) {
    const file = join(pluginsDir, name, 'index.ts');
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
    } catch (err) {
      throw new Error(`plugins/${name}/index.ts cannot be imported: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const def = mod.default;
    if (!isDefinition(def)) {
      throw new Error(`plugins/${name}/index.ts must \`export default definePlugin({ name, schema, ... })\``);
    }
    if (def.name !== name) {
      throw new Error(
        `plugins/${name}/index.ts defines plugin "${def.name}": the name must match its folder`,
      );
    }
    found.push({
      name,
      description: typeof def.description === 'string' ? def.description : '',
      schema: def.schema,
    });
  }
  return found;
}
