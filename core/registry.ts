/**
 * Extension points: verbs, MAIL/RCPT parameters and services that plugins
 * register. The core consults the registry; it never names an extension.
 */
import { Errors } from './errors.ts';
import type { ParamDefinition, Services, VerbDefinition } from './plugin.ts';

interface Owned<T> {
  readonly owner: string;
  readonly def: T;
}

export class Registry {
  readonly #verbs = new Map<string, Owned<VerbDefinition>>();
  readonly #mailParams = new Map<string, Owned<ParamDefinition>>();
  readonly #rcptParams = new Map<string, Owned<ParamDefinition>>();
  readonly #services = new Map<string, Owned<unknown>>();
  /** `longestLine`'s answer for the current registrations and base (cleared when they change). */
  #longest: { base: number; octets: number } | undefined;

  addVerb(owner: string, def: VerbDefinition): void {
    const name = def.name.toUpperCase();
    const existing = this.#verbs.get(name);
    if (existing) throw Errors.verbConflict(name, existing.owner, owner);
    this.#verbs.set(name, { owner, def });
    this.#longest = undefined;
  }

  verb(name: string): VerbDefinition | undefined {
    return this.#verbs.get(name)?.def;
  }

  verbOwner(name: string): string | undefined {
    return this.#verbs.get(name)?.owner;
  }

  addParam(owner: string, def: ParamDefinition): void {
    const name = def.name.toUpperCase();
    const map = def.command === 'MAIL' ? this.#mailParams : this.#rcptParams;
    const existing = map.get(name);
    if (existing) throw Errors.paramConflict(`${def.command} ${name}`, existing.owner, owner);
    map.set(name, { owner, def });
    this.#longest = undefined;
  }

  param(command: 'MAIL' | 'RCPT', name: string): ParamDefinition | undefined {
    return (command === 'MAIL' ? this.#mailParams : this.#rcptParams).get(name)?.def;
  }

  /**
   * The longest command line anything registered allows, given the core's
   * limit `base` (RFC 5321 4.5.3.1.4): a verb's own `maxLineLength`, or MAIL /
   * RCPT carrying every parameter registered for it. Sizes the line reader;
   * each command is then held to its own limit (`verbLineLimit`, `paramsLineLimit`).
   */
  longestLine(base: number): number {
    if (this.#longest?.base === base) return this.#longest.octets;
    let octets =
      base + Math.max(paramsLength(this.#mailParams.values()), paramsLength(this.#rcptParams.values()));
    for (const { def } of this.#verbs.values()) octets = Math.max(octets, def.maxLineLength ?? 0);
    this.#longest = { base, octets };
    return octets;
  }

  /** The octets a line of registered verb `def` may have, given the core's limit `base`. */
  verbLineLimit(def: VerbDefinition, base: number): number {
    return Math.max(base, def.maxLineLength ?? 0);
  }

  /** The octets a MAIL or RCPT line carrying `params` may have, given the core's limit `base`. */
  paramsLineLimit(command: 'MAIL' | 'RCPT', params: Iterable<string>, base: number): number {
    let octets = base;
    for (const key of params) octets += Math.max(0, this.param(command, key)?.lineLength ?? 0);
    return octets;
  }

  provide<K extends keyof Services>(owner: string, key: K, value: Services[K]): void {
    const existing = this.#services.get(key as string);
    if (existing) throw Errors.serviceConflict(key as string, existing.owner, owner);
    this.#services.set(key as string, { owner, def: value });
  }

  service<K extends keyof Services>(key: K): Services[K] | undefined {
    return this.#services.get(key as string)?.def as Services[K] | undefined;
  }

  /** Copy what `owner` registered in `from` (a config reload carrying a plugin over unchanged). */
  copyOwned(from: Registry, owner: string): void {
    const pairs = [
      [from.#verbs, this.#verbs],
      [from.#mailParams, this.#mailParams],
      [from.#rcptParams, this.#rcptParams],
      [from.#services, this.#services],
    ] as const;
    for (const [source, target] of pairs) {
      for (const [key, entry] of source as Map<string, Owned<unknown>>) {
        if (entry.owner !== owner) continue;
        const existing = (target as Map<string, Owned<unknown>>).get(key);
        if (existing) throw Errors.serviceConflict(key, existing.owner, owner);
        (target as Map<string, Owned<unknown>>).set(key, entry);
      }
    }
    this.#longest = undefined;
  }
}

function paramsLength(defs: Iterable<Owned<ParamDefinition>>): number {
  let octets = 0;
  for (const { def } of defs) octets += Math.max(0, def.lineLength ?? 0);
  return octets;
}
