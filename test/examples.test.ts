/**
 * Every example configuration starts: the core settings and every plugin's
 * settings validate and every plugin loads. Also checked against the editor
 * schema (config.schema.json), which must not reject what the server accepts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAjv } from '../core/config.ts';
import { MailServer } from '../core/server.ts';
import { freshSchema, usePostgres } from './helpers/postgres.ts';

const root = join(import.meta.dirname, '..');
const examplesDir = join(root, 'examples');

const configs = readdirSync(examplesDir, { recursive: true, encoding: 'utf8' })
  .filter((f) => f === 'mailframe.json' || f.endsWith('/mailframe.json'))
  .map((f) => join(examplesDir, f))
  .sort();

/** The test database, started only if an example uses queue-pg (examples/cluster). */
const database = usePostgres();

/** A copy of `config` whose queue-pg and policy-store-pg entries point at the test database, in a schema of their own. */
async function onTestDatabase(config: Record<string, unknown>): Promise<Record<string, unknown>> {
  const plugins = config['plugins'] as Array<{ plugin: string; config?: Record<string, unknown> }>;
  if (!plugins.some((p) => p.plugin === 'queue-pg')) return config;
  const url = await database();
  // The queue and the policy state share one schema, as in the examples.
  const schema = freshSchema();
  return {
    ...config,
    plugins: plugins.map((p) =>
      p.plugin === 'queue-pg' || p.plugin === 'policy-store-pg'
        ? { ...p, config: { ...p.config, connectionString: url, schema } }
        : p,
    ),
  };
}

let dataDir: string | undefined;
afterEach(async () => {
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  dataDir = undefined;
});

describe('example configurations', () => {
  it('include the embedded default', () => {
    expect(configs).toContain(join(examplesDir, 'default', 'mailframe.json'));
  });

  const editorSchema = JSON.parse(readFileSync(join(root, 'config.schema.json'), 'utf8')) as object;
  const validateForEditors = createAjv().compile(editorSchema);

  for (const file of configs) {
    const name = relative(root, file);
    const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;

    it(`${name} validates and loads its plugins`, async () => {
      dataDir = await mkdtemp(join(tmpdir(), 'mailframe-examples-'));
      const config = await onTestDatabase({ ...structuredClone(raw), dataDir });
      const server = await MailServer.create({ config, baseDir: dirname(file) });
      await server.close(0);
    });

    it(`${name} passes the editor schema it points at`, () => {
      expect(raw['$schema']).toBe(relative(dirname(file), join(root, 'config.schema.json')));
      validateForEditors(structuredClone(raw));
      expect(validateForEditors.errors ?? []).toEqual([]);
    });
  }
});
