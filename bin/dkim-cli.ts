/**
 * `mailframe dkim keygen --domain D --selector S [--type rsa|ed25519] [--out DIR]`:
 * a new DKIM key pair for `dkim-sign`. The private key goes to
 * `DIR/<selector>._domainkey.<domain>.pem` (mode 0600, never overwritten);
 * the TXT record to publish is printed, in zone-file syntax.
 */
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { generateDkimKeyPair, txtStrings } from '../plugins/dkim-sign/keys.ts';

export interface DkimCliOutput {
  out(text: string): void;
  err(text: string): void;
}

const USAGE =
  'Usage: mailframe dkim keygen --domain DOMAIN --selector SELECTOR [--type rsa|ed25519] [--out DIR]\n';
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const isName = (s: string) => s.split('.').every((l) => LABEL.test(l));

export async function runDkimCli(argv: readonly string[], io: DkimCliOutput): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (err) {
    io.err(`mailframe dkim: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { positionals, values } = parsed;
  const { domain, selector } = values;
  const type = values.type ?? 'rsa';
  if (positionals[0] !== 'keygen' || domain === undefined || selector === undefined) {
    io.err(USAGE);
    return 2;
  }
  if (type !== 'rsa' && type !== 'ed25519') {
    io.err(`mailframe dkim: --type must be rsa or ed25519, not "${type}"\n`);
    return 2;
  }
  if (!isName(domain) || !isName(selector)) {
    io.err('mailframe dkim: --domain and --selector must be DNS names (letters, digits, hyphens, dots)\n');
    return 2;
  }
  const pair = await generateDkimKeyPair(type);
  const name = `${selector}._domainkey.${domain.toLowerCase()}`;
  const file = resolve(join(values.out ?? '.', `${name}.pem`));
  try {
    await writeFile(file, pair.privateKeyPem, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    io.err(`mailframe dkim: cannot write ${file}: ${(err as Error).message}\n`);
    return 1;
  }
  io.out(`; private key: ${file} (keyFile for dkim-sign)\n`);
  io.out(`; publish this TXT record:\n`);
  io.out(
    `${name}. IN TXT ( ${txtStrings(pair.record)
      .map((s) => `"${s}"`)
      .join(' ')} )\n`,
  );
  return 0;
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      domain: { type: 'string', short: 'd' },
      selector: { type: 'string', short: 's' },
      type: { type: 'string', short: 't' },
      out: { type: 'string', short: 'o' },
    },
  });
}
