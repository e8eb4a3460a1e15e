/**
 * One delivery job to the Internet: resolve the destination, take a pooled
 * connection (or open one, trying each exchanger and each of its addresses in
 * turn), send the recipients in as few transactions as the limits allow, and
 * give the connection back for the next message.
 */
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import type { DnsResolver } from '../../core/dns/types.ts';
import type { Reply } from '../../core/reply.ts';
import type { DeliveryJob, DeliveryReport, Logger, RecipientResult } from '../../core/types.ts';
import { certificateFailure } from '../outbound/connection.ts';
import { envelopeOf, type OutboundEnvelope } from '../outbound/envelope.ts';
import { OutboundReplies } from '../outbound/local-replies.ts';
import {
  ClientConnection,
  failAll,
  OpenFailure,
  prepareMessage,
  type SmtpClientOptions,
  type SmtpTimeouts,
} from '../outbound/smtp-client.ts';
import type { TlsFailureType, TlsReportSink } from '../outbound/tls-report.ts';
import { type ConnectionPool, rcptMax } from './pool.ts';
import { MxReplies } from './replies.ts';
import { type AddressFamily, addressesOf, type Exchanger, resolveDestination } from './resolve.ts';
import { type ExchangerPolicy, type TlsPolicies, type TlsPolicy, testingProblem } from './tls-policy.ts';
import { tlsRequiredNo } from './tls-required.ts';

export interface Source {
  readonly address: string;
  readonly heloName: string;
}

export interface MxDeliveryOptions {
  readonly dns: DnsResolver;
  readonly pool: ConnectionPool;
  readonly port: number;
  readonly heloName: string;
  readonly sources: readonly Source[];
  readonly localNames: ReadonlySet<string>;
  readonly literals: boolean;
  readonly families: readonly AddressFamily[];
  readonly maxRecipients: number;
  readonly policies: TlsPolicies;
  /** The `tlsReport` service, when a TLS reporting plugin publishes one. */
  readonly tlsReport: () => TlsReportSink | undefined;
  readonly chunking: boolean;
  readonly timeouts: SmtpTimeouts;
  readonly clock: { now(): number };
}

interface Failure {
  readonly status: 'failed' | 'deferred';
  readonly reply: Reply;
  readonly mta?: string;
  readonly mtaAddress?: string;
}

export class MxDelivery {
  readonly #o: MxDeliveryOptions;
  #nextSource = 0;
  /** Policies of jobs whose sessions are not reported (TLS reports themselves). */
  readonly #unreported = new WeakSet<TlsPolicy>();
  /** The TLS plan each connection was opened under (`planKey`): pooled, it serves only messages under the same plan. */
  readonly #plans = new WeakMap<ClientConnection, string>();

  constructor(options: MxDeliveryOptions) {
    this.#o = options;
  }

  async deliver(job: DeliveryJob): Promise<DeliveryReport> {
    const report = await this.#deliver(job);
    logOutcomes(job.log, report);
    return report;
  }

  async #deliver(job: DeliveryJob): Promise<DeliveryReport> {
    const o = this.#o;
    let envelope = envelopeOf(job);
    const destination = job.destination;
    const resolution = await resolveDestination(destination, {
      dns: o.dns,
      localNames: o.localNames,
      literals: o.literals,
    });
    if (resolution.kind === 'fail') return failed(envelope, resolution);
    envelope = await inMemory(envelope, job.size);
    const ready = await prepareMessage(envelope);
    if (!ready.ok) return failed(envelope, ready);
    const requireTls = envelope.requireTls === true;
    // Read once, and only when a published policy would need it (RFC 8689 4.1: REQUIRETLS ignores it).
    let tlsOptional: Promise<boolean> | undefined;
    const read = envelope;
    const policy = await o.policies.policyFor({
      destination,
      mxAuthenticated: resolution.authenticated,
      requireTls,
      tlsOptional: () => {
        tlsOptional ??= tlsRequiredNo(read.stream());
        return tlsOptional;
      },
    });
    // A TLS report's own delivery is left out of the reports (`tlsReport` in outbound/tls-report.ts).
    if (envelope.tlsReport === true) this.#unreported.add(policy);
    this.#reportDiscovery(policy);

