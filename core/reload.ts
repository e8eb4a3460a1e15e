/**
 * What a config reload may change, decided before anything changes: which
 * plugin instances are carried over, replaced, added or dropped, which
 * listeners are kept, reopened, opened or closed, and every reason to refuse.
 * The server then applies the plan (see `MailServer.reload`).
 */
import { isDeepStrictEqual } from 'node:util';
import type { CoreConfig, ListenerConfig, PluginEntry } from './config-schema.ts';
import type { LoadedPlugin } from './generation.ts';
import type { PluginDefinition } from './plugin.ts';

/** A plugin entry resolved and validated, not yet registered. */
export interface PreparedPlugin {
  readonly id: string;
  readonly def: PluginDefinition;
  /** The plugin's settings, validated, with defaults, frozen. */
  readonly config: unknown;
  readonly entry: PluginEntry | undefined;
  /** What a reload compares to tell an unchanged entry (see `LoadedPlugin.entryKey`). */
  readonly key: string;
  readonly index: number;
}

export interface ReloadPlan {
  /** Why the reload is refused (empty: it can be applied). */
  readonly errors: string[];
  /** Instances carried over unchanged, by id. */
  readonly carry: Map<string, LoadedPlugin>;
  readonly plugins: { kept: string[]; added: string[]; replaced: string[]; removed: string[] };
  readonly listeners: {
    kept: string[];
    /** Settings changed: closed and opened again. */
    reopened: string[];
    /** Gone from the new configuration. */
    closed: string[];
  };
}

/** Core settings a running server cannot take up: where they live, and why. */
const FIXED: ReadonlyArray<readonly [keyof CoreConfig, string]> = [
  ['hostname', 'plugins and queued messages hold the host name the server started with'],
  ['dns', 'every plugin holds the resolver built at start'],
  ['log', 'the logger is made once, at start'],
];

export function planReload(input: {
  readonly old: {
    readonly config: Readonly<CoreConfig>;
    readonly plugins: readonly LoadedPlugin[];
    readonly dataDir: string;
  };
  readonly config: CoreConfig;
  /** The new `dataDir`, resolved. */
  readonly dataDir: string;
  readonly prepared: readonly PreparedPlugin[];
}): ReloadPlan {
  const { old, config, prepared } = input;
  const errors: string[] = [];
  const restart = 'cannot change while the server runs; restart needed';
  if (input.dataDir !== old.dataDir) errors.push(`/dataDir: ${restart} (the queue and spool live there)`);
  for (const [key, why] of FIXED) {
    if (!isDeepStrictEqual(config[key], old.config[key])) errors.push(`/${key}: ${restart} (${why})`);
  }
  const carry = new Map<string, LoadedPlugin>();
  const plugins = {
    kept: [] as string[],
    added: [] as string[],
    replaced: [] as string[],
    removed: [] as string[],
  };
  const before = new Map(old.plugins.map((p) => [p.id, p]));
  for (const p of prepared) {
    const was = before.get(p.id);
    if (!was) {
      plugins.added.push(p.id);
      continue;
    }
    if (was.def === p.def && was.entryKey === p.key) {
      carry.set(p.id, was);
      plugins.kept.push(p.id);
    } else if (was.def.reloadable && p.def.reloadable) {
      plugins.replaced.push(p.id);
    } else {
      errors.push(
        `/plugins/${p.index}: ${p.id}: ${was.def === p.def ? 'settings changed' : 'plugin changed'}; restart needed (it cannot be replaced while the server runs)`,
      );
    }
  }
  const ids = new Set(prepared.map((p) => p.id));
  for (const was of old.plugins) {
    if (ids.has(was.id)) continue;
    if (was.def.reloadable) plugins.removed.push(was.id);
    else
      errors.push(
        `/plugins: ${was.id}: removed; restart needed (it cannot be dropped while the server runs)`,
      );
  }
  const listeners = { kept: [] as string[], reopened: [] as string[], closed: [] as string[] };
  const oldListeners = new Map(old.config.listeners.map((l) => [l.name, l]));
  for (const l of config.listeners) {
    const was = oldListeners.get(l.name);
    if (!was) continue;
    if (isDeepStrictEqual(withoutComment(was), withoutComment(l))) listeners.kept.push(l.name);
    else listeners.reopened.push(l.name);
  }
  const names = new Set(config.listeners.map((l) => l.name));
  for (const l of old.config.listeners) if (!names.has(l.name)) listeners.closed.push(l.name);
  return { errors, carry, plugins, listeners };
}

/** A listener's settings, without the `$comment` the server ignores (editing it does not reopen the socket). */
function withoutComment(listener: ListenerConfig): Omit<ListenerConfig, '$comment'> {
  const { $comment: _comment, ...settings } = listener;
  return settings;
}

/**
 * The key a reload compares to tell an unchanged plugin entry: its JSON with
 * object keys sorted, so the same settings written in another order are the same.
 */
export function entryKey(entry: unknown): string {
  return JSON.stringify(entry, (_key, value: unknown) =>
    value !== null && typeof value === 'object' && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : value,
  );
}
