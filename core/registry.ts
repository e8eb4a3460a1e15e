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
  #extraLineLength = 0;

  addVerb(owner: string, def: VerbDefinition): void {
    const name = def.name.toUpperCase();
    const existing = this.#verbs.get(name);
    if (existing) throw Errors.verbConflict(name, existing.owner, owner);
    this.#verbs.set(name, { owner, def });
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
  }

  param(command: 'MAIL' | 'RCPT', name: string): ParamDefinition | undefined {
    return (command === 'MAIL' ? this.#mailParams : this.#rcptParams).get(name)?.def;
  }

  extendLineLength(octets: number): void {
    this.#extraLineLength += Math.max(0, Math.floor(octets));
  }

  get extraLineLength(): number {
    return this.#extraLineLength;
  }

  provide<K extends keyof Services>(owner: string, key: K, value: Services[K]): void {
    const existing = this.#services.get(key as string);
    if (existing) throw Errors.serviceConflict(key as string, existing.owner, owner);
    this.#services.set(key as string, { owner, def: value });
  }

  service<K extends keyof Services>(key: K): Services[K] | undefined {
    return this.#services.get(key as string)?.def as Services[K] | undefined;
  }
}