    // Usually one connection; another when the first may carry no more transactions (LIMITS MAILMAX).
    const results: RecipientResult[] = [];
    let rest: OutboundEnvelope = envelope;
    while (rest.recipients.length > 0) {
      const conn = await this.#acquire(destination, resolution.exchangers, policy, requireTls, job.log);
      if (!(conn instanceof ClientConnection)) {
        results.push(...failed(rest, conn).results);
        break;
      }
      let sent: { results: RecipientResult[]; rest: OutboundEnvelope };
      try {
        sent = await this.#send(conn, destination, rest, ready.facts, job.log);
      } finally {
        o.pool.release(destination, conn);
      }
      results.push(...sent.results);
      rest = sent.rest;
    }
    return { results };
  }

  /** A pooled connection, or a new one; a failure when there is none to have. */
  async #acquire(
    destination: string,
    exchangers: readonly Exchanger[],
    policy: TlsPolicy,
    requireTls: boolean,
    log: Logger,
  ): Promise<ClientConnection | Failure> {
    const o = this.#o;
    let taken = await o.pool.take(destination);
    while (taken.kind === 'connection' && !(await this.#fits(taken.conn, exchangers, policy, requireTls))) {
      taken.conn.close();
      o.pool.release(destination, taken.conn);
      taken = await o.pool.take(destination);
    }
    if (taken.kind === 'dead') {
      return {
        status: 'deferred',
        reply: MxReplies.backingOff(destination, new Date(taken.until).toISOString()),
      };
    }
    if (taken.kind === 'connection') return taken.conn;
    try {
      return await this.#connect(destination, exchangers, policy, requireTls, log);
    } catch (err) {
      // Not a connection's failure (a bug): give the slot back, let the hook's isolation report it.
      o.pool.failed(destination, false);
      throw err;
    }
  }

  /**
   * Whether an idle connection may carry this message: it was opened under the
   * plan this message's policy gives its exchanger now. A connection opened
   * with the recipient's policy set aside (`TLS-Required: No`), under MTA-STS
   * `testing`, or before a policy was known must not carry mail the policy
   * covers. A REQUIRETLS message also needs authenticated TLS.
   */
  async #fits(
    conn: ClientConnection,
    exchangers: readonly Exchanger[],
    policy: TlsPolicy,
    requireTls: boolean,
  ): Promise<boolean> {
    if (requireTls && !conn.tls?.authorized) return false;
    const opened = this.#plans.get(conn);
    const exchanger = exchangers.find((e) => e.name === conn.mta);
    if (opened === undefined || exchanger === undefined) return false;
    try {
      const plan = await policy.forExchanger(exchanger);
      return plan.refuse === undefined && planKey(plan) === opened;
    } catch {
      return false;
    }
  }

  /**
   * Recipients in batches of the remote's RCPTMAX (or `maxRecipients`), one
   * transaction each, as many as the connection carries (the pool's
   * `carriesMore`); `rest` is left for another connection.
   */
  async #send(
    conn: ClientConnection,
    destination: string,
    envelope: OutboundEnvelope,
    facts: Parameters<ClientConnection['send']>[1],
    log: Logger,
  ): Promise<{ results: RecipientResult[]; rest: OutboundEnvelope }> {
    const size = Math.min(this.#o.maxRecipients, rcptMax(conn) ?? Number.POSITIVE_INFINITY);
    const results: RecipientResult[] = [];
    const all = envelope.recipients;
    for (let i = 0; i < all.length; i += size) {
      if (i > 0 && !conn.reusable) {
        // Lost after a transaction: the recipients left wait for the queue's retry.
        const left = { recipients: all.slice(i) };
        const lost = OutboundReplies.connectionLost(conn.mta);
        results.push(...failAll(left, 'deferred', lost, conn.mta, conn.mtaAddress).results);
        break;
      }
      if (i > 0 && !this.#o.pool.carriesMore(conn)) {
        return { results, rest: { ...envelope, recipients: all.slice(i) } };
      }
      await this.#o.pool.pace(destination);
      const report = await conn.send({ ...envelope, recipients: all.slice(i, i + size) }, facts, log);
      results.push(...report.results);
    }
    return { results, rest: { ...envelope, recipients: [] } };
  }

  /** Try each exchanger, each of its addresses, until one connection is ready; gives the pool slot back on failure. */
  async #connect(
    destination: string,
    exchangers: readonly Exchanger[],
    policy: TlsPolicy,
    requireTls: boolean,
    log: Logger,
  ): Promise<ClientConnection | Failure> {
    const o = this.#o;
    let last: Failure | undefined;
    let dnsError: Reply | undefined;
    let tried = false;
    for (const exchanger of exchangers) {
      const plan = await policy.forExchanger(exchanger);
      const tlsPolicy = `${plan.source}/${plan.mode}`;
      if (plan.refuse) {
        // The policy rules this exchanger out: no connection, never plaintext instead.
        log.info(
          { mx: exchanger.name, tlsPolicy, reply: plan.refuse.reply },
          'mail exchanger ruled out by the TLS policy',
        );
        if (plan.refuse.failure) this.#record(policy, plan, exchanger, undefined, plan.refuse.failure);
        last = { status: plan.refuse.status, reply: plan.refuse.reply, mta: exchanger.name };
        continue;
      }
      const found = await addressesOf(exchanger, o.families, o.dns);
      if (found.kind === 'error') {
        dnsError ??= found.reply;
        continue;
      }
      if (found.kind === 'none') continue;
      for (const address of found.addresses) {
        tried = true;
        const source = this.#source(address);
        const options: SmtpClientOptions = {
          target: { host: address, port: o.port },
          heloName: source?.heloName ?? o.heloName,
          ...(source ? { localAddress: source.address } : {}),
          tls: plan.tls,
          tlsSettings: plan.tlsSettings,
          timeouts: o.timeouts,
          chunking: o.chunking,
          mtaName: exchanger.name,
          mtaAddress: address,
          log,
        };
        try {
          const conn = await openWithFallback(options, requireTls, plan.fallbackToClear, log);
          this.#plans.set(conn, planKey(plan));
          o.pool.opened(destination);
          const problem = plan.reportOnly ? testingProblem(plan, conn.tls, certificateFailure) : undefined;
          const result = problem?.failure ?? plan.unauthenticated ?? 'success';
          this.#record(policy, plan, exchanger, address, result, source?.address);
          log.info(
            {
              mx: exchanger.name,
              address,
              tlsPolicy,
              tls: conn.tls?.protocol ?? null,
              authenticated: conn.tls?.authorized ?? false,
              ...(problem ? { policyProblem: problem.failure, why: problem.reason } : {}),
            },
            problem ? 'connected; the TLS policy in testing mode failed' : 'connected',
          );
          return conn;
        } catch (err) {
          if (!(err instanceof OpenFailure)) throw err;
          if (err.tlsFailure) this.#record(policy, plan, exchanger, address, err.tlsFailure, source?.address);
          // Name the policy in the reply: it is what the queue (and `queue show`) keeps.
          const r =
            err.tlsFailure === undefined
              ? err.reply
              : { ...err.reply, text: `${replyLine(err.reply)} (TLS policy ${tlsPolicy})` };
          log.info(
            { mx: exchanger.name, address, reply: r, tlsPolicy, tlsFailure: err.tlsFailure ?? null },
            'mail exchanger not usable, trying the next',
          );
          last = { status: err.status, reply: r, mta: exchanger.name, mtaAddress: address };
        }
      }
    }
    o.pool.failed(destination, tried);
    if (last) return last.status === 'failed' ? last : { ...last, status: 'deferred' };
    if (dnsError) return { status: 'deferred', reply: dnsError };
    return { status: 'failed', reply: MxReplies.noAddress(destination) };
  }

  /** Tell the `tlsReport` service about one session (or a policy failure before any). */
  #record(
    policy: TlsPolicy,
    plan: ExchangerPolicy,
    exchanger: Exchanger,
    address: string | undefined,
    result: 'success' | TlsFailureType,
    sendingIp?: string,
  ): void {
    const scope = plan.report;
    if (!scope || this.#unreported.has(policy)) return;
    this.#o.tlsReport()?.record({
      policyDomain: policy.destination,
      policyType: scope.policyType,
      policyStrings: scope.policyStrings,
      mxHosts: scope.mxHosts,
      result,
      at: this.#o.clock.now(),
      receivingMxHostname: exchanger.name,
      ...(address === undefined ? {} : { receivingIp: address }),
      ...(sendingIp === undefined ? {} : { sendingMtaIp: sendingIp }),
    });
  }

  /** MTA-STS discovery failures (the policy could not be fetched or was invalid) are reported once per lookup. */
  #reportDiscovery(policy: TlsPolicy): void {
    const failure = policy.sts?.failure;
    if (!failure || this.#unreported.has(policy)) return;
    const cached = policy.sts?.kind === 'policy' ? policy.sts.policy : undefined;
    this.#o.tlsReport()?.record({
      policyDomain: policy.destination,
      policyType: 'sts',
      policyStrings: cached?.lines ?? [],
      mxHosts: cached?.mx ?? [],
      result: failure.type,
      at: this.#o.clock.now(),
      failureReasonCode: failure.reason.slice(0, 200),
    });
  }

  /** The next configured source address of the target's family, in turn. */
  #source(target: string): Source | undefined {
    const family = isIP(target);
    const usable = this.#o.sources.filter((s) => isIP(s.address) === family);
    if (usable.length === 0) return undefined;
    this.#nextSource = (this.#nextSource + 1) % usable.length;
    return usable[this.#nextSource];
  }
}

