/**
 * DKIM verification in a tight loop, one process, no network: W1's message
 * (as `npm run bench:auth` builds it) signed by dkim-sign's own signer with
 * RSA-2048 and with Ed25519, the key record served by an in-memory resolver,
 * verified N times per key as dkim-verify does it (`verifyHeader` on the
 * header section parsed once beforehand, as `messageHeader` shares it between
 * checks, with the key record answered at once as from the resolver's cache;
 * `--buffer`: `verifyMessage` on the whole message as one buffer). Prints microseconds per verification, the public-key check alone
 * (`crypto.verify` on the same data) and the difference: the verifier's own
 * JavaScript. Times are the process's CPU time (user + system,
 * `process.cpuUsage`), not wall time: a run descheduled by other jobs on the
 * machine does not count the time it waited; the median of the runs is
 * reported.
 *
 *   npx node bench/dkim-verify-loop.ts [--iterations 20000] [--runs 5] [--buffer]
 *
 * For instruction counts (valgrind), `--keys DIR` reuses the keys kept in DIR
 * (key generation differs from run to run), `--type` picks one key type and
 * `--no-crypto-alone` leaves out the `crypto.verify` loop: the difference
 * between two iteration counts is then the verifier's instructions alone.
 */

import { createPrivateKey, createPublicKey, hash, type KeyObject, verify } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { DnsRecordType, DnsRecordTypes, DnsResolver, DnsResult } from '../core/dns/types.ts';
import { canonField, signedHeaderData } from '../plugins/dkim/canon.ts';
import { parseSignatureTags } from '../plugins/dkim/tags.ts';
import { KeyCache, type VerifyOptions, verifyHeader, verifyMessage } from '../plugins/dkim/verify.ts';
import { type DkimKeyPair, type DkimKeyType, generateDkimKeyPair } from '../plugins/dkim-sign/keys.ts';
import { parseMessageHeader } from '../plugins/policy/message-header.ts';
import { dkimSignatureFor } from './dkim-signature.ts';
import { buildMessage } from './message.ts';
import { allWorkloads } from './workloads.ts';

const DOMAIN = 'bench.example';
const SELECTOR = 'bench';

const USAGE = `Usage: npx tsx bench/dkim-verify-loop.ts [options]
  --iterations N   verifications per run and key type (default 20000)
  --runs N         runs per key type; the median is reported (default 5)
  --buffer         pass the message as one Buffer (the verifier parses the header) instead of parsed
  --type T         rsa or ed25519 only (default both)
  --keys DIR       keep the generated keys in DIR and reuse them (same work from run to run)
  --no-crypto-alone  do not time crypto.verify alone
`;

/** A resolver answering one TXT record from memory. */
function memoryResolver(name: string, record: string): DnsResolver {
  const answer = { kind: 'answer', records: [record], ttl: 3600, authenticated: false, canonicalName: name };
  const cached = <T extends DnsRecordType>(qname: string, type: T): DnsResult<DnsRecordTypes[T]> =>
    (qname === name && type === 'TXT' ? answer : { kind: 'nxdomain', authenticated: false }) as DnsResult<
      DnsRecordTypes[T]
    >;
  return {
    lookup: (qname, type) => Promise.resolve(cached(qname, type)),
    // As the server's resolver answers a cached record: at once.
    cached,
  };
}

/** W1's message (without the DATA terminator) with a DKIM-Signature on top, relaxed/relaxed as bench:auth signs. */
async function signedW1(key: KeyObject): Promise<Buffer> {
  const w1 = allWorkloads(false).find((w) => w.id === 'W1');
  if (!w1) throw new Error('no W1 workload');
  const built = buildMessage(w1.load.size).buffer;
  if (!built) throw new Error('W1 message is not a single buffer');
  const text = built.subarray(0, built.length - 3).toString('latin1');
  const field = await dkimSignatureFor(text, key, DOMAIN, SELECTOR);
  return Buffer.from(`${field}\r\n${text}`, 'latin1');
}

