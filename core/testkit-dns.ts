/**
 * A test DNS server: authoritative for a zone described in code, on
 * 127.0.0.1 (UDP and TCP on the same random port), with names that misbehave
 * on purpose (SERVFAIL, REFUSED, silence, truncation, forged answers) and a
 * log of the queries that reached it. Point a server at it with
 * `dns.servers: [dns.address]`, or pass the zone to `startTestServer({ dns })`.
 *
 *   const dns = await startTestDnsServer({
 *     'example.com': { MX: [{ preference: 10, exchange: 'mx.example.com' }], TXT: ['v=spf1 -all'] },
 *     'mx.example.com': { A: ['127.0.0.2'], ttl: 60 },
 *     'broken.example': { rcode: 'SERVFAIL' },
 *   });
 *   ...
 *   await dns.close();
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIP, type Server, type Socket } from 'node:net';
import dnsPacket, { type Answer, type DecodedPacket, type Packet } from 'dns-packet';

/** What one name holds and how the server treats queries for it. */
export interface TestDnsName {
  /** Seconds each record of this name lives (default 300). */
  readonly ttl?: number;
  readonly A?: readonly string[];
  readonly AAAA?: readonly string[];
  /** An exchange of `''` or `'.'` is the null MX (RFC 7505). */
  readonly MX?: readonly { readonly preference: number; readonly exchange: string }[];
  /** One entry per record; an array is one record of several character-strings. Strings over 255 octets are split. */
  readonly TXT?: readonly (string | readonly string[])[];
  readonly PTR?: readonly string[];
  /** An alias: queries for other types get this CNAME and the target's records (when the target is in the zone). */
  readonly CNAME?: string;
  readonly TLSA?: readonly {
    readonly usage: number;
    readonly selector: number;
    readonly matchingType: number;
    readonly data: Uint8Array;
  }[];
  /** A zone apex: negative answers for this name and names under it carry this SOA. */
  readonly SOA?: { readonly ttl?: number; readonly minimum: number };
  /** Answer every query for this name with this error code instead of records. */
  readonly rcode?: 'SERVFAIL' | 'REFUSED' | 'FORMERR' | 'NOTIMP';
  /** Never answer queries for this name (the client times out). */
  readonly drop?: boolean;
  /** Over UDP answer with the TC bit and no records, so the client asks again over TCP. */
  readonly truncate?: boolean;
  /** Set the AD bit ("authenticated data") in answers for this name, as a validating resolver would. */
  readonly authenticated?: boolean;
  /**
   * Over UDP, first send forged NXDOMAIN answers (a wrong id, a wrong question,
   * the right ones from another port), then the real answer a little later.
   */
  readonly spoof?: boolean;
}

/**
 * Names (any case, trailing dot or not) to what they hold. A name `*.zone`
 * is a wildcard: it answers for names under `zone` that do not exist, as a
 * DNS list that lists everything does, by the rules of RFC 4592 (a name that
 * exists, even only as the parent of others, never takes it, nor do names
 * below such a name).
 */
export type TestDnsZone = Readonly<Record<string, TestDnsName>>;

export interface TestDnsOptions {
  /** A loopback address to listen on (default `127.0.0.1`; `::1` for IPv6). */
  readonly host?: string;
  /** The SOA for negative answers outside any apex in the zone (default ttl 300, minimum 60); `false`: none. */
  readonly soa?: { readonly ttl?: number; readonly minimum: number } | false;
  /** `false`: behave as a server from before EDNS (RFC 6891 7), answering FORMERR to any query with an OPT record. */
  readonly edns?: boolean;
}

export interface TestDnsQuery {
  /** Lower case, no trailing dot. */
  readonly name: string;
  readonly type: string;
  readonly transport: 'udp' | 'tcp';
  readonly id: number;
  readonly recursionDesired: boolean;
  /** The query had the AD bit set (RFC 6840 5.7). */
  readonly authenticatedData: boolean;
  /** The query had an EDNS OPT record. */
  readonly edns: boolean;
  /** The DO bit (DNSSEC OK) was set in the OPT record. */
  readonly dnssecOk: boolean;
}

export interface TestDnsServer {
  readonly host: string;
  readonly port: number;
  /** `"127.0.0.1:PORT"` (or `"[::1]:PORT"`), as `dns.servers` takes it. */
  readonly address: string;
  /** Every query that reached the server, in order (forged answers are not queries). */
  readonly queries: readonly TestDnsQuery[];
  /** How many queries for `name` (and `type`, when given) reached the server. */
  count(name: string, type?: string): number;
  /** Replace what a name holds (`undefined` removes it). */
  set(name: string, entry: TestDnsName | undefined): void;
  close(): Promise<void>;
}

const MAX_ALIAS_HOPS = 16;
/** How long the real answer waits behind the forged ones. */
const SPOOF_DELAY_MS = 30;

function key(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') && lower !== '.' ? lower.slice(0, -1) : lower === '.' ? '' : lower;
}

