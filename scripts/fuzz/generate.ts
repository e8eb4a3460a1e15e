/**
 * Fuzz sessions: a valid SMTP conversation generated from a small grammar
 * (greeting, EHLO, STARTTLS, AUTH, transactions with DATA or BDAT and the
 * bundled extensions' parameters, VRFY, XCLIENT, QUIT), then mutated: byte
 * flips, truncation, line-ending games, huge lines, BDAT with wrong sizes,
 * AUTH garbage, garbage after STARTTLS, PROXY headers right and wrong,
 * repeated commands, early disconnects; sent in lockstep, in pipelined
 * bursts or in tiny pieces. A pure function of (seed, index).
 */
import { DotStuffer } from '../../core/codec/dot-stuff.ts';
import { Random } from './random.ts';
import type { ListenerName, Session, Step } from './session.ts';

/** The account the fuzz server knows (server.ts writes its users file). */
export const FUZZ_USER = 'alice';
export const FUZZ_PASSWORD = 'fuzz-only-password';

/** One command (or command and its data) and how many replies it earns when all goes well. */
interface Unit {
  data: Buffer;
  replies: number;
  /** Upgrade to TLS after this unit's reply (STARTTLS). */
  tls?: boolean;
  /** Message data that follows a 354. */
  body?: boolean;
  /** A BDAT command line with its chunk: `line` is the command's length. */
  bdat?: { line: number; size: number };
}

const line = (s: string): Buffer => Buffer.from(`${s}\r\n`, 'utf8');
const unit = (s: string, replies = 1): Unit => ({ data: line(s), replies });

const LOCAL_DOMAINS = ['localhost', 'example.com', 'LOCALHOST', 'Example.Com'];
const OTHER_DOMAINS = [
  'remote.example',
  'xn--bcher-kva.example',
  'bücher.example',
  '[127.0.0.1]',
  '[IPv6:::1]',
  'x',
];
const LOCAL_PARTS = ['alice', 'bob', 'postmaster', 'a.b', '"quoted local"', 'ünï', 'x+tag', 'UPPER'];

function address(r: Random): string {
  const local = r.pick(LOCAL_PARTS);
  const domain = r.chance(0.7) ? r.pick(LOCAL_DOMAINS) : r.pick(OTHER_DOMAINS);
  return `${local}@${domain}`;
}

function mailParams(r: Random, size: number): string {
  const params: string[] = [];
  if (r.chance(0.5)) params.push(`SIZE=${r.chance(0.9) ? size : r.pick([0, 999999999999, -1])}`);
  if (r.chance(0.3)) params.push(`BODY=${r.pick(['7BIT', '8BITMIME', 'BINARYMIME', 'bogus'])}`);
  if (r.chance(0.2)) params.push('SMTPUTF8');
  if (r.chance(0.2)) params.push(`RET=${r.pick(['FULL', 'HDRS'])}`);
  if (r.chance(0.2)) params.push(`ENVID=${r.pick(['abc+2B123', 'QQ', '+ZZ'])}`);
  if (r.chance(0.1)) params.push('REQUIRETLS');
  if (r.chance(0.1)) params.push(`AUTH=${r.pick(['<>', 'alice@example.com', '+'])}`);
  return params.length === 0 ? '' : ` ${params.join(' ')}`;
}

function rcptParams(r: Random): string {
  const params: string[] = [];
  if (r.chance(0.3)) params.push(`NOTIFY=${r.pick(['NEVER', 'SUCCESS,FAILURE', 'DELAY', 'NEVER,SUCCESS'])}`);
  if (r.chance(0.2)) params.push(`ORCPT=rfc822;${r.pick(['a@b.example', 'x+2By@z', 'utf-8;a\\x{20}b@c'])}`);
  return params.length === 0 ? '' : ` ${params.join(' ')}`;
}

function messageBody(r: Random): Buffer {
  const size = r.chance(0.05) ? r.range(256 * 1024, 320 * 1024) : r.range(0, r.chance(0.2) ? 20000 : 600);
  const lines = [
    `From: <${address(r)}>`,
    `To: <${address(r)}>`,
    `Subject: fuzz ${r.int(1e6)}`,
    `Message-ID: <${r.int(1e9)}@fuzz.example>`,
    '',
  ];
  let body = `${lines.join('\r\n')}\r\n`;
  const alphabet = ['a', ' ', '.', '\r\n', '\r\n.', 'é', '\t', '=', '..'];
  while (body.length < size) {
    body += r.chance(0.9) ? 'x'.repeat(r.range(1, 70)) : r.pick(alphabet);
    if (r.chance(0.2)) body += '\r\n';
  }
  return Buffer.from(body, 'utf8');
}

