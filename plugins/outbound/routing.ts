/**
 * Which delivery jobs a delivery plugin claims: those the queue routed to it
 * by instance name, and unrouted jobs whose destination matches its domains.
 */
import type { DeliveryJob } from '../../core/types.ts';

/**
 * A matcher for domain patterns: `example.com` (exact), `*.example.com` (any
 * subdomain, not the domain itself) or `*` (everything). Case-insensitive.
 */
export function domainMatcher(patterns: readonly string[]): (domain: string) => boolean {
  const exact = new Set<string>();
  const suffixes: string[] = [];
  let any = false;
  for (const raw of patterns) {
    const p = raw.trim().toLowerCase().replace(/\.$/, '');
    if (p === '*') any = true;
    else if (p.startsWith('*.')) suffixes.push(p.slice(1));
    else if (p !== '') exact.add(p);
  }
  return (domain) => {
    if (any) return true;
    const d = domain.toLowerCase().replace(/\.$/, '');
    return exact.has(d) || suffixes.some((s) => d.endsWith(s) && d.length > s.length);
  };
}

/** Whether the plugin instance `name` should deliver `job`. */
export function claims(name: string, matches: (domain: string) => boolean, job: DeliveryJob): boolean {
  if (job.route !== undefined) return job.route === name;
  return matches(job.destination);
}