function splitTxt(value: string | readonly string[]): Buffer[] {
  const out: Buffer[] = [];
  for (const s of typeof value === 'string' ? [value] : value) {
    const buf = Buffer.from(s, 'utf8');
    if (buf.length === 0) out.push(buf);
    for (let i = 0; i < buf.length; i += 255) out.push(buf.subarray(i, i + 255));
  }
  return out;
}

/** The zone's records of one type at one name, as wire answers. */
function records(name: string, entry: TestDnsName, type: string): Answer[] {
  const ttl = entry.ttl ?? 300;
  const base = { name, ttl, class: 'IN' as const };
  switch (type) {
    case 'A':
      return (entry.A ?? []).map((data) => ({ ...base, type: 'A', data }));
    case 'AAAA':
      return (entry.AAAA ?? []).map((data) => ({ ...base, type: 'AAAA', data }));
    case 'PTR':
      return (entry.PTR ?? []).map((data) => ({ ...base, type: 'PTR', data }));
    case 'CNAME':
      return entry.CNAME === undefined ? [] : [{ ...base, type: 'CNAME', data: entry.CNAME }];
    case 'MX':
      return (entry.MX ?? []).map((mx) => ({
        ...base,
        type: 'MX',
        data: { preference: mx.preference, exchange: mx.exchange === '' ? '.' : mx.exchange },
      }));
    case 'TXT':
      return (entry.TXT ?? []).map((txt) => ({ ...base, type: 'TXT', data: splitTxt(txt) }));
    case 'TLSA':
      return (entry.TLSA ?? []).map((t) => ({
        ...base,
        type: 'TLSA',
        data: {
          usage: t.usage,
          selector: t.selector,
          matchingType: t.matchingType,
          certificate: Buffer.from(t.data),
        },
      }));
    default:
      return [];
  }
}

