/**
 * Throwaway self-signed certificates for tests, made at run time with the
 * `openssl` command line (or, without it, the tls plugin's in-memory
 * generator: Node has no X.509 generator of its own), and TLS client
 * helpers around the testkit's SmtpClient. Nothing here is ever committed:
 * every call writes fresh files into a temporary directory.
 */
import { execFile, execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConnectionOptions, createSecureContext, type TLSSocket, connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { SmtpClient } from '../../core/testkit.ts';
import { createSelfSignedCertificate } from '../../plugins/tls/self-signed.ts';

const run = promisify(execFile);

export interface TestCertificate {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: string;
  readonly key: string;
  /** SHA-256 fingerprint as `AA:BB:...`, as `TLSSocket.getPeerCertificate().fingerprint256` shows it. */
  readonly fingerprint256: string;
}

function findOpenssl(): string | undefined {
  for (const candidate of ['/usr/bin/openssl', 'openssl']) {
    try {
      execFileSync(candidate, ['version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

/** The openssl binary, or undefined when none runs here. */
export const OPENSSL = findOpenssl();

function inMemoryGeneratorWorks(): boolean {
  try {
    const { cert, key } = createSelfSignedCertificate('probe.test.example');
    createSecureContext({ cert, key });
    return true;
  } catch {
    return false;
  }
}

/**
 * Why certificate tests are skipped, or undefined when they can run: with
 * openssl, or else with the tls plugin's own in-memory generator.
 */
export const CERT_SKIP_REASON =
  OPENSSL || inMemoryGeneratorWorks()
    ? undefined
    : 'neither openssl nor the in-memory generator can make a test certificate';

/**
 * `openssl req` with a fresh P-256 key written to `keyPath`: a self-signed
 * certificate valid `days` days into `out`, or without `days` a certificate
 * request; each of `extensions` is added (`-addext`). Needs openssl.
 */
export async function opensslRequest(
  keyPath: string,
  out: string,
  subject: string,
  o: { readonly days?: number; readonly extensions?: readonly string[] } = {},
): Promise<void> {
  if (!OPENSSL) throw new Error('this test certificate needs the openssl command');
  await run(OPENSSL, [
    'req',
    ...(o.days === undefined ? [] : ['-x509', '-days', String(o.days)]),
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-subj',
    subject,
    ...(o.extensions ?? []).flatMap((e) => ['-addext', e]),
    '-keyout',
    keyPath,
    '-out',
    out,
  ]);
}

/** A temporary directory for certificates; remove it with `removeCertDir`. */
export function makeCertDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'mailframe-certs-'));
}

export async function removeCertDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/**
 * Generate a self-signed P-256 certificate for `commonName` (also its DNS
 * subjectAltName) valid for one day, as `<dir>/<name>.crt` and `<dir>/<name>.key`:
 * with openssl when present, else with the tls plugin's in-memory generator.
 */
export async function makeCertificate(
  dir: string,
  name: string,
  commonName = name,
): Promise<TestCertificate> {
  if (CERT_SKIP_REASON) throw new Error(CERT_SKIP_REASON);
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  if (!OPENSSL) {
    const made = createSelfSignedCertificate(commonName, { days: 1 });
    await writeFile(keyPath, made.key, { mode: 0o600 });
    await writeFile(certPath, made.cert);
    return { certPath, keyPath, ...made, fingerprint256: new X509Certificate(made.cert).fingerprint256 };
  }
  await opensslRequest(keyPath, certPath, `/CN=${commonName}`, {
    days: 1,
    extensions: [`subjectAltName=DNS:${commonName}`],
  });
  const cert = await readFile(certPath, 'utf8');
  const key = await readFile(keyPath, 'utf8');
  return { certPath, keyPath, cert, key, fingerprint256: new X509Certificate(cert).fingerprint256 };
}

/** Atomically replace the files at `target`'s paths with `source`'s contents (write aside, rename over). */
export async function installCertificate(source: TestCertificate, target: TestCertificate): Promise<void> {
  await writeFile(`${target.keyPath}.new`, source.key);
  await writeFile(`${target.certPath}.new`, source.cert);
  await rename(`${target.keyPath}.new`, target.keyPath);
  await rename(`${target.certPath}.new`, target.certPath);
}

/** A TLS client side for tests: the testkit's SmtpClient over a TLS socket. */
export interface TlsClient {
  readonly client: SmtpClient;
  readonly socket: TLSSocket;
  /** SHA-256 fingerprint of the certificate the server presented. */
  readonly fingerprint256: string;
}

function secured(socket: TLSSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
}

/** Client TLS settings a test may change (e.g. `maxVersion: 'TLSv1.2'` to allow renegotiation). */
export type ClientTlsOptions = Pick<ConnectionOptions, 'maxVersion' | 'minVersion'>;

/** After `220` to STARTTLS: run the client handshake on the same connection. */
export async function upgradeClient(
  c: SmtpClient,
  servername?: string,
  options: ClientTlsOptions = {},
): Promise<TlsClient> {
  const socket = tlsConnect({
    ...options,
    socket: c.socket,
    rejectUnauthorized: false,
    ...(servername === undefined ? {} : { servername }),
  });
  await secured(socket);
  return {
    client: new SmtpClient(socket),
    socket,
    fingerprint256: socket.getPeerCertificate().fingerprint256,
  };
}

/** Connect to an implicit-TLS listener and read the greeting. */
export async function connectImplicitTls(
  port: number,
  servername?: string,
  options: ClientTlsOptions = {},
): Promise<TlsClient> {
  const socket = tlsConnect({
    ...options,
    host: '127.0.0.1',
    port,
    rejectUnauthorized: false,
    ...(servername === undefined ? {} : { servername }),
  });
  await secured(socket);
  const client = new SmtpClient(socket);
  client.greeting = await client.read();
  return { client, socket, fingerprint256: socket.getPeerCertificate().fingerprint256 };
}

/** EHLO, STARTTLS and the handshake on a fresh testkit client; returns the TLS side (EHLO not yet repeated). */
export async function startTls(c: SmtpClient, servername?: string): Promise<TlsClient> {
  await c.expect('EHLO client.example', 250);
  await c.expect('STARTTLS', 220, '2.0.0');
  return upgradeClient(c, servername);
}

/** A throwaway certificate authority for tests (one day), to sign leaf certificates with `issueCertificate`. */
export interface TestCa extends TestCertificate {
  readonly name: string;
}

/** Make a test CA (P-256, CA:TRUE) as `<dir>/<name>.crt` and `.key`. Needs openssl. */
export async function makeTestCa(dir: string, name: string): Promise<TestCa> {
  if (!OPENSSL) throw new Error('a test CA needs the openssl command');
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  await opensslRequest(keyPath, certPath, `/CN=${name}`, {
    days: 1,
    extensions: ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'],
  });
  const cert = await readFile(certPath, 'utf8');
  const key = await readFile(keyPath, 'utf8');
  return { name, certPath, keyPath, cert, key, fingerprint256: new X509Certificate(cert).fingerprint256 };
}

export interface IssueOptions {
  /** DNS names of the subjectAltName (the first is also the CN); none: no subjectAltName at all. */
  readonly dnsNames: readonly string[];
  /** The CN, when it is not the first DNS name. */
  readonly commonName?: string;
  /** Validity in days from now; negative: expired that many days ago. Default 1. */
  readonly days?: number;
}

/**
 * A leaf certificate signed by `ca`, as `<dir>/<name>.crt` (the leaf, then the
 * CA: the chain a server presents) and `<dir>/<name>.key`. Needs openssl.
 */
export async function issueCertificate(
  dir: string,
  ca: TestCa,
  name: string,
  o: IssueOptions,
): Promise<TestCertificate> {
  if (!OPENSSL) throw new Error('issuing a test certificate needs the openssl command');
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  const csrPath = join(dir, `${name}.csr`);
  const extPath = join(dir, `${name}.ext`);
  await opensslRequest(keyPath, csrPath, `/CN=${o.commonName ?? o.dnsNames[0] ?? name}`);
  await writeFile(
    extPath,
    `${o.dnsNames.length === 0 ? '' : `subjectAltName=${o.dnsNames.map((n) => `DNS:${n}`).join(',')}\n`}basicConstraints=CA:FALSE\n`,
  );
  await run(OPENSSL, [
    'x509',
    '-req',
    '-in',
    csrPath,
    '-CA',
    ca.certPath,
    '-CAkey',
    ca.keyPath,
    '-CAcreateserial',
    '-days',
    String(o.days ?? 1),
    '-extfile',
    extPath,
    '-out',
    certPath,
  ]);
  const leaf = await readFile(certPath, 'utf8');
  const cert = `${leaf.trimEnd()}\n${ca.cert}`;
  await writeFile(certPath, cert);
  const key = await readFile(keyPath, 'utf8');
  return { certPath, keyPath, cert, key, fingerprint256: new X509Certificate(leaf).fingerprint256 };
}
