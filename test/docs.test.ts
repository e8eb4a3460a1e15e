/**
 * Generated docs and the editor schema: CI fails when they drift from the
 * schemas (run `npm run docs` to regenerate).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import Type from 'typebox';
import { afterEach, describe, expect, it } from 'vitest';
import { createAjv } from '../core/config.ts';
import { bundledPlugins } from '../scripts/docs/bundled-plugins.ts';
import type { JsonSchema } from '../scripts/docs/json-schema.ts';
import { pluginSettingsTable, settingRows } from '../scripts/docs/schema-table.ts';
import { generateDocs } from '../scripts/docs.ts';

const root = join(import.meta.dirname, '..');

let tmp: string | undefined;
afterEach(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
  tmp = undefined;
});

describe('generated docs', () => {
  it('are up to date with the schemas (run `npm run docs` if this fails)', async () => {
    const { changed, missing } = await generateDocs({ check: true });
    expect({ changed, missing }).toEqual({ changed: [], missing: [] });
  });

  it('--check reports drift, missing pages and pages without markers; writing fixes what it can', async () => {
    tmp = await mkdtemp(join(tmpdir(), 'mailframe-docs-'));
    const names = (await bundledPlugins(join(root, 'plugins'))).map((p) => p.name);
    expect(names).toContain('rcpt-local');

    const before = await generateDocs({ check: true, outDir: tmp });
    expect(before.changed).toEqual(['config.schema.json', 'docs/configuration.md', 'docs/plugins/README.md']);
    expect(before.missing).toEqual(names.map((n) => `docs/plugins/${n}.md`));

    const written = await generateDocs({ check: false, outDir: tmp });
    expect(written.missing).toEqual([]);
    expect(written.changed).toHaveLength(3 + names.length);
    const stub = await readFile(join(tmp, 'docs/plugins/rcpt-local.md'), 'utf8');
    expect(stub).toMatch(/^# rcpt-local\n/);
    expect(stub.replace(/ +\|/g, ' |')).toContain('| `domains` | `string[]` | `["localhost"]` | no |');
    expect(await generateDocs({ check: true, outDir: tmp })).toMatchObject({ changed: [], missing: [] });

    // A hand edit inside the generated table is drift; text outside the markers is the author's.
    const page = join(tmp, 'docs/plugins/rcpt-local.md');
    await writeFile(page, `${stub.replace('`["localhost"]`', '`["example.com"]`')}\nMore prose.\n`);
    expect((await generateDocs({ check: true, outDir: tmp })).changed).toEqual([
      'docs/plugins/rcpt-local.md',
    ]);
    await generateDocs({ check: false, outDir: tmp });
    expect(await readFile(page, 'utf8')).toBe(`${stub}\nMore prose.\n`);

    await writeFile(page, '# rcpt-local\n\nNo markers here.\n');
    const broken = await generateDocs({ check: true, outDir: tmp });
    expect(broken.missing).toEqual(['docs/plugins/rcpt-local.md']);
  });

  it('renders nested settings, literal unions and arrays', () => {
    const schema = Type.Object({
      mode: Type.Union([Type.Literal('a'), Type.Literal('b')], { default: 'a', description: 'Which | one.' }),
      hosts: Type.Array(Type.String(), { description: 'Hosts.' }),
      retry: Type.Object(
        {
          after: Type.Integer({ minimum: 1, description: 'Seconds.' }),
          codes: Type.Optional(Type.Array(Type.Union([Type.Literal(421), Type.Literal(450)]))),
        },
        { description: 'Retry policy.' },
      ),
      routes: Type.Array(Type.Object({ domain: Type.String({ minLength: 1, description: 'Domain.' }) })),
    });
    const lines = pluginSettingsTable(settingRows(schema as unknown as JsonSchema)).split('\n');
    // Columns are padded to one width, as the formatter writes Markdown tables.
    expect(new Set(lines.map((l) => [...l].length)).size).toBe(1);
    expect(lines.map((l) => l.replace(/ +\|/g, ' |').replace(/-{3,}/g, '---'))).toEqual([
      '| Key | Type | Default | Required | Description |',
      '| --- | --- | --- | --- | --- |',
      '| `mode` | `"a" \\| "b"` | `"a"` | no | Which \\| one. |',
      '| `hosts` | `string[]` | — | yes | Hosts. |',
      '| `retry` | `object` | — | yes | Retry policy. |',
      '| `retry.after` | `integer` (≥ 1) | — | yes | Seconds. |',
      '| `retry.codes` | `(421 \\| 450)[]` | — | no | |',
      '| `routes` | `object[]` | — | yes | |',
      '| `routes[].domain` | `string` (non-empty) | — | yes | Domain. |',
    ]);
  });
});

describe('hand-written docs', () => {
  const read = (rel: string) => readFileSync(join(root, rel), 'utf8');

  it('show the tested tutorial plugin and its test verbatim (docs/plugins.md)', () => {
    const guide = read('docs/plugins.md');
    expect(guide).toContain(read('examples/helo-fqdn/index.ts'));
    expect(guide).toContain(read('examples/helo-fqdn/helo-fqdn.test.ts'));
  });

  it("show the README's fifteen-line plugin as tested in examples/block-sender-domains", () => {
    const block = /```ts\n(\/\/ examples\/block-sender-domains\/index\.ts\n[\s\S]*?)```/.exec(
      read('README.md'),
    )?.[1];
    // Same lines; only the order of the import lines may differ (the linter sorts them).
    const lines = (text: string) =>
      text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .sort();
    expect(lines(block ?? '')).toEqual(lines(read('examples/block-sender-domains/index.ts')));
  });

  it('link only to files that exist', () => {
    const pages = ['README.md', 'examples/README.md', ...mdFiles('docs')];
    const broken: string[] = [];
    for (const page of pages) {
      const prose = read(page)
        .replace(/^```[\s\S]*?^```/gm, '')
        .replace(/`[^`\n]*`/g, '');
      for (const [, target] of prose.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (!target || /^[a-z]+:/i.test(target) || target.startsWith('#')) continue;
        const path = join(root, dirname(page), target.split('#')[0] as string);
        if (!existsSync(path)) broken.push(`${page}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
});

function mdFiles(dir: string): string[] {
  return readdirSync(join(root, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.md'))
    .map((f) => join(dir, f));
}

describe('config.schema.json', () => {
  const schema = JSON.parse(readFileSync(join(root, 'config.schema.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  const validate = createAjv().compile(schema);
  const errorsOf = (config: unknown) => {
    validate(structuredClone(config));
    return (validate.errors ?? []).map((e) => `${e.instancePath} ${e.keyword}`);
  };

  it('is a draft-07 schema without $id', () => {
    expect(schema['$schema']).toBe('http://json-schema.org/draft-07/schema#');
    expect(JSON.stringify(schema)).not.toContain('"$id"');
  });

  it('accepts the default example and does not demand settings that have defaults', () => {
    const example = JSON.parse(readFileSync(join(root, 'examples/default/mailframe.json'), 'utf8'));
    expect(errorsOf(example)).toEqual([]);
    expect(errorsOf({})).toEqual([]);
    expect(errorsOf({ listeners: [{ name: 'smtp', port: 25 }] })).toEqual([]);
    expect(errorsOf({ listeners: [{ name: 'smtp' }] })).toContain('/listeners/0 required');
  });

  it("checks each bundled plugin's settings by its name, and leaves other plugins alone", () => {
    expect(errorsOf({ plugins: [{ plugin: 'rcpt-local', config: { domains: 'example.com' } }] })).toContain(
      '/plugins/0/config/domains type',
    );
    expect(errorsOf({ plugins: [{ plugin: 'rcpt-local', config: { domain: ['x'] } }] })).toContain(
      '/plugins/0/config additionalProperties',
    );
    expect(errorsOf({ plugins: [{ plugin: './mine.ts', config: { domains: 'anything' } }] })).toEqual([]);
    const plugin = (schema['properties'] as Record<string, { items: { properties: { plugin: object } } }>)[
      'plugins'
    ]?.items.properties.plugin;
    expect(plugin).toMatchObject({ examples: expect.arrayContaining(['rcpt-local', 'queue-fs']) });
  });
});