function dotStuffed(body: Buffer): Buffer {
  const s = new DotStuffer();
  return Buffer.concat([...s.write(body), s.end()]);
}

function bdatUnits(r: Random, body: Buffer): Unit[] {
  const units: Unit[] = [];
  const parts = r.range(1, 3);
  let at = 0;
  for (let i = 0; i < parts; i++) {
    const end = i === parts - 1 ? body.length : Math.min(body.length, at + r.int(body.length - at + 1));
    const chunk = body.subarray(at, end);
    const cmd = line(`BDAT ${chunk.length}${i === parts - 1 ? ' LAST' : ''}`);
    units.push({
      data: Buffer.concat([cmd, chunk]),
      replies: 1,
      bdat: { line: cmd.length, size: chunk.length },
    });
    at = end;
  }
  return units;
}

function authUnits(r: Random): Unit[] {
  const good = r.chance(0.6);
  const password = good ? FUZZ_PASSWORD : r.pick(['wrong', '', 'x'.repeat(300)]);
  const user = r.chance(0.9) ? FUZZ_USER : 'nobody';
  if (r.chance(0.5)) {
    const token = Buffer.from(`\0${user}\0${password}`).toString('base64');
    if (r.chance(0.5)) return [unit(`AUTH PLAIN ${token}`)];
    return [unit('AUTH PLAIN'), unit(token)];
  }
  return [
    unit('AUTH LOGIN'),
    unit(Buffer.from(user).toString('base64')),
    unit(Buffer.from(password).toString('base64')),
  ];
}

function transaction(r: Random, bdat: boolean): Unit[] {
  const body = messageBody(r);
  const units: Unit[] = [unit(`MAIL FROM:<${r.chance(0.1) ? '' : address(r)}>${mailParams(r, body.length)}`)];
  const rcpts = r.chance(0.05) ? r.range(95, 130) : r.range(1, 4);
  for (let i = 0; i < rcpts; i++) units.push(unit(`RCPT TO:<${address(r)}>${rcptParams(r)}`));
  if (bdat) units.push(...bdatUnits(r, body));
  else units.push(unit('DATA'), { data: dotStuffed(body), replies: 1, body: true });
  return units;
}

function misc(r: Random): Unit {
  return r.pick([
    () => unit('NOOP'),
    () => unit('RSET'),
    () => unit(`VRFY ${r.pick(['alice', 'alice@localhost', '', '<bob@example.com>'])}`),
    () => unit(`EXPN ${r.pick(['list', 'staff@example.com'])}`),
    () => unit(r.pick(['HELP', 'HELP MAIL'])),
    () =>
      unit(
        `XCLIENT ${r.pick(['ADDR=192.0.2.1', 'NAME=[UNAVAILABLE]', 'HELO=x LOGIN=y', 'ADDR=bogus', 'PROTO=ESMTP'])}`,
      ),
    () => unit(r.pick(['ETRN x', 'TURN', 'EXPN', 'X-UNKNOWN a b', 'LHLO x', 'mail from:<>', 'rcpt to:<>'])),
  ])();
}

/** The valid conversation, as units. */
function validUnits(r: Random, listener: ListenerName): Unit[] {
  const units: Unit[] = [];
  const ehlo = () =>
    unit(r.chance(0.85) ? `EHLO ${r.pick(['client.example', '[127.0.0.1]', 'x'])}` : 'HELO client.example');
  units.push(ehlo());
  if (listener !== 'submissions' && r.chance(listener === 'submission' ? 0.6 : 0.25)) {
    units.push({ ...unit('STARTTLS'), tls: true }, ehlo());
  }
  if (r.chance(listener === 'mx' ? 0.15 : 0.7)) units.push(...authUnits(r));
  const transactions = r.chance(0.1) ? r.range(2, 4) : 1;
  for (let t = 0; t < transactions; t++) {
    if (r.chance(0.3)) units.push(misc(r));
    units.push(...transaction(r, r.chance(0.35)));
  }
  if (r.chance(0.2)) units.push(misc(r));
  if (r.chance(0.8)) units.push(unit('QUIT'));
  return units;
}

function flipBytes(r: Random, data: Buffer): Buffer {
  const out = Buffer.from(data);
  const n = r.range(1, 4);
  for (let i = 0; i < n && out.length > 0; i++) {
    const at = r.int(out.length);
    out[at] = r.chance(0.5)
      ? (out[at] as number) ^ (1 << r.int(8))
      : r.pick([0x0d, 0x0a, 0x2e, 0x00, 0x20, 0xff]);
  }
  return out;
}