/** Microseconds of this process's CPU time (user + system) since the start. */
function cpuMicros(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

/** A key pair, kept in `dir` when given (and taken from there when it is already). */
async function keyPair(type: DkimKeyType, dir: string | undefined): Promise<DkimKeyPair> {
  const file = dir === undefined ? undefined : join(dir, `${type}.json`);
  if (file !== undefined && existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as DkimKeyPair;
  const pair = await generateDkimKeyPair(type);
  if (file !== undefined) writeFileSync(file, JSON.stringify(pair), { mode: 0o600 });
  return pair;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** Microseconds per `crypto.verify` of this message's header data (what the verifier cannot avoid). */
function cryptoOnly(message: Buffer, type: DkimKeyType, record: string, iterations: number): number {
  const header = parseMessageHeader(message);
  const sigField = header.fields[0];
  if (!sigField) throw new Error('no signature');
  const h = /\bh=([^;]*)/.exec(sigField.raw)?.[1]?.replace(/\s+/g, '').toLowerCase().split(':') ?? [];
  const b = /\bb=([^;]*)/.exec(sigField.raw)?.[1]?.replace(/\s+/g, '') ?? '';
  const tags = parseSignatureTags(sigField.raw, sigField.raw.indexOf(':') + 1);
  if (!tags || tags.bEquals < 0) throw new Error('no b= tag');
  const unsigned = sigField.raw.slice(0, tags.bEquals + 1) + sigField.raw.slice(tags.bEnd);
  const data = Buffer.from(
    signedHeaderData(header.fields, h, 'relaxed') + canonField(unsigned, 'relaxed'),
    'latin1',
  );
  const p = /p=([^;]*)/.exec(record)?.[1] ?? '';
  const der = Buffer.from(p, 'base64');
  const key =
    type === 'ed25519'
      ? createPublicKey({
          key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), der]),
          format: 'der',
          type: 'spki',
        })
      : createPublicKey({ key: der, format: 'der', type: 'spki' });
  const signature = Buffer.from(b, 'base64');
  const once = () =>
    type === 'ed25519'
      ? verify(null, hash('sha256', data, 'buffer'), key, signature)
      : verify('sha256', data, key, signature);
  if (!once()) throw new Error(`crypto-only check failed for ${type}`);
  const t0 = cpuMicros();
  for (let i = 0; i < iterations; i++) once();
  return (cpuMicros() - t0) / iterations;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      iterations: { type: 'string', default: '20000' },
      runs: { type: 'string', default: '5' },
      buffer: { type: 'boolean', default: false },
      type: { type: 'string' },
      keys: { type: 'string' },
      'no-crypto-alone': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  const iterations = Math.max(10, Number(values.iterations) || 20000);
  const runs = Math.max(1, Number(values.runs) || 5);
  process.stdout.write(
    `node ${process.version}, CPU us per verification, ${iterations} verifications x ${runs} runs per key, message passed ${values.buffer ? 'as a Buffer' : 'parsed (messageHeader)'}\n`,
  );
  const types = (['rsa', 'ed25519'] as const).filter((t) => values.type === undefined || values.type === t);
  for (const type of types) {
    const pair = await keyPair(type, values.keys);
    const message = await signedW1(createPrivateKey(pair.privateKeyPem));
    const resolver = memoryResolver(`${SELECTOR}._domainkey.${DOMAIN}`, pair.record);
    const opts: VerifyOptions = {
      lookup: (name) => resolver.lookup(name, 'TXT'),
      now: Date.now(),
      minKeyBits: 1024,
      maxSignatures: 10,
      clockSkew: 300,
      keys: new KeyCache(),
      // As dkim-verify passes it: the key record comes from the resolver's cache at once.
      cachedLookup: (name) => resolver.cached?.(name, 'TXT'),
    };
    const parsed = parseMessageHeader(message);
    // As dkim-verify calls it: verifyHeader on the parsed header (at once when the key is cached).
    const once = () => (values.buffer ? verifyMessage(message, opts) : verifyHeader(parsed, opts));
    const first = await once();
    if (first.signatures[0]?.result !== 'pass') throw new Error(`not a pass: ${JSON.stringify(first)}`);
    const totals: number[] = [];
    const cryptos: number[] = [];
    for (let r = 0; r < runs; r++) {
      const t0 = cpuMicros();
      for (let i = 0; i < iterations; i++) {
        const v = once();
        if (v instanceof Promise) await v;
      }
      totals.push((cpuMicros() - t0) / iterations);
      cryptos.push(values['no-crypto-alone'] ? 0 : cryptoOnly(message, type, pair.record, iterations));
    }
    const total = median(totals);
    const crypto = median(cryptos);
    const fmt = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' ');
    const least = Math.min(...totals) - Math.min(...cryptos);
    process.stdout.write(
      `${type.padEnd(7)} ${message.length} octets: verifyMessage ${total.toFixed(1)} us (runs: ${fmt(totals)}), ` +
        `crypto.verify alone ${crypto.toFixed(1)} us (runs: ${fmt(cryptos)}), ` +
        `outside crypto ${(total - crypto).toFixed(1)} us (medians; ${least.toFixed(1)} us from the fastest runs)\n`,
    );
  }
}

await main();
