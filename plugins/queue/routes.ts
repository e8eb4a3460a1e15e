/**
 * The routing table: which delivery plugin instance gets a destination.
 *
 *   routes: [
 *     { domains: ['example.com', '*.example.org'], via: 'local-maildir' },
 *     { domains: '*', via: 'smarthost' },
 *   ]
 *
 * The first matching rule wins and sets `DeliveryJob.route`. `example.com`
 * matches that domain only; `*.example.org` matches its subdomains (not
 * `example.org` itself); `*` matches everything. No match: `route` is
 * undefined and any delivery plugin that serves the domain may claim the job.
 */
import { domainToASCII } from 'node:url';

export interface RouteRule {
  readonly domains: '*' | readonly string[];
  readonly via: string;
}

export type Router = (destination: string) => string | undefined;

type Matcher = (domain: string) => boolean;

function asciiLower(name: string): string {
  if (name.startsWith('[')) return name.toLowerCase();
  return (domainToASCII(name) || name).toLowerCase();
}

function compilePattern(pattern: string, where: string): Matcher {
  const p = pattern.trim();
  if (p === '*') return () => true;
  if (p.startsWith('*.')) {
    const suffix = `.${asciiLower(p.slice(2))}`;
    if (suffix.length < 2 || suffix.includes('*')) throw new Error(`${where}: "${pattern}" is not a pattern`);
    return (d) => d.endsWith(suffix) && d.length > suffix.length;
  }
  if (p === '' || p.includes('*')) {
    throw new Error(
      `${where}: "${pattern}" is not a domain or a pattern (write example.com, *.example.com or *)`,
    );
  }
  const exact = asciiLower(p.replace(/\.$/, ''));
  return (d) => d === exact;
}

/** Compile the rules; throws an Error naming the bad rule. */
export function compileRoutes(rules: readonly RouteRule[]): Router {
  const compiled = rules.map((rule, i) => {
    const where = `routes/${i}`;
    const matchers =
      rule.domains === '*'
        ? [() => true]
        : rule.domains.map((d, j) => compilePattern(d, `${where}/domains/${j}`));
    if (matchers.length === 0) throw new Error(`${where}/domains: lists no domain (use "*" for all)`);
    return { via: rule.via, matches: (d: string) => matchers.some((m) => m(d)) };
  });
  return (destination) => {
    const d = destination.toLowerCase();
    return compiled.find((r) => r.matches(d))?.via;
  };
}