function lineEndingGame(r: Random, data: Buffer): Buffer {
  const text = data.toString('latin1');
  const replacement = r.pick(['\n', '\r', '\n\r', '', '\r\r\n', '\r\n\r\n']);
  const all = r.chance(0.5);
  let seen = false;
  return Buffer.from(
    text.replace(/\r\n/g, (m) => {
      if (!all && seen) return m;
      seen = true;
      return r.chance(0.7) ? replacement : m;
    }),
    'latin1',
  );
}

/** Ways a message body tries to end early or smuggle a second message (RFC 5321 4.1.1.4). */
function smuggle(r: Random): Buffer {
  const end = r.pick(['\n.\n', '\r\n.\n', '\n.\r\n', '\r.\r', '\r\n.\r', '\r\n..\r\n']);
  return Buffer.from(
    `Subject: s\r\n\r\nhello${end}MAIL FROM:<s@x.example>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\nsmuggled\r\n.\r\n`,
  );
}

function proxyHeader(r: Random): { data: Buffer; mutation: string } {
  const v1 = r.pick([
    'PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n',
    'PROXY TCP6 2001:db8::1 2001:db8::2 40000 25\r\n',
    'PROXY UNKNOWN\r\n',
    `PROXY UNKNOWN ${'f'.repeat(r.range(80, 200))}\r\n`,
    'PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n',
    'PROXY TCP4 1.2.3.4\r\n',
  ]);
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  const v2Body = Buffer.from([192, 0, 2, 10, 198, 51, 100, 1, 0x9c, 0x40, 0, 25]);
  const v2 = Buffer.concat([sig, Buffer.from([0x21, 0x11, 0, v2Body.length]), v2Body]);
  let data: Buffer = r.chance(0.5) ? Buffer.from(v1, 'latin1') : v2;
  let mutation = 'proxy header';
  if (r.chance(0.3)) {
    data = r.chance(0.5) ? flipBytes(r, data) : data.subarray(0, r.int(data.length));
    mutation = 'damaged proxy header';
  }
  return { data, mutation };
}

/** Apply one mutation to the units; returns its name. */
function mutate(r: Random, units: Unit[]): string {
  const at = r.int(units.length);
  const target = units[at] as Unit;
  switch (r.int(12)) {
    case 0:
      target.data = flipBytes(r, target.data);
      return `byte flips in unit ${at}`;
    case 1:
      target.data = target.data.subarray(0, r.int(target.data.length));
      units.splice(at + 1);
      return `truncated at unit ${at}`;
    case 2:
      target.data = lineEndingGame(r, target.data);
      return `line endings in unit ${at}`;
    case 3: {
      const n = r.pick([513, 1001, 4097, 70000, 262144]);
      const terminated = r.chance(0.7);
      const huge = Buffer.concat([
        Buffer.from('NOOP '),
        Buffer.alloc(n, r.pick(['a', ' ', '\r', '.'])),
        terminated ? line('') : Buffer.alloc(0),
      ]);
      units.splice(at, 0, { data: huge, replies: terminated ? 1 : 0 });
      return `huge line of ${n} octets before unit ${at}`;
    }
    case 4: {
      const bdat = units.findIndex((u) => u.bdat !== undefined);
      if (bdat === -1) return mutate(r, units);
      const u = units[bdat] as Unit;
      const info = u.bdat as { line: number; size: number };
      const size = r.pick([
        String(info.size + r.range(1, 100)),
        String(Math.max(0, info.size - r.range(1, 100))),
        '99999999999',
        '18446744073709551616',
        '-1',
        'abc',
        `${info.size} LAST junk`,
        '',
      ]);
      u.data = Buffer.concat([line(`BDAT ${size}`), u.data.subarray(info.line)]);
      return `BDAT size ${JSON.stringify(size)} for a ${info.size}-octet chunk`;
    }
    case 5: {
      const garbage = r.pick([
        () => ['AUTH PLAIN !!!notbase64', '*'],
        () => ['AUTH PLAIN', r.bytes(r.range(1, 600)).toString('base64')],
        () => ['AUTH LOGIN', '=', '===='],
        () => ['AUTH CRAM-MD5'],
        () => ['AUTH', 'AUTH PLAIN AAAA AAAA'],
        () => ['AUTH XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHgBAQ=='],
        () => ['AUTH PLAIN', 'A'.repeat(r.pick([100, 2000, 20000]))],
      ])();
      units.splice(at, 0, ...garbage.map((g) => unit(g)));
      return `AUTH garbage before unit ${at}`;
    }
    case 6: {
      const garbage = r.chance(0.5) ? r.bytes(r.range(1, 300)) : line('EHLO injected');
      const tlsAt = units.findIndex((u) => u.tls === true);
      if (tlsAt !== -1 && r.chance(0.5)) {
        const u = units[tlsAt] as Unit;
        // Pipelined after STARTTLS (must be discarded), or sent instead of a TLS handshake.
        if (r.chance(0.5)) u.data = Buffer.concat([u.data, garbage]);
        else {
          delete u.tls;
          units.splice(tlsAt + 1, 0, { data: garbage, replies: 0 });
        }
        return 'garbage after STARTTLS';
      }
      units.splice(at, 0, { ...unit('STARTTLS'), data: Buffer.concat([line('STARTTLS'), garbage]) });
      return `STARTTLS and garbage before unit ${at}`;
    }
    case 7: {
      const body = units.findIndex((u) => u.body === true);
      if (body === -1) return mutate(r, units);
      (units[body] as Unit).data = smuggle(r);
      return 'smuggling attempt in the message data';
    }
    case 8: {
      const times = r.pick([5, 30, 120]);
      units.splice(at, 0, ...Array.from({ length: times }, () => ({ ...target })));
      return `unit ${at} repeated ${times} times`;
    }
    case 9: {
      const other = r.int(units.length);
      units[at] = units[other] as Unit;
      units[other] = target;
      return `units ${at} and ${other} swapped`;
    }
    case 10:
      units.splice(at, 0, { data: r.bytes(r.range(1, 2000)), replies: 0 });
      return `random octets before unit ${at}`;
    default:
      units.splice(
        at,
        0,
        unit(
          r.pick(['DATA', 'BDAT 0 LAST', 'BDAT 10', 'MAIL FROM:<a@b>', 'RSET', 'RCPT TO:<alice@localhost>']),
        ),
      );
      return `out-of-order command before unit ${at}`;
  }
}

