/**
 * What goes to rspamd besides the message (our check results as its own
 * symbols) and what comes back into the message (the `X-Spamd-Result` field).
 */
import type { RecordedResult } from '../policy/policy.ts';
import type { RspamdAnswer } from './client.ts';

/** rspamd's symbol for each SPF, DKIM and DMARC result (its policies group). */
const SYMBOLS: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  spf: {
    pass: 'R_SPF_ALLOW',
    fail: 'R_SPF_FAIL',
    softfail: 'R_SPF_SOFTFAIL',
    neutral: 'R_SPF_NEUTRAL',
    none: 'R_SPF_NA',
    temperror: 'R_SPF_DNSFAIL',
    permerror: 'R_SPF_PERMFAIL',
  },
  dkim: {
    pass: 'R_DKIM_ALLOW',
    fail: 'R_DKIM_REJECT',
    none: 'R_DKIM_NA',
    temperror: 'R_DKIM_TEMPFAIL',
    permerror: 'R_DKIM_PERMFAIL',
  },
  dmarc: {
    pass: 'DMARC_POLICY_ALLOW',
    none: 'DMARC_NA',
    temperror: 'DMARC_DNSFAIL',
    permerror: 'DMARC_BAD_POLICY',
  },
};

const DMARC_FAIL: Readonly<Record<string, string>> = {
  reject: 'DMARC_POLICY_REJECT',
  quarantine: 'DMARC_POLICY_QUARANTINE',
  none: 'DMARC_POLICY_SOFTFAIL',
};

/**
 * The rspamd symbols that say what our checks found (recorded `spf`, `dkim`
 * and `dmarc` results), for the `symbols` of the `Settings` request header.
 */
export function resultSymbols(results: readonly RecordedResult[]): string[] {
  const out = new Set<string>();
  for (const { check, result } of results) {
    const value = result.result;
    if (check === 'dmarc' && value === 'fail') {
      const policy = (result as { readonly policy?: unknown }).policy;
      out.add(DMARC_FAIL[typeof policy === 'string' ? policy : 'none'] ?? 'DMARC_POLICY_SOFTFAIL');
      continue;
    }
    const symbol = SYMBOLS[check]?.[value];
    if (symbol !== undefined) out.add(symbol);
  }
  return [...out];
}

/** Printable ASCII only: rspamd's option strings come from the message and may hold anything. */
function clean(text: string, max: number): string {
  const t = text.replace(/[^\x20-\x7e]/g, '?').replace(/[[\]]/g, '');
  return t.length > max ? `${t.slice(0, max)}...` : t;
}

/**
 * `X-Spamd-Result: default: True [7.50 / 15.00];` then one `SYMBOL(score)[options]`
 * per folded line, by name, as rspamd's milter headers write it.
 */
export function spamdResultField(answer: RspamdAnswer): string {
  const spam = answer.action !== 'no action' && answer.action !== 'greylist';
  const head = `X-Spamd-Result: default: ${spam ? 'True' : 'False'} [${answer.score.toFixed(2)} / ${answer.requiredScore.toFixed(2)}]`;
  const symbols = [...answer.symbols]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((s) => {
      const options = s.options?.length ? `[${clean(s.options.join(','), 100)}]` : '';
      return `${clean(s.name, 64)}(${s.score.toFixed(2)})${options}`;
    });
  return [head, ...symbols].join(';\r\n\t');
}