/**
 * Open a connection; under the opportunistic policy (`may`) a server whose TLS
 * handshake fails is tried once more without STARTTLS, as Postfix does, since
 * `may` only wants TLS when it works. A REQUIRETLS message never falls back.
 */
async function openWithFallback(
  options: SmtpClientOptions,
  requireTls: boolean,
  opportunistic: boolean,
  log: Logger,
): Promise<ClientConnection> {
  try {
    return await ClientConnection.open(options, requireTls);
  } catch (err) {
    if (!(err instanceof OpenFailure) || !err.tls || !opportunistic || requireTls) throw err;
    log.info(
      { mx: options.mtaName, address: options.mtaAddress },
      'TLS handshake failed; trying without TLS',
    );
    return ClientConnection.open({ ...options, tls: 'none' }, requireTls);
  }
}

/** What makes two plans for one exchanger the same for a connection opened under one of them. */
function planKey(plan: ExchangerPolicy): string {
  const s = plan.tlsSettings;
  return [
    plan.source,
    plan.mode,
    plan.tls,
    s.rejectUnauthorized,
    s.verify !== undefined,
    plan.reportOnly,
    plan.fallbackToClear,
  ].join(' ');
}

/**
 * One line per recipient that was not delivered, with the mail exchanger, its
 * address and the reply (delivered ones are counted in the client's line).
 */
