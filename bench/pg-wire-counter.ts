/**
 * A TCP relay between mailframe and PostgreSQL that counts database round
 * trips by what they do, reading the frontend side of the wire protocol
 * (PostgreSQL protocol 3: after the untyped startup message, each message is
 * a type octet and an int32 length that counts itself). A round trip is a
 * `Sync` (the end of an extended-protocol query: node-postgres sends Parse,
 * Bind, Describe, Execute, Sync in one write and waits for ReadyForQuery) or
 * a simple `Query`. Each is put in a class by the SQL text of the statement
 * it ends (the last `Parse`, or the `Query` itself), so the receive path
 * (the insert of a message, the NOTIFY after it) is counted apart from the
 * delivery path (lease, settle, renew) and the rest.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';

export type RoundTripKind = 'enqueue' | 'notify' | 'lease' | 'settle' | 'next-due' | 'renew' | 'other';

/** The class of a statement, by its SQL text. */
export function kindOf(sql: string): RoundTripKind {
  if (/INSERT INTO \S+\.messages/.test(sql) || /INSERT INTO \S+\.message_chunks/.test(sql)) return 'enqueue';
  if (sql.includes('pg_notify(')) return 'notify';
  if (sql.includes('.enqueue(')) return 'enqueue';
  if (sql.includes('.lease_due(')) return 'lease';
  if (sql.includes('.settle(') || sql.includes('.settle_and_lease(') || sql.includes('.settle_many('))
    return 'settle';
  if (/DELETE FROM \S+\.jobs dj USING u/.test(sql)) return 'settle';
  if (sql.includes('min(j.due_at)') || sql.includes('.next_due(')) return 'next-due';
  if (/UPDATE \S+\.jobs SET lease_expires/.test(sql)) return 'renew';
  return 'other';
}

/** Reads the frontend messages of one connection as they pass. */
class FrontendParser {
  #buf: Buffer = Buffer.alloc(0);
  #started = false;
  #lastSql = '';
  /** The SQL of each named (prepared) statement: later uses only Bind it by name. */
  readonly #named = new Map<string, string>();
  readonly #count: (kind: RoundTripKind) => void;

  constructor(count: (kind: RoundTripKind) => void) {
    this.#count = count;
  }

  push(chunk: Buffer): void {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    for (;;) {
      if (!this.#started) {
        if (this.#buf.length < 8) return;
        const len = this.#buf.readInt32BE(0);
        if (this.#buf.length < len) return;
        const code = this.#buf.readInt32BE(4);
        this.#buf = this.#buf.subarray(len);
        // SSLRequest / GSSENCRequest are followed by another startup message.
        if (code !== 80877103 && code !== 80877104) this.#started = true;
        continue;
      }
      if (this.#buf.length < 5) return;
      const type = String.fromCharCode(this.#buf[0] as number);
      const len = this.#buf.readInt32BE(1);
      if (this.#buf.length < 1 + len) return;
      const body = this.#buf.subarray(5, 1 + len);
      this.#buf = this.#buf.subarray(1 + len);
      if (type === 'P') {
        // Parse: statement name (cstring), query (cstring), ...
        const nameEnd = body.indexOf(0);
        const queryEnd = body.indexOf(0, nameEnd + 1);
        this.#lastSql = body.toString('utf8', nameEnd + 1, queryEnd);
        if (nameEnd > 0) this.#named.set(body.toString('utf8', 0, nameEnd), this.#lastSql);
      } else if (type === 'B') {
        // Bind: portal name (cstring), statement name (cstring), ...
        const portalEnd = body.indexOf(0);
        const nameEnd = body.indexOf(0, portalEnd + 1);
        const name = body.toString('utf8', portalEnd + 1, nameEnd);
        if (name !== '') this.#lastSql = this.#named.get(name) ?? this.#lastSql;
      } else if (type === 'S') {
        this.#count(kindOf(this.#lastSql));
      } else if (type === 'Q') {
        this.#count(kindOf(body.toString('utf8', 0, Math.max(0, body.length - 1))));
      }
    }
  }
}

export class PgWireCounter {
  readonly counts: Record<RoundTripKind, number> = {
    enqueue: 0,
    notify: 0,
    lease: 0,
    settle: 0,
    'next-due': 0,
    renew: 0,
    other: 0,
  };
  readonly #target: { host: string; port: number };
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;
  port = 0;

  constructor(target: { host: string; port: number }) {
    this.#target = target;
  }

  async open(): Promise<void> {
    const server = createServer((client) => {
      client.setNoDelay(true);
      const upstream = tcpConnect(this.#target);
      upstream.setNoDelay(true);
      const parser = new FrontendParser((kind) => {
        this.counts[kind]++;
      });
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.on('data', (chunk: Buffer) => parser.push(chunk));
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const address = server.address();
    if (typeof address === 'object' && address) this.port = address.port;
    this.#server = server;
  }

  reset(): void {
    for (const k of Object.keys(this.counts) as RoundTripKind[]) this.counts[k] = 0;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((ok) => server.close(() => ok()));
  }
}