/** Session `index` of the run with `seed`. */
export function generateSession(seed: number, index: number): Session {
  const r = Random.forSession(seed, index);
  const listener: ListenerName = r.pick([
    'mx',
    'mx',
    'mx',
    'mx',
    'submission',
    'submission',
    'submissions',
    'proxy',
  ]);
  const mutations: string[] = [];
  const steps: Step[] = [];
  if (listener === 'submissions') steps.push({ op: 'tls' });
  if (listener === 'proxy') {
    const header = proxyHeader(r);
    steps.push({ op: 'send', data: header.data });
    mutations.push(header.mutation);
  }
  steps.push({ op: 'reply' });

  const units = validUnits(r, listener);
  const count = r.chance(0.15) ? 0 : r.range(1, 3);
  for (let i = 0; i < count && units.length > 0; i++) mutations.push(mutate(r, units));

  const mode = r.pick(['lockstep', 'lockstep', 'burst', 'pieces'] as const);
  mutations.push(
    `sent ${mode === 'burst' ? 'in pipelined bursts' : mode === 'pieces' ? 'in small pieces' : 'in lockstep'}`,
  );
  let pending: Buffer[] = [];
  let owed = 0;
  const flush = () => {
    if (pending.length > 0) steps.push({ op: 'send', data: Buffer.concat(pending) });
    for (let i = 0; i < owed; i++) steps.push({ op: 'reply' });
    pending = [];
    owed = 0;
  };
  for (const u of units) {
    if (mode === 'pieces') {
      let at = 0;
      while (at < u.data.length) {
        const n = r.range(1, 64);
        steps.push({ op: 'send', data: u.data.subarray(at, at + n) });
        at += n;
      }
      for (let i = 0; i < u.replies; i++) steps.push({ op: 'reply' });
    } else {
      pending.push(u.data);
      owed += u.replies;
      // A burst breaks where the client must see a reply first: STARTTLS, DATA's 354, or by chance.
      if (
        mode === 'lockstep' ||
        u.tls === true ||
        u.data.toString('latin1', 0, 6) === 'DATA\r\n' ||
        r.chance(0.2)
      )
        flush();
    }
    if (u.tls === true) {
      flush();
      steps.push({ op: 'tls' });
    }
  }
  flush();
  if (r.chance(0.1) && steps.length > 1) {
    const cut = r.range(1, steps.length - 1);
    steps.splice(cut, steps.length - cut, { op: 'close', how: r.chance(0.5) ? 'end' : 'destroy' });
    mutations.push(`early disconnect after step ${cut}`);
  }
  return { index, listener, mutations, steps };
}