function logOutcomes(log: Logger, report: DeliveryReport): void {
  for (const r of report.results) {
    if (r.status === 'delivered') continue;
    log.info(
      {
        to: r.recipient,
        status: r.status,
        mta: r.mta ?? null,
        mtaAddress: r.mtaAddress ?? null,
        code: r.reply?.code,
        enhanced: r.reply?.enhanced,
        reply: r.reply?.text,
      },
      r.status === 'failed' ? 'recipient failed' : 'recipient deferred',
    );
  }
}

/** Messages up to this size are read once and sent from memory (the scan and the send read them). */
const SMALL_MESSAGE = 256 * 1024;

/** The envelope with a small message read into memory, so the queue's copy is read once. */
async function inMemory(envelope: OutboundEnvelope, size: number | undefined): Promise<OutboundEnvelope> {
  if (size === undefined || size > SMALL_MESSAGE) return envelope;
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of envelope.stream() as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      total += chunk.length;
      // The queue's size was wrong: stream it as it comes instead.
      if (total > SMALL_MESSAGE) return envelope;
    }
  } catch {
    // A read error: `prepareMessage` reads again and reports it.
    return envelope;
  }
  const data = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
  return { ...envelope, stream: () => Readable.from([data]) };
}

function replyLine(r: Reply): string {
  return typeof r.text === 'string' ? r.text : r.text.join(' ');
}

function failed(envelope: OutboundEnvelope, f: Failure): DeliveryReport {
  return failAll(envelope, f.status, f.reply, f.mta, f.mtaAddress);
}