/** Start an authoritative test server for `zone`. Remember `await dns.close()`. */
export async function startTestDnsServer(
  zone: TestDnsZone,
  opts: TestDnsOptions = {},
): Promise<TestDnsServer> {
  const names = new Map<string, TestDnsName>();
  for (const [name, entry] of Object.entries(zone)) names.set(key(name), entry);
  const queries: TestDnsQuery[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const fallbackSoa = opts.soa === false ? undefined : { ttl: 300, ...(opts.soa ?? { minimum: 60 }) };

  /** The zone has `name` itself, or names below it (an empty non-terminal). */
  const held = (name: string): boolean => {
    if (name === '' || names.has(name)) return true;
    const suffix = `.${name}`;
    for (const n of names.keys()) if (n.endsWith(suffix)) return true;
    return false;
  };

  /**
   * What `name` holds: its own entry, else the wildcard of its closest
   * encloser (RFC 4592 3.3.1): a name that exists, even with nothing of its
   * own, never takes a wildcard, nor does a name whose nearest existing
   * ancestor has none.
   */
  const entryFor = (name: string): TestDnsName | undefined => {
    const own = names.get(name);
    if (own !== undefined || held(name)) return own;
    const labels = name.split('.');
    for (let i = 1; i <= labels.length; i++) {
      const parent = labels.slice(i).join('.');
      if (!held(parent)) continue;
      return names.get(parent === '' ? '*' : `*.${parent}`);
    }
    return undefined;
  };

  const exists = (name: string) => held(name) || entryFor(name) !== undefined;

  const soaFor = (name: string): Answer[] => {
    const labels = name === '' ? [] : name.split('.');
    for (let i = 0; i <= labels.length; i++) {
      const apex = labels.slice(i).join('.');
      const soa = names.get(apex)?.SOA;
      if (soa) return [soaRecord(apex, soa.ttl ?? 300, soa.minimum)];
    }
    return fallbackSoa ? [soaRecord('', fallbackSoa.ttl, fallbackSoa.minimum)] : [];
  };

  /** The response to `query`, or `undefined` to stay silent. */
  const respond = (query: DecodedPacket, transport: 'udp' | 'tcp'): Packet | undefined => {
    const question = query.questions?.[0];
    if (!question) return undefined;
    const qname = key(question.name);
    const opt = query.additionals?.find((a) => a.type === 'OPT');
    queries.push({
      name: qname,
      type: question.type,
      transport,
      id: query.id ?? 0,
      recursionDesired: query.flag_rd,
      authenticatedData: query.flag_ad,
      edns: opt !== undefined,
      dnssecOk: opt?.type === 'OPT' ? opt.flag_do : false,
    });
    const entry = entryFor(qname);
    if (entry?.drop) return undefined;
    if (opt && opts.edns === false)
      return { type: 'response', id: query.id ?? 0, flags: 1, questions: [question] };
    // Authoritative, and answering as a recursive resolver would (RA) so that stub resolvers accept it.
    let flags =
      dnsPacket.AUTHORITATIVE_ANSWER |
      dnsPacket.RECURSION_AVAILABLE |
      (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0);
    if (entry?.authenticated) flags |= dnsPacket.AUTHENTIC_DATA;
    const reply = (rcode: number, answers: Answer[], authorities: Answer[] = []): Packet => ({
      type: 'response',
      id: query.id ?? 0,
      flags: flags | rcode,
      questions: [question],
      answers,
      authorities,
    });
    if (entry?.rcode) return reply(rcodeNumber(entry.rcode), []);
    if (entry?.truncate && transport === 'udp') {
      flags |= dnsPacket.TRUNCATED_RESPONSE;
      return reply(0, []);
    }
    const answers: Answer[] = [];
    let name = qname;
    for (let hops = 0; question.type !== 'CNAME' && hops < MAX_ALIAS_HOPS; hops++) {
      const alias = entryFor(name);
      if (alias?.CNAME === undefined) break;
      answers.push(...records(name, alias, 'CNAME'));
      name = key(alias.CNAME);
    }
    const final = entryFor(name);
    const found = final ? records(name, final, question.type) : [];
    if (found.length > 0) return reply(0, [...answers, ...found]);
    return reply(exists(name) ? 0 : 3, answers, soaFor(name));
  };

  const host = opts.host ?? '127.0.0.1';
  const family = isIP(host) === 6 ? 'udp6' : 'udp4';
  const forger = createSocket(family);
  const connections = new Set<Socket>();
  const tcp = createServer((socket) => {
    connections.add(socket);
    socket.on('close', () => connections.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const size = buffered.readUInt16BE(0);
        if (buffered.length < 2 + size) break;
        const message = decodeOrUndefined(buffered.subarray(2, 2 + size));
        buffered = buffered.subarray(2 + size);
        const response = message ? respond(message, 'tcp') : undefined;
        if (!response) continue;
        const wire = dnsPacket.encode(response);
        const length = Buffer.alloc(2);
        length.writeUInt16BE(wire.length);
        socket.write(Buffer.concat([length, wire]));
      }
    });
  });
  const onDatagram = (udp: UdpSocket, buf: Buffer, from: { port: number; address: string }) => {
    const message = decodeOrUndefined(buf);
    if (!message || message.flag_qr) return;
    const response = respond(message, 'udp');
    if (!response) return;
    const send = () => udp.send(dnsPacket.encode(response), from.port, from.address);
    const question = message.questions?.[0];
    if (!question || !entryFor(key(question.name))?.spoof) return send();
    const forged = (over: Partial<Packet>): Buffer =>
      dnsPacket.encode({ ...response, flags: dnsPacket.AUTHORITATIVE_ANSWER | 3, answers: [], ...over });
    udp.send(forged({ id: ((message.id ?? 0) + 1) & 0xffff }), from.port, from.address);
    udp.send(
      forged({ questions: [{ ...question, name: `forged.${question.name}` }] }),
      from.port,
      from.address,
    );
    forger.send(forged({}), from.port, from.address);
    const timer = setTimeout(() => {
      timers.delete(timer);
      send();
    }, SPOOF_DELAY_MS);
    timers.add(timer);
  };
  const { udp, port } = await bindBoth(
    host,
    () => {
      const socket = createSocket(family);
      socket.on('message', (buf, from) => onDatagram(socket, buf, from));
      return socket;
    },
    tcp,
  );
  await new Promise<void>((resolve) => forger.bind(0, host, resolve));

  return {
    host,
    port,
    address: family === 'udp6' ? `[${host}]:${port}` : `${host}:${port}`,
    queries,
    count(name, type) {
      const n = key(name);
      return queries.filter((q) => q.name === n && (type === undefined || q.type === type)).length;
    },
    set(name, entry) {
      if (entry === undefined) names.delete(key(name));
      else names.set(key(name), entry);
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of connections) s.destroy();
      await Promise.all([
        new Promise<void>((resolve) => udp.close(() => resolve())),
        new Promise<void>((resolve) => forger.close(() => resolve())),
        new Promise<void>((resolve) => tcp.close(() => resolve())),
      ]);
    },
  };
}

function rcodeNumber(name: NonNullable<TestDnsName['rcode']>): number {
  return { FORMERR: 1, SERVFAIL: 2, NOTIMP: 4, REFUSED: 5 }[name];
}

function soaRecord(apex: string, ttl: number, minimum: number): Answer {
  return {
    type: 'SOA',
    name: apex === '' ? '.' : apex,
    ttl,
    class: 'IN',
    data: {
      mname: apex === '' ? 'ns.test' : `ns.${apex}`,
      rname: apex === '' ? 'hostmaster.test' : `hostmaster.${apex}`,
      serial: 1,
      refresh: 3600,
      retry: 600,
      expire: 86400,
      minimum,
    },
  };
}

function decodeOrUndefined(buf: Buffer): DecodedPacket | undefined {
  try {
    return dnsPacket.decode(buf);
  } catch {
    return undefined;
  }
}

/** UDP and TCP on one free port of `host` (a few tries: the TCP port may be taken). */
async function bindBoth(
  host: string,
  makeUdp: () => UdpSocket,
  tcp: Server,
): Promise<{ udp: UdpSocket; port: number }> {
  for (let attempt = 0; ; attempt++) {
    const udp = makeUdp();
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, host, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    const port = udp.address().port;
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      return { udp, port };
    } catch (err) {
      // A UDP socket cannot be bound twice: start over with a new one.
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      if (attempt >= 10) throw err;
    }
  }
}
