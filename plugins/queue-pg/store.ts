/**
 * The PostgreSQL queue store: several mailframe nodes share one queue (see
 * docs/plugins/queue-pg.md). Tables (migrations.ts): `messages` (envelope and,
 * for small messages, the octets), `message_chunks` (the octets of large
 * messages, in chunks), `recipients` (per-recipient state), `jobs` (one per
 * message and destination: due time, lease owner, expiry and token) and
 * `slots` (the per-destination limit across nodes).
 *
 * - enqueue: one plain statement (one round trip, one transaction) for the
 *   messages held in memory that arrived together (group commit); large
 *   messages stream in chunk rows inside one transaction. Resolves only after
 *   COMMIT (`synchronous_commit` on). With `scheduling`, the same statement
 *   leases the new jobs to this node where it holds a slot (taking slots
 *   first where it has none): they wait in the ready list, with the octets
 *   already in memory, for `leaseDue`.
 * - leaseDue: the ready list first, at most as many running per destination
 *   as this node holds slots there; then, only when something may be due in
 *   the database that this node does not know of, `lease_due()`, one round
 *   trip: due jobs taken with `FOR UPDATE SKIP LOCKED` within the slots, and
 *   when to look again (what `nextDue` answers meanwhile). Leases and slots
 *   are renewed every third of the lease duration (slots left unused since
 *   the last renewal are let go); a lease left to expire (its node died)
 *   makes the job due again.
 * - settle: a final result of a single-destination message is one plain
 *   statement, or rides with the next insert when messages are being stored;
 *   the others go through `settle_many()`, grouped. Nothing is recorded for
 *   a lease whose token no longer matches (another node took the job over).
 * - wake-ups: NOTIFY after enqueue, release and retry; LISTEN in `wake.ts`.
 * - quarantine: a message whose `attributes.quarantine` is set is inserted
 *   quarantined (its jobs not scheduled) by the same statement that stores it;
 *   `release` clears hold and quarantine together.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import pg from 'pg';
import type { Clock } from '../../core/plugin.ts';
import type { Logger } from '../../core/types.ts';
import { roomAt } from '../queue/due-index.ts';
import { readHeaderSection } from '../queue/message-read.ts';
import type {
  DestinationRoom,
  EnvelopeInput,
  Lease,
  LeasedRecipient,
  MessageContent,
  MessageSource,
  QueueDetail,
  QueueFilter,
  QueueStats,
  QueueStore,
  QueueSummary,
  RecipientDetail,
  RecipientOutcome,
  ReplyRecord,
} from '../queue/types.ts';
import { checkSchema, ident, migrate } from './migrations.ts';
import { WAKE_CHANNEL, WakeListener, wakePayload } from './wake.ts';

export interface PgQueueOptions {
  /** How to reach the database (node-postgres settings; PG* environment variables fill the gaps). */
  readonly connection: pg.ClientConfig;
  /** Connections in the pool. */
  readonly poolSize: number;
  /** The schema holding the queue's tables. */
  readonly schema: string;
  /** This node's name in lease rows. */
  readonly nodeId: string;
  /** How long a lease lasts without renewal, ms. */
  readonly leaseDuration: number;
  readonly clock: Clock;
  readonly log: Logger;
  /** Octets per chunk row of a large message (default 1 MiB). */
  readonly chunkSize?: number;
  /** LISTEN for other nodes' wake-ups (default true; the CLI needs none). */
  readonly listen?: boolean;
  /** Apply migrations (default true); false: refuse a schema not at this code's version. */
  readonly migrate?: boolean;
  /**
   * The scheduler's limits, when this store feeds one (the plugin; not the
   * CLI): new jobs are then leased to this node by the statement that stores
   * them, while it runs fewer than `concurrency` and their destination has
   * room, and `leaseDue`/`nextDue` answer from what the store knows while
   * nothing new may be due in the database.
   */
  readonly scheduling?: { readonly concurrency: number; readonly perDestination: number };
}

export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
/** Messages up to this size are stored inline in their `messages` row. */
const INLINE_LIMIT = 256 * 1024;

/** bigint (int8) columns hold milliseconds and sizes, all below 2^53: read them as numbers. */
const INT8_OID = 20;
const types: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary'
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

const ID = /^[0-9a-z]{8,64}$/;

interface LeaseRow {
  /** NULL in the last row, which carries only the next due times. */
  id: string | null;
  destination: string;
  token: number;
  sender: string;
  attributes: Lease['attributes'];
  received_at: number;
  size: number;
  body: Buffer | null;
  recipients: LeasedRecipient[] | null;
  /** The message has no job at another destination (its settle may remove it at once). */
  solo?: boolean | null;
  room_next?: number | null;
  any_next?: number | null;
  waiting?: string[] | null;
}

/** A row of settle_many(), or of the fast settle (result 'removed'). */
interface SettleRow {
  token: number;
  result: string;
  next_due: number | null;
}

interface SummaryRow {
  id: string;
  sender: string;
  received_at: number;
  size: number;
  recipients: number;
  pending: number;
  attempts: number;
  next_attempt_at: number | null;
  last_reply: ReplyRecord | null;
  state: QueueSummary['state'];
  /** Its `attributes.quarantine` while quarantined, else null. */
  quarantine: { check: string; result: string } | null;
}

interface RecipientRow {
  address: string;
  domain: string;
  attributes: RecipientDetail['attributes'];
  status: RecipientDetail['status'];
  attempts: number;
  next_attempt_at: number;
  last_attempt_at: number | null;
  reply: ReplyRecord | null;
  mta: string | null;
  mta_address: string | null;
  warned: boolean;
}

/** A message waiting to be inserted (group commit). */
interface Insert {
  readonly id: string;
  readonly input: EnvelopeInput;
  readonly size: number;
  readonly body: Buffer | null;
  resolve(): void;
  reject(err: unknown): void;
}

/** A job the insert stored (leased if token is set), a slot it took, or a lease a rider removed. */
interface InsertRow {
  kind: 'job' | 'slot' | 'removed';
  id: string | null;
  destination: string;
  token: number | null;
}

/** How the insert leases a new job: to this node, to it if it gets a slot at the destination, or not. */
type LeaseOnArrival = 'yes' | 'if' | 'no';

/** What an insert statement leases: each job's LeaseOnArrival, and the slots it takes first. */
interface InsertPlan {
  readonly jobs: ReadonlyArray<{
    id: string;
    destination: string;
    due: number;
    held: boolean;
    lease: LeaseOnArrival;
  }>;
  /** Destinations where it takes slots, and how many at most. */
  readonly want: ReadonlyArray<readonly [string, number]>;
  /** The jobs it may lease (they count against READY_MAX while it runs). */
  readonly leases: number;
}

/** A settle waiting to be sent (grouped like inserts). */
interface Settle {
  readonly held: Held;
  readonly outcomes: readonly RecipientOutcome[];
  readonly now: number;
  /** Every outcome final, covering every recipient of the lease. */
  readonly final: boolean;
  resolve(result: { result: string; next: number | null }): void;
  reject(err: unknown): void;
}

/** A final result of a single-destination message: recording it only removes the message. */
function removesMessage(s: Settle): boolean {
  return s.final && s.held.solo;
}

/** Message id order: statements taking message rows in one order never each wait for the other. */
function byMessageId(a: Settle, b: Settle): number {
  return a.held.id < b.held.id ? -1 : a.held.id > b.held.id ? 1 : 0;
}

/** Due jobs a look left behind (another transaction was taking them) are looked for again this much later (ms). */
const RECHECK = 20;

/** Other nodes hear of new mail at most this late (ms). */
const NOTIFY_EVERY = 20;

/**
 * Insert statements under way at once; messages arriving meanwhile are
 * grouped into the next. One: a message waits for the statement under way,
 * then goes with all that arrived meanwhile. Measured against two
 * (bench/README.md, queue-pg): groups of about 4.4 messages instead of 2.8,
 * PostgreSQL CPU per message down by a fifth, msgs/s up slightly.
 */
const GROUP_IN_FLIGHT = 1;
const GROUP_MAX = 64;
const GROUP_OCTETS = 4 * 1024 * 1024;

/**
 * Final results riding with inserts (`#ride`) that may wait to be recorded,
 * per slot a node holds at a destination. Two: at W1's pace (an insert every
 * 2-3 ms, 3-5 deliveries finishing meanwhile) nearly every result rides, and
 * commits per message fall from about 0.65 to 0.4 (bench/README.md,
 * queue-pg). The price: were the database lost, up to twice the slots of
 * deliveries whose results rode are made again, besides those running.
 */
const RIDERS_PER_SLOT = 2;

/** Settle statements under way at once, and the most settles one carries. */
const SETTLE_IN_FLIGHT = 2;
const SETTLE_MAX = 64;

/** A lease this node holds: the token that proves it. */
interface Held {
  readonly id: string;
  readonly destination: string;
  readonly token: number;
  /** The message has no job at another destination. */
  readonly solo: boolean;
}

/**
 * Jobs leased on arrival wait in memory (with their octets) for the
 * scheduler: at most this many per destination, and READY_MAX in all; past
 * that, new jobs are stored unleased and taken in due order from the database.
 */
const READY_PER_DESTINATION = 64;
const READY_MAX = 512;

/** While paused (a settle failed), the scheduler asks again this often (ms). */
const PAUSE_RETRY = 500;

/** After a look for free slots at a destination found none, the next look waits this long (ms). */
const NO_SLOT_RETRY = 100;

function memoryStream(body: Buffer): Readable {
  return new Readable({
    read() {
      this.push(body);
      this.push(null);
    },
  });
}

export class PgQueueStore implements QueueStore {
  readonly pool: pg.Pool;
  readonly #o: PgQueueOptions;
  readonly #s: string;
  readonly #chunkSize: number;
  readonly #tag = randomBytes(4).toString('hex');
  readonly #wake: Array<() => void> = [];
  readonly #held = new Map<Lease, Held>();
  readonly #waiting: Insert[] = [];
  /** Inserts and settles under way: close waits for them. */
  readonly #writes = new Set<Promise<void>>();
  #inFlight = 0;
  /** Tokens of leases whose settle is under way. */
  readonly #settling = new Set<number>();
  readonly #settles: Settle[] = [];
  /** Results riding with an insert (`#ride`) not yet recorded, per destination. */
  readonly #unconfirmed = new Map<string, number>();
  /** Final settles waiting for the next insert statement (`#ride`). */
  readonly #riders: Settle[] = [];
  #settlesInFlight = 0;
  /** Jobs leased by the statement that stored them, not yet handed to the scheduler. */
  readonly #ready: Lease[] = [];
  /** Jobs that insert statements under way may lease to this node (they count against READY_MAX). */
  #reserved = 0;
  /** The slots this node holds, per destination: their tokens (see migrations.ts, version 3). */
  readonly #slots = new Map<string, number[]>();
  /** Leases handed out and not settled, per destination (at most its slots there). */
  readonly #runningAt = new Map<string, number>();
  /** Leases in the ready list, per destination. */
  readonly #readyAt = new Map<string, number>();
  /** The most leases (running and ready) per destination since the last renewal: slots past it are let go. */
  readonly #busiest = new Map<string, number>();
  /** A settle failed: hand out no more jobs until the database answers. */
  #paused = false;
  /** Destinations where no slot was free, until when (ms). */
  readonly #noSlotsUntil = new Map<string, number>();
  /**
   * What this node knows of the database's due jobs (other than its own
   * leases), while `#known`: `#roomNext` the earliest due at a destination
   * with room; `#lookBy` when to look again anyway. Anything that may make a job
   * due sooner (a wake-up from another node, a job stored unleased while its
   * destination had room, a release or retry, a lease call that filled its limit) clears `#known`,
   * and bumps `#generation` so an answer already on its way is not believed.
   */
  #known = false;
  #roomNext: number | undefined;
  #lookBy = 0;
  /** Full destinations where due jobs wait: a settle here that makes room there leases them. */
  readonly #crowded = new Set<string>();
  #generation = 0;
  #listener: WakeListener | undefined;
  #renewal: NodeJS.Timeout | undefined;
  #notifying = false;
  #closed = false;
  #seq = 0;

  private constructor(opts: PgQueueOptions) {
    this.#o = opts;
    this.#s = ident(opts.schema);
    this.#chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.pool = new pg.Pool({
      ...opts.connection,
      max: opts.poolSize,
      types,
      // Durable at COMMIT, whatever the server's default says.
      options: '-c synchronous_commit=on -c plan_cache_mode=force_generic_plan',
      application_name: `mailframe ${opts.nodeId}`.slice(0, 63),
    });
    // An idle connection that breaks is dropped from the pool; the next query opens a new one.
    this.pool.on('error', (err) =>
      opts.log.warn({ err }, 'PostgreSQL connection lost (the pool reconnects)'),
    );
  }

  /** Connect, bring the schema up to date (refusing a newer one), and listen for other nodes. */
  static async open(opts: PgQueueOptions): Promise<PgQueueStore> {
    const store = new PgQueueStore(opts);
    try {
      if (opts.migrate ?? true) {
        const applied = await migrate(store.pool, opts.schema);
        if (applied.length > 0) opts.log.info({ schema: opts.schema, applied }, 'queue schema migrated');
      } else {
        await checkSchema(store.pool, opts.schema);
      }
      if (opts.listen ?? true) {
        const listener = new WakeListener({
          connection: { ...opts.connection, types },
          schema: opts.schema,
          nodeId: opts.nodeId,
          log: opts.log,
          onWake: () => {
            store.#forget();
            store.#wakeUp();
          },
        });
        await listener.start();
        store.#listener = listener;
      }
    } catch (err) {
      await store.pool.end().catch(() => {});
      throw err;
    }
    const every = Math.max(10, Math.floor(opts.leaseDuration / 3));
    store.#renewal = setInterval(() => {
      store.renewLeases().catch((err) => opts.log.warn({ err }, 'could not renew queue leases'));
    }, every);
    store.#renewal.unref();
    return store;
  }

  onWake(listener: () => void): void {
    this.#wake.push(listener);
  }

  #wakeUp(): void {
    for (const fn of this.#wake) fn();
  }

  /** Something may have become due in the database: look there next time. */
  #forget(): void {
    this.#known = false;
    this.#generation++;
  }

  /** Remember the database's next due times (unless something was forgotten since `generation`). */
  #learn(generation: number, roomNext: number | null, waiting: readonly string[] | null): void {
    if (generation !== this.#generation) return;
    this.#known = true;
    this.#roomNext = roomNext ?? undefined;
    // Look again after a lease's duration at the latest: a destination full because of a
    // dead node's leases gets room when they expire, and nothing tells this node.
    this.#lookBy = this.#o.clock.now() + this.#o.leaseDuration;
    this.#crowded.clear();
    for (const d of waiting ?? []) this.#crowded.add(d);
  }

  /** Whether the database may hold a job this node could lease at `now`. */
  #dbMayBeDue(now: number): boolean {
    return (
      !this.#known ||
      this.#lookBy <= now ||
      (this.#roomNext !== undefined && this.#roomNext <= now) ||
      this.#crowdedWithRoom()
    );
  }

  /**
   * Tell the other nodes, at most once per NOTIFY_EVERY ms however many
   * messages it queued meanwhile (each NOTIFY is a statement of its own, and
   * PostgreSQL serialises the commits of notifying transactions).
   */
  #notifySoon(): void {
    if (this.#notifying || this.#closed) return;
    this.#notifying = true;
    setTimeout(() => {
      this.#notifying = false;
      if (this.#closed) return;
      this.pool
        .query('SELECT pg_notify($1, $2)', [WAKE_CHANNEL, wakePayload(this.#o.schema, this.#o.nodeId)])
        .catch((err: unknown) => this.#o.log.warn({ err }, 'could not notify the other queue nodes'));
    }, NOTIFY_EVERY).unref();
  }

  /** The tokens of the leases this node holds (deliveries running and ready) and of its slots. */
  #tokens(): number[] {
    const tokens = [...this.#held.values()].map((h) => h.token);
    for (const slots of this.#slots.values()) tokens.push(...slots);
    return tokens;
  }

  /** Add `by` to a per-destination count (removed at 0). */
  #bump(counts: Map<string, number>, destination: string, by: number): void {
    const n = (counts.get(destination) ?? 0) + by;
    if (n > 0) counts.set(destination, n);
    else counts.delete(destination);
  }

  /** The jobs this node has at `destination`: running there and waiting in the ready list. */
  #busyAt(destination: string): number {
    return (this.#runningAt.get(destination) ?? 0) + (this.#readyAt.get(destination) ?? 0);
  }

  /** One more job here, running or ready: remember the most there were since the last renewal. */
  #oneMore(counts: Map<string, number>, destination: string): void {
    this.#bump(counts, destination, 1);
    const busy = this.#busyAt(destination);
    if (busy > (this.#busiest.get(destination) ?? 0)) this.#busiest.set(destination, busy);
  }

  #slotCount(destination: string): number {
    return this.#slots.get(destination)?.length ?? 0;
  }

  #tookSlot(destination: string, token: number): void {
    const slots = this.#slots.get(destination);
    if (slots) slots.push(token);
    else this.#slots.set(destination, [token]);
    this.#noSlotsUntil.delete(destination);
  }

  /**
   * Whether a lease at `destination` may start now: this node runs fewer
   * deliveries there than it holds slots (no limit without one).
   */
  #mayRun(destination: string, per: number | undefined): boolean {
    return per === undefined || (this.#runningAt.get(destination) ?? 0) < this.#slotCount(destination);
  }

  #newId(now: number): string {
    return (
      Math.max(0, Math.floor(now)).toString(36).padStart(9, '0') +
      (this.#seq++ % 46656).toString(36).padStart(3, '0') +
      this.#tag
    );
  }

  // ---- enqueue ----------------------------------------------------------------

  /**
   * The statement storing messages (rows, octets inline or in chunk rows
   * later), their recipients and their jobs: one statement, so one
   * transaction and one WAL flush for all, with no function of its own (no
   * PL/pgSQL on the hot path). Fixed text, so prepared once per connection.
   * `$1` the envelopes as JSON, `$2` the octets of all of them end to end
   * (each envelope says where its own are), `$10` the jobs, each leased to
   * this node or not (`lease`); `$6`/`$7` the destinations where it takes
   * slots first (`take_slots`), and the jobs marked `if` there are leased
   * when it got one.
   */
  #insertStatement(
    messages: readonly Insert[],
    plan: InsertPlan,
    riders: readonly Settle[] = [],
  ): pg.QueryConfig {
    const s = this.#s;
    const envelopes = [];
    const octets: Buffer[] = [];
    let offset = 0;
    for (const m of messages) {
      envelopes.push({
        id: m.id,
        from: m.input.from,
        attributes: m.input.attributes,
        source: m.input.source ?? null,
        receivedAt: Math.trunc(m.input.receivedAt),
        size: m.size,
        offset: m.body ? offset : null,
        recipients: m.input.recipients.map((r) => ({
          address: r.address,
          domain: r.domain,
          attributes: r.attributes,
        })),
      });
      if (m.body) {
        octets.push(m.body);
        offset += m.body.length;
      }
    }
    const now = this.#o.clock.now();
    return {
      name: `mailframe-insert-${this.#o.schema}`,
      text: `WITH ${this.#removeCtes(11, 12)},
msg AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(id text, "from" text, attributes jsonb, source jsonb,
    "receivedAt" bigint, size bigint, "offset" integer, recipients jsonb)
), taken AS (
  SELECT w.d AS destination, t.token FROM unnest($6::text[], $7::integer[]) AS w(d, n),
    LATERAL ${s}.take_slots($3, $4, $5, $8, w.d, w.n, $9::bigint[]) AS t(token)
), m AS (
  INSERT INTO ${s}.messages (id, sender, attributes, source, received_at, size, quarantined, body)
  SELECT x.id, x."from", x.attributes, x.source, x."receivedAt", x.size, (x.attributes -> 'quarantine') IS NOT NULL,
    CASE WHEN x."offset" IS NOT NULL THEN substring($2::bytea FROM x."offset" + 1 FOR x.size::integer) END
  FROM msg x
), r AS (
  INSERT INTO ${s}.recipients (message_id, idx, address, domain, attributes, next_attempt_at)
  SELECT x.id, (e.k - 1)::integer, e.r ->> 'address', e.r ->> 'domain', e.r -> 'attributes', x."receivedAt"
  FROM msg x, jsonb_array_elements(x.recipients) WITH ORDINALITY AS e(r, k)
), j AS (
  INSERT INTO ${s}.jobs (message_id, destination, due_at, held, lease_owner, lease_token, lease_expires)
  SELECT y.id, y.destination, CASE WHEN y.leased THEN $5 ELSE y.due END, y.held,
    CASE WHEN y.leased THEN $3 END, CASE WHEN y.leased THEN nextval('${s}.lease_tokens') END,
    CASE WHEN y.leased THEN $5 END
  FROM (SELECT z.*, NOT z.held AND (z.lease = 'yes' OR (z.lease = 'if' AND z.destination IN (SELECT t.destination FROM taken t)))
          AS leased
        FROM jsonb_to_recordset($10::jsonb) AS z(id text, destination text, due bigint, held boolean, lease text)) y
  RETURNING message_id, destination, lease_token, held
)
SELECT 'job' AS kind, j.message_id AS id, j.destination, j.lease_token AS token FROM j WHERE NOT j.held
UNION ALL
SELECT 'slot', NULL, t.destination, t.token FROM taken t
UNION ALL
SELECT 'removed', sj.message_id, NULL, sj.lease_token FROM sj`,
      values: [
        JSON.stringify(envelopes),
        octets.length === 1 ? octets[0] : Buffer.concat(octets, offset),
        this.#o.nodeId,
        now,
        now + this.#o.leaseDuration,
        plan.want.map(([d]) => d),
        plan.want.map(([, n]) => n),
        this.#o.scheduling?.perDestination ?? null,
        // Only take_slots reads them (never its own expired slots or leases back).
        plan.want.length > 0 ? this.#tokens() : [],
        JSON.stringify(plan.jobs),
        riders.map((r) => r.held.id),
        riders.map((r) => r.held.token),
      ],
    };
  }

  /**
   * Which of the new jobs the insert leases to this node: where it holds a
   * slot and the ready list has room; where it holds none, the insert first
   * takes up to half the limit there (when a look found none free lately, not
   * even that). Held (quarantined) jobs never. Without `scheduling` (the CLI),
   * none.
   */
  #plan(messages: readonly Insert[], leasing = true): InsertPlan {
    const sched = leasing ? this.#o.scheduling : undefined;
    const now = this.#o.clock.now();
    const jobs: Array<InsertPlan['jobs'][number]> = [];
    const want = new Map<string, number>();
    const adding = new Map<string, number>();
    let leases = 0;
    // Never more leases than the scheduler runs at once: a busy node leaves new jobs to the others.
    let room = sched
      ? Math.min(READY_MAX - this.#ready.length, sched.concurrency - this.#held.size) - this.#reserved
      : 0;
    for (const m of messages) {
      const held = m.input.attributes.quarantine !== undefined;
      const due = Math.trunc(m.input.receivedAt);
      for (const d of new Set(m.input.recipients.map((r) => r.domain))) {
        let lease: LeaseOnArrival = 'no';
        const queued = (this.#readyAt.get(d) ?? 0) + (adding.get(d) ?? 0);
        if (sched && !held && room > 0 && queued < READY_PER_DESTINATION) {
          const slots = this.#slotCount(d);
          const free = (this.#noSlotsUntil.get(d) ?? 0) <= now;
          if (slots > 0) {
            lease = 'yes';
            // A backlog here beyond what its slots run at once: take one more, if one is free.
            if (free && slots < sched.perDestination && queued >= slots) want.set(d, 1);
          } else if (free) {
            lease = 'if';
            want.set(d, Math.max(1, Math.ceil(sched.perDestination / 2)));
          }
        }
        if (lease !== 'no') {
          adding.set(d, (adding.get(d) ?? 0) + 1);
          leases++;
          room--;
        }
        jobs.push({ id: m.id, destination: d, due, held, lease });
      }
    }
    return { jobs, want: [...want], leases };
  }

  /**
   * An insert committed: its leased jobs join the ready list (held, so renewed
   * and counted as this node's); the slots it took are this node's; a job left
   * unleased marks its destination crowded (a look in the database finds it
   * when this node has room there, or another node's does).
   */
  #inserted(messages: readonly Insert[], plan: InsertPlan, rows: readonly InsertRow[]): void {
    const leased = new Map<string, number>();
    const got = new Map<string, number>();
    const unleased = new Set<string>();
    for (const r of rows) {
      if (r.kind === 'slot') {
        if (r.token !== null) this.#tookSlot(r.destination, r.token);
        got.set(r.destination, (got.get(r.destination) ?? 0) + 1);
      } else if (r.kind === 'removed') continue;
      else if (r.token !== null) leased.set(`${r.id}\n${r.destination}`, r.token);
      else unleased.add(r.destination);
    }
    // Fewer slots free than asked for: not asked again at once (every insert would try).
    const now = this.#o.clock.now();
    for (const [d, n] of plan.want) if ((got.get(d) ?? 0) < n) this.#noSlotsUntil.set(d, now + NO_SLOT_RETRY);
    for (const d of unleased) {
      this.#crowded.add(d);
      // Stored unleased while this node was at its limit (or did not try for a slot there):
      // its next look takes it when it has room. Where no slot was free, the nodes holding
      // them take it (woken by the NOTIFY); this node looks again by its usual times.
      if ((this.#noSlotsUntil.get(d) ?? 0) <= now) this.#forget();
    }
    for (const m of messages) {
      const input = m.input;
      if (input.attributes.quarantine !== undefined) continue;
      const destinations = new Map<string, LeasedRecipient[]>();
      input.recipients.forEach((r, index) => {
        const recipient = { index, address: r.address, attributes: r.attributes, attempts: 0, warned: false };
        const list = destinations.get(r.domain);
        if (list) list.push(recipient);
        else destinations.set(r.domain, [recipient]);
      });
      for (const [destination, recipients] of destinations) {
        const token = leased.get(`${m.id}\n${destination}`);
        if (token === undefined) continue;
        if (this.#closed) {
          // Its lease expires and another node (or this one, restarted) takes it.
          continue;
        }
        const body = m.body as Buffer;
        const lease: Lease = {
          id: m.id,
          destination,
          from: input.from,
          attributes: input.attributes,
          receivedAt: Math.trunc(input.receivedAt),
          size: m.size,
          recipients,
          stream: () => memoryStream(body),
        };
        this.#held.set(lease, { id: m.id, destination, token, solo: destinations.size === 1 });
        this.#ready.push(lease);
        this.#oneMore(this.#readyAt, destination);
      }
    }
  }

  enqueue(input: EnvelopeInput, content: MessageContent): Promise<string> {
    if (this.#closed) return Promise.reject(new Error('the queue is closed'));
    if (input.recipients.length === 0)
      return Promise.reject(new Error('a message needs at least one recipient'));
    const id = this.#newId(this.#o.clock.now());
    const queued = (): string => {
      this.#wakeUp();
      this.#notifySoon();
      return id;
    };
    if (Buffer.isBuffer(content) && content.length <= INLINE_LIMIT) {
      return new Promise<void>((resolve, reject) => {
        this.#waiting.push({ id, input, size: content.length, body: content, resolve, reject });
        this.#flush();
      }).then(queued);
    }
    return this.#enqueueChunked(id, input, content).then(queued);
  }

  /**
   * Group commit: while GROUP_IN_FLIGHT statements are under way, messages
   * that arrive wait and go together in the next one (up to GROUP_MAX).
   */
  #flush(): void {
    while (this.#inFlight < GROUP_IN_FLIGHT && this.#waiting.length > 0) {
      const group: Insert[] = [];
      let octets = 0;
      while (group.length < GROUP_MAX && this.#waiting.length > 0 && octets < GROUP_OCTETS) {
        const m = this.#waiting.shift() as Insert;
        group.push(m);
        octets += m.size;
      }
      this.#inFlight++;
      const done = this.#insert(group, this.#takeRiders()).finally(() => {
        this.#inFlight--;
        this.#writes.delete(done);
        this.#flush();
        // No insert left to ride with: the riders go on their own.
        if (this.#inFlight === 0 && this.#riders.length > 0) {
          this.#settles.push(...this.#riders.splice(0));
          this.#flushSettles();
        }
      });
      this.#writes.add(done);
    }
  }

  /** Insert a group; if it fails, each message alone (one bad message must not fail the others). */
  async #insert(group: readonly Insert[], riders: readonly Settle[] = []): Promise<void> {
    const plan = this.#plan(group);
    this.#reserved += plan.leases;
    let rows: InsertRow[];
    try {
      ({ rows } = await this.pool.query<InsertRow>(this.#insertStatement(group, plan, riders)));
    } catch (err) {
      this.#reserved -= plan.leases;
      // The settles riding along go on their own.
      if (riders.length > 0) {
        this.#settles.push(...riders);
        this.#flushSettles();
      }
      if (group.length === 1) {
        (group[0] as Insert).reject(err);
        return;
      }
      await Promise.all(group.map((m) => this.#insert([m])));
      return;
    }
    this.#reserved -= plan.leases;
    this.#inserted(group, plan, rows);
    this.#paused = false;
    if (riders.length > 0) {
      const removed = new Set(rows.filter((r) => r.kind === 'removed').map((r) => r.token));
      for (const r of riders)
        r.resolve({ result: removed.has(r.held.token) ? 'removed' : 'stale', next: null });
    }
    for (const m of group) m.resolve();
  }

  /**
   * The settles that ride with an insert statement (one round trip and one
   * commit for both): those made while messages were being stored (`#ride`),
   * and final settles of single-destination messages waiting in the settle
   * queue (every settle statement under way). In message id order.
   */
  #takeRiders(): Settle[] {
    const riders: Settle[] = this.#riders.splice(0, SETTLE_MAX);
    for (let i = 0; i < this.#settles.length && riders.length < SETTLE_MAX; ) {
      const item = this.#settles[i] as Settle;
      if (removesMessage(item)) {
        riders.push(item);
        this.#settles.splice(i, 1);
      } else i++;
    }
    return riders.sort(byMessageId);
  }

  /** A large message: its octets in chunk rows, all in one transaction. */
  async #enqueueChunked(id: string, input: EnvelopeInput, content: MessageContent): Promise<void> {
    const size = Buffer.isBuffer(content) ? content.length : content.size;
    const source: AsyncIterable<Buffer> = Buffer.isBuffer(content)
      ? memoryStream(content)
      : (content.stream() as AsyncIterable<Buffer>);
    const message: Insert = { id, input, size, body: null, resolve: () => {}, reject: () => {} };
    await this.#transaction(async (client) => {
      await client.query(this.#insertStatement([message], this.#plan([message], false)));
      const insert = `INSERT INTO ${this.#s}.message_chunks (message_id, seq, data) VALUES ($1, $2, $3)`;
      const cap = this.#chunkSize;
      let parts: Buffer[] = [];
      let have = 0;
      let seq = 0;
      let total = 0;
      for await (const piece of source) {
        total += piece.length;
        parts.push(piece);
        have += piece.length;
        while (have >= cap) {
          const all = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, have);
          await client.query(insert, [id, seq++, all.subarray(0, cap)]);
          const rest = all.subarray(cap);
          parts = rest.length > 0 ? [rest] : [];
          have = rest.length;
        }
      }
      if (have > 0) await client.query(insert, [id, seq++, Buffer.concat(parts, have)]);
      if (total !== size) throw new Error(`message stream gave ${total} octets, expected ${size}`);
    });
    // Stored unleased (its octets are not in memory): for lease_due.
    this.#forget();
  }

  /**
   * `work` in one transaction on one connection: committed when it resolves,
   * rolled back when it throws (and then the connection is dropped rather than
   * reused, as a failed transaction may have left it unusable).
   */
  async #transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      broken = err as Error;
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release(broken);
    }
  }

  // ---- leases -----------------------------------------------------------------

  /** The per-destination limit that applies: the scheduler's, else the one `scheduling` gives (none: no slots). */
  #per(room: DestinationRoom | undefined): number | undefined {
    return room?.perDestination ?? this.#o.scheduling?.perDestination;
  }

  /** How many more jobs this node may lease at `destination` now: its slots there not running nor waiting ready. */
  #slotRoom(destination: string): number {
    return this.#slotCount(destination) - this.#busyAt(destination);
  }

  /** Destinations where this node holds ready jobs but no slot (it lost them): it needs one to run them. */
  #needSlots(per: number | undefined): string[] {
    if (per === undefined) return [];
    const need = new Set<string>();
    for (const d of this.#readyAt.keys()) if (this.#slotCount(d) === 0) need.add(d);
    return [...need];
  }

  async leaseDue(now: number, limit: number, room?: DestinationRoom): Promise<Lease[]> {
    if (this.#closed || limit <= 0) return [];
    if (this.#paused) {
      // A result could not be recorded: deliver nothing more until the database answers again
      // (each delivery made meanwhile would be made again: at least once, but not more than needed).
      try {
        await this.pool.query('SELECT 1');
      } catch {
        return [];
      }
      this.#paused = false;
    }
    const per = this.#per(room);
    const leases = this.#takeReady(limit, room, per);
    const need = this.#needSlots(per);
    if (leases.length >= limit) return leases;
    if (this.#o.scheduling && need.length === 0 && !this.#dbMayBeDue(now)) return leases;
    const want = limit - leases.length;
    const generation = this.#generation;
    let rows: LeaseRow[];
    try {
      rows = await this.#leaseDueRows(now, want, per, need);
    } catch (err) {
      // The jobs leased on arrival are this node's whatever the database says now: hand them out.
      if (leases.length === 0) throw err;
      this.#o.log.warn({ err }, 'could not look for more due jobs in the queue database');
      return leases;
    }
    const last = rows.at(-1);
    const found = this.#leased(rows);
    for (const lease of found) this.#oneMore(this.#runningAt, lease.destination);
    // The last row tells when to look again; a full batch may have left more behind.
    if (found.length < want) {
      this.#learn(generation, last?.room_next ?? null, last?.waiting ?? null);
      // Due with room, yet not taken: another transaction was leasing there. Not again at once.
      if (this.#known && this.#roomNext !== undefined && this.#roomNext <= now)
        this.#roomNext = now + RECHECK;
    } else this.#forget();
    leases.push(...found);
    // Slots taken for ready jobs that had none: those may run now.
    if (need.length > 0 && leases.length < limit)
      leases.push(...this.#takeReady(limit - leases.length, room, per));
    return leases;
  }

  async #leaseDueRows(
    now: number,
    want: number,
    per: number | undefined,
    need: readonly string[],
  ): Promise<LeaseRow[]> {
    const have = [...this.#slots.keys()];
    const { rows } = await this.pool.query<LeaseRow>({
      name: `mailframe-lease-due-${this.#o.schema}`,
      text: `SELECT * FROM ${this.#s}.lease_due($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      values: [
        this.#o.nodeId,
        now,
        want,
        per ?? null,
        now + this.#o.leaseDuration,
        this.#tokens(),
        have,
        have.map((d) => Math.max(0, this.#slotRoom(d))),
        need,
      ],
    });
    return rows;
  }

  /**
   * The leases in lease rows (held from now on) and the slots taken (this
   * node's from now on); the last row, with neither, carries other news.
   */
  #leased(rows: readonly LeaseRow[]): Lease[] {
    const s = this.#s;
    const leases: Lease[] = [];
    for (const row of rows) {
      if (row.id === null) {
        if (row.destination !== null && row.token !== null) this.#tookSlot(row.destination, row.token);
        continue;
      }
      const held: Held = {
        id: row.id,
        destination: row.destination,
        token: row.token,
        solo: row.solo === true,
      };
      if (!row.recipients || row.recipients.length === 0) {
        // Nothing pending there any more (should not happen): drop the job rather than offer it.
        this.pool
          .query(`DELETE FROM ${s}.jobs WHERE message_id = $1 AND destination = $2 AND lease_token = $3`, [
            held.id,
            held.destination,
            held.token,
          ])
          .catch((err: unknown) => this.#o.log.warn({ err, qid: held.id }, 'could not drop an empty job'));
        continue;
      }
      const body = row.body;
      const id = row.id;
      const lease: Lease = {
        id,
        destination: row.destination,
        from: row.sender,
        attributes: row.attributes,
        receivedAt: row.received_at,
        size: row.size,
        recipients: row.recipients,
        stream: () => (body ? memoryStream(body) : this.#chunkStream(id, row.size)),
      };
      this.#held.set(lease, held);
      leases.push(lease);
    }
    return leases;
  }

  /**
   * Up to `limit` jobs leased when they were stored, oldest first, within the
   * destinations' room here and the slots this node holds there.
   */
  #takeReady(limit: number, room: DestinationRoom | undefined, per: number | undefined): Lease[] {
    const out: Lease[] = [];
    if (this.#ready.length === 0) return out;
    const taking = new Map<string, number>();
    for (let i = 0; i < this.#ready.length && out.length < limit; ) {
      const lease = this.#ready[i] as Lease;
      const d = lease.destination;
      const n = taking.get(d) ?? 0;
      if ((room && n >= roomAt(room, d)) || !this.#mayRun(d, per)) {
        i++;
        continue;
      }
      taking.set(d, n + 1);
      this.#ready.splice(i, 1);
      this.#bump(this.#readyAt, d, -1);
      this.#oneMore(this.#runningAt, d);
      out.push(lease);
    }
    return out;
  }

  /** The octets of a large message, one chunk row per read: never the whole message in memory. */
  #chunkStream(id: string, size: number): Readable {
    const pool = this.pool;
    const sql = `SELECT data FROM ${this.#s}.message_chunks WHERE message_id = $1 AND seq = $2`;
    let seq = 0;
    let total = 0;
    return new Readable({
      read() {
        pool.query<{ data: Buffer }>(sql, [id, seq]).then(
          (r) => {
            const row = r.rows[0];
            if (!row) {
              // Deleted while being read, or cut short: never hand out a partial message as whole.
              if (total !== size)
                this.destroy(new Error(`queued message ${id} ends after ${total} of ${size} octets`));
              else this.push(null);
              return;
            }
            seq++;
            total += row.data.length;
            this.push(row.data);
          },
          (err: unknown) => this.destroy(err as Error),
        );
      },
    });
  }

  async nextDue(room?: DestinationRoom): Promise<number | undefined> {
    if (this.#closed) return undefined;
    const now = this.#o.clock.now();
    const per = this.#per(room);
    if (this.#paused) return now + PAUSE_RETRY;
    if (this.#takeable(room, per)) return now;
    if (this.#o.scheduling && room && this.#known) return this.#crowdedWithRoom() ? now : this.#roomNext;
    const generation = this.#generation;
    const have = [...this.#slots.keys()];
    const { rows } = await this.pool.query<{ room_next: number | null; waiting: string[] }>({
      name: `mailframe-next-due-${this.#o.schema}`,
      text: `SELECT room_next, waiting FROM ${this.#s}.next_due($1, $2, $3, $4, $5)`,
      values: [now, per ?? null, this.#tokens(), have, have.filter((d) => this.#slotRoom(d) <= 0)],
    });
    const row = rows[0];
    if (room) this.#learn(generation, row?.room_next ?? null, row?.waiting ?? null);
    return row?.room_next ?? undefined;
  }

  /** Whether a job of the ready list fits the room (and this node's slots). */
  #takeable(room: DestinationRoom | undefined, per: number | undefined): boolean {
    return this.#ready.some((l) => roomAt(room, l.destination) > 0 && this.#mayRun(l.destination, per));
  }

  /** Whether jobs wait in the database at a destination where this node now has room to lease them. */
  #crowdedWithRoom(): boolean {
    for (const d of this.#crowded) if (this.#slotRoom(d) > 0) return true;
    return false;
  }

  /**
   * Push the expiry of every lease and slot this node holds, and let go of the
   * slots it did not use since the last renewal (more than the most jobs it
   * had running and ready at their destination meanwhile), so that other
   * nodes can take them; logs the leases and slots another node took over.
   */
  async renewLeases(): Promise<void> {
    if (this.#closed) return;
    const held = [...this.#held.values()].filter((h) => !this.#settling.has(h.token));
    const release: number[] = [];
    const keep: number[] = [];
    for (const [d, tokens] of this.#slots) {
      const busy = this.#busyAt(d);
      const use = Math.max(this.#busiest.get(d) ?? 0, busy);
      while (tokens.length > use) release.push(tokens.pop() as number);
      if (tokens.length === 0) this.#slots.delete(d);
      keep.push(...tokens);
      if (busy > 0) this.#busiest.set(d, busy);
      else this.#busiest.delete(d);
    }
    if (held.length === 0 && keep.length === 0 && release.length === 0) return;
    const s = this.#s;
    const expires = this.#o.clock.now() + this.#o.leaseDuration;
    const { rows } = await this.pool.query<{ token: number; slot: boolean }>({
      name: `mailframe-renew-${this.#o.schema}`,
      text: `WITH rel AS (UPDATE ${s}.slots SET owner = NULL, token = NULL, expires = NULL WHERE token = ANY ($3::bigint[])),
sl AS (UPDATE ${s}.slots SET expires = $1 WHERE token = ANY ($4::bigint[]) RETURNING token),
jb AS (UPDATE ${s}.jobs j SET lease_expires = $1, due_at = $1
        FROM unnest($2::text[], $5::text[], $6::bigint[]) AS u(id, d, t)
        WHERE j.message_id = ANY ($2::text[]) AND j.message_id = u.id AND j.destination = u.d AND j.lease_token = u.t
        RETURNING j.lease_token)
SELECT jb.lease_token AS token, false AS slot FROM jb UNION ALL SELECT sl.token, true FROM sl`,
      // Jobs by their primary key (no index on tokens: a scan of the whole table otherwise).
      values: [
        expires,
        held.map((h) => h.id),
        release,
        keep,
        held.map((h) => h.destination),
        held.map((h) => h.token),
      ],
    });
    const kept = new Set(rows.map((r) => r.token));
    for (const h of held) {
      if (!kept.has(h.token))
        this.#o.log.warn(
          { qid: h.id, destination: h.destination },
          'queue lease lost (taken over, or the message deleted)',
        );
    }
    for (const [d, tokens] of this.#slots) {
      const left = tokens.filter((t) => kept.has(t) || !keep.includes(t));
      if (left.length === tokens.length) continue;
      this.#o.log.warn({ destination: d }, 'queue slot lost (taken over by another node after it expired)');
      if (left.length > 0) this.#slots.set(d, left);
      else this.#slots.delete(d);
    }
  }

  async settle(lease: Lease, outcomes: readonly RecipientOutcome[], now: number): Promise<void> {
    const held = this.#held.get(lease);
    if (!held) return;
    // After close the result is dropped: the lease expires and the job is tried again (at least once).
    if (this.#closed) {
      this.#held.delete(lease);
      this.#bump(this.#runningAt, held.destination, -1);
      return;
    }
    const covered = new Set(outcomes.filter((o) => o.status !== 'deferred').map((o) => o.index));
    const final = lease.recipients.every((r) => covered.has(r.index));
    if (
      final &&
      held.solo &&
      (this.#inFlight > 0 || this.#waiting.length > 0) &&
      (this.#unconfirmed.get(held.destination) ?? 0) <
        RIDERS_PER_SLOT * Math.max(1, this.#slotCount(held.destination))
    ) {
      this.#ride(lease, held, outcomes, now);
      return;
    }
    // Still ours until the settle commits (nextDue leaves it out), but no longer renewed.
    this.#settling.add(held.token);
    const written = this.#writing();
    let answer: { result: string; next: number | null };
    try {
      answer = await new Promise((resolve, reject) => {
        this.#settles.push({ held, outcomes, now, final, resolve, reject });
        this.#flushSettles();
      });
    } finally {
      this.#held.delete(lease);
      this.#bump(this.#runningAt, held.destination, -1);
      this.#settling.delete(held.token);
      written();
    }
    this.#settled(held, answer);
  }

  /**
   * A final settle of a single-destination message while messages are being
   * stored: it rides with the next insert statement, and the delivery is done
   * for the scheduler now (its slot free for the next). At most
   * RIDERS_PER_SLOT results per slot this node holds at a destination wait to
   * be recorded so (were the database gone, the deliveries made again would be
   * at most three times its slots: those running and those riding). Its result is
   * recorded with that insert's commit;
   * lost only if the node or the database crashes first, and then the
   * delivery is made again (at least once, as with the settles' asynchronous
   * commit).
   */
  #ride(lease: Lease, held: Held, outcomes: readonly RecipientOutcome[], now: number): void {
    this.#held.delete(lease);
    this.#bump(this.#runningAt, held.destination, -1);
    this.#bump(this.#unconfirmed, held.destination, 1);
    const written = this.#writing();
    const finish = () => {
      this.#bump(this.#unconfirmed, held.destination, -1);
      written();
    };
    this.#riders.push({
      held,
      outcomes,
      now,
      final: true,
      resolve: (answer) => {
        finish();
        this.#settled(held, answer);
      },
      reject: (err) => {
        finish();
        this.#paused = true;
        this.#o.log.warn(
          { err, qid: held.id, destination: held.destination },
          'could not record the result of a delivery: it will be made again once its lease expires',
        );
      },
    });
  }

  /** A write under way that close waits for; call the function returned when it is done. */
  #writing(): () => void {
    let done!: () => void;
    const writing = new Promise<void>((resolve) => {
      done = resolve;
    });
    this.#writes.add(writing);
    return () => {
      this.#writes.delete(writing);
      done();
    };
  }

  /** What a settle's answer says: a stale lease is logged; a deferral is due again then. */
  #settled(held: Held, answer: { result: string; next: number | null }): void {
    if (answer.result === 'stale') {
      this.#o.log.warn(
        { qid: held.id, destination: held.destination },
        'delivery finished after its lease was taken over (or the message was deleted): its results are not recorded',
      );
    } else if (answer.next !== null && this.#known) {
      // Deferred: the job is due again then.
      this.#roomNext = Math.min(this.#roomNext ?? answer.next, answer.next);
    }
  }

  /** Settles arriving while SETTLE_IN_FLIGHT statements are under way go together in the next one. */
  #flushSettles(): void {
    while (this.#settlesInFlight < SETTLE_IN_FLIGHT && this.#settles.length > 0) {
      const group = this.#settles.splice(0, SETTLE_MAX);
      this.#settlesInFlight++;
      this.#settleGroup(group).finally(() => {
        this.#settlesInFlight--;
        this.#flushSettles();
      });
    }
  }

  /**
   * The settles of a group, in message id order (two groups take message rows
   * in one order, never each waiting for the other). A lease whose every
   * recipient got a final outcome, of a message with no job elsewhere, only
   * removes the message: one plain statement for all such (`#removeCtes`);
   * the others go through `settle_many()`.
   */
  async #settleRows(items: readonly Settle[]): Promise<SettleRow[]> {
    const fast = items.filter(removesMessage);
    const slow = items.filter((i) => !removesMessage(i));
    const s = this.#s;
    const queries: Array<Promise<pg.QueryResult<SettleRow>>> = [];
    if (fast.length > 0)
      queries.push(
        this.pool.query<SettleRow>({
          name: `mailframe-settle-fast-${this.#o.schema}`,
          // A result lost in a database crash repeats the attempt (at least once): no WAL flush to wait for.
          text: `WITH ${this.#removeCtes(1, 2)},
a AS (SELECT set_config('synchronous_commit', 'off', true))
SELECT sj.lease_token AS token, 'removed' AS result, NULL::bigint AS next_due FROM sj, a`,
          values: [fast.map((i) => i.held.id), fast.map((i) => i.held.token)],
        }),
      );
    if (slow.length > 0)
      queries.push(
        this.pool.query<SettleRow>({
          name: `mailframe-settle-${this.#o.schema}`,
          text: `SELECT * FROM ${s}.settle_many($1)`,
          values: [
            JSON.stringify(
              slow.map((i) => ({
                id: i.held.id,
                destination: i.held.destination,
                token: i.held.token,
                now: Math.trunc(i.now),
                final: i.final,
                outcomes: i.outcomes,
              })),
            ),
          ],
        }),
      );
    const results = await Promise.all(queries);
    return results.flatMap((r) => r.rows);
  }

  /**
   * The CTEs removing the messages of final settles of single-destination
   * messages (ids `$idsParam`, lease tokens `$tokensParam`): the message rows
   * locked first, as every statement of the queue takes a message's rows
   * (never each waiting for the other), its job deleted only if the token
   * still holds, and then its other rows; `sj` lists the leases removed. A
   * lease token names one lease of one job (the tokens come from one
   * sequence), so a job is matched by its token among the tokens, with no
   * pairing of ids and tokens: each step is a primary-key lookup of an array
   * (`= ANY (ARRAY(...))`, computed once), never a hash join, which cost
   * PostgreSQL 7-13 % more CPU per message for these small sets. (The
   * generic plan knows nothing of the arrays: a join to a set-returning
   * function may be planned over a scan of a whole table.)
   */
  #removeCtes(ids: number, tokens: number): string {
    const s = this.#s;
    return `lk AS (SELECT lm.id FROM ${s}.messages lm WHERE lm.id = ANY ($${ids}::text[]) ORDER BY lm.id FOR UPDATE),
sj AS (DELETE FROM ${s}.jobs dj
        WHERE dj.message_id = ANY (ARRAY(SELECT lk.id FROM lk)) AND dj.lease_token = ANY ($${tokens}::bigint[])
        RETURNING dj.message_id, dj.lease_token),
sr AS (DELETE FROM ${s}.recipients dr WHERE dr.message_id = ANY (ARRAY(SELECT sj.message_id FROM sj))),
sc AS (DELETE FROM ${s}.message_chunks dc WHERE dc.message_id = ANY (ARRAY(SELECT sj.message_id FROM sj))),
sm AS (DELETE FROM ${s}.messages dm WHERE dm.id = ANY (ARRAY(SELECT sj.message_id FROM sj)))`;
  }

  /** One group of settles; if it fails, each settle alone (one bad one must not fail the others). */
  async #settleGroup(group: readonly Settle[]): Promise<void> {
    const items = [...group].sort(byMessageId);
    let rows: SettleRow[];
    try {
      rows = await this.#settleRows(items);
    } catch (err) {
      if (items.length === 1) {
        this.#paused = true;
        (items[0] as Settle).reject(err);
        return;
      }
      await Promise.all(items.map((i) => this.#settleGroup([i])));
      return;
    }
    const settled = new Map<number, { result: string; next: number | null }>();
    for (const r of rows) settled.set(r.token, { result: r.result, next: r.next_due });
    for (const i of items) {
      const r = settled.get(i.held.token);
      if (r) i.resolve(r);
      // The fast statement returns only the leases it removed: the others were stale.
      else if (removesMessage(i)) i.resolve({ result: 'stale', next: null });
      else i.reject(new Error(`settle of queued message ${i.held.id} returned nothing`));
    }
  }

  // ---- management -------------------------------------------------------------

  /**
   * A query planned for its values: the pool's sessions use generic plans,
   * right for the hot path's fixed statements but not for a query whose
   * optional filters (`$n IS NULL OR ...`) only its values can simplify.
   */
  #planned<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    return this.#transaction(async (client) => {
      await client.query('SET LOCAL plan_cache_mode = force_custom_plan');
      return client.query<R>(text, values);
    });
  }

  /** Summaries, oldest first, filtered (and by id, for `show`). */
  async #summaries(filter: QueueFilter, id?: string): Promise<SummaryRow[]> {
    const s = this.#s;
    const { rows } = await this.#planned<SummaryRow>(
      `SELECT * FROM (
  SELECT m.id, m.sender, m.received_at, m.size,
    count(*)::integer AS recipients,
    count(*) FILTER (WHERE r.status = 'pending')::integer AS pending,
    coalesce(max(r.attempts) FILTER (WHERE r.status = 'pending'), 0)::integer AS attempts,
    min(r.next_attempt_at) FILTER (WHERE r.status = 'pending') AS next_attempt_at,
    (SELECT p.reply FROM ${s}.recipients p
     WHERE p.message_id = m.id AND p.status = 'pending' AND p.last_attempt_at IS NOT NULL
     ORDER BY p.last_attempt_at DESC, p.idx LIMIT 1) AS last_reply,
    CASE WHEN m.quarantined THEN m.attributes -> 'quarantine' END AS quarantine,
    CASE
      WHEN m.quarantined THEN 'quarantined'
      WHEN m.held THEN 'held'
      WHEN EXISTS (SELECT 1 FROM ${s}.jobs j
                   WHERE j.message_id = m.id AND j.lease_token IS NOT NULL AND j.lease_expires > $1) THEN 'active'
      WHEN coalesce(max(r.attempts) FILTER (WHERE r.status = 'pending'), 0) > 0 THEN 'deferred'
      ELSE 'queued'
    END AS state
  FROM ${s}.messages m JOIN ${s}.recipients r ON r.message_id = m.id
  WHERE ($4::text IS NULL OR m.id = $4)
    AND ($2::text IS NULL OR strpos(lower(m.sender), $2) > 0
         OR EXISTS (SELECT 1 FROM ${s}.recipients q WHERE q.message_id = m.id AND strpos(lower(q.address), $2) > 0))
    AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM ${s}.recipients d
                                     WHERE d.message_id = m.id AND d.status = 'pending' AND d.domain = $6))
  GROUP BY m.id
) x WHERE ($3::text IS NULL OR x.state = $3)
ORDER BY x.received_at, x.id COLLATE "C" LIMIT $5 OFFSET $7`,
      [
        this.#o.clock.now(),
        filter.search?.toLowerCase() ?? null,
        filter.state ?? null,
        id ?? null,
        filter.limit ?? null,
        filter.destination?.toLowerCase() ?? null,
        filter.offset ?? 0,
      ],
    );
    return rows;
  }

  #summary(r: SummaryRow): QueueSummary {
    return {
      id: r.id,
      from: r.sender,
      receivedAt: r.received_at,
      size: r.size,
      state: r.state,
      recipients: r.recipients,
      pending: r.pending,
      attempts: r.attempts,
      nextAttemptAt: r.next_attempt_at ?? undefined,
      lastReply: r.last_reply ?? undefined,
      ...(r.quarantine === null ? {} : { quarantine: r.quarantine }),
    };
  }

  async list(filter: QueueFilter = {}): Promise<QueueSummary[]> {
    return (await this.#summaries(filter)).map((r) => this.#summary(r));
  }

  async show(id: string): Promise<QueueDetail | undefined> {
    if (!ID.test(id)) return undefined;
    const [summary] = await this.#summaries({}, id);
    if (!summary) return undefined;
    const s = this.#s;
    const { rows } = await this.pool.query<{
      attributes: QueueDetail['attributes'];
      source: MessageSource | null;
      head: Buffer | null;
      recipients: RecipientRow[];
    }>(
      `SELECT m.attributes, m.source, substring(m.body FROM 1 FOR 65536) AS head,
  (SELECT jsonb_agg(to_jsonb(r) ORDER BY r.idx) FROM ${s}.recipients r WHERE r.message_id = m.id) AS recipients
FROM ${s}.messages m WHERE m.id = $1`,
      [id],
    );
    const row = rows[0];
    if (!row) return undefined;
    let headers = '';
    try {
      const stream = row.head ? memoryStream(row.head) : this.#chunkStream(id, summary.size);
      headers = (await readHeaderSection(stream, 64 * 1024)).toString('utf8');
    } catch {
      // Deleted meanwhile: show what there is.
    }
    return {
      ...this.#summary(summary),
      attributes: row.attributes,
      source: row.source ?? undefined,
      recipientStates: row.recipients.map((r) => ({
        address: r.address,
        domain: r.domain,
        attributes: r.attributes,
        status: r.status,
        attempts: r.attempts,
        nextAttemptAt: r.next_attempt_at,
        ...(r.last_attempt_at === null ? {} : { lastAttemptAt: r.last_attempt_at }),
        ...(r.reply === null ? {} : { reply: r.reply }),
        ...(r.mta === null ? {} : { mta: r.mta }),
        ...(r.mta_address === null ? {} : { mtaAddress: r.mta_address }),
        ...(r.warned ? { warned: true } : {}),
      })),
      headers,
    };
  }

  /** hold: stop scheduling (a quarantined message stays quarantined). */
  async hold(id: string): Promise<boolean> {
    if (!ID.test(id)) return false;
    // Its jobs leased here on arrival and not started yet are let go (due as of its arrival once released).
    const dropped = this.#dropReady(id);
    const s = this.#s;
    const { rows } = await this.pool.query<{ n: number }>(
      `WITH m AS (UPDATE ${s}.messages SET held = true WHERE id = $1 RETURNING id, received_at),
j AS (UPDATE ${s}.jobs j SET held = true,
        lease_owner = CASE WHEN j.lease_token = ANY ($2::bigint[]) THEN NULL ELSE j.lease_owner END,
        lease_expires = CASE WHEN j.lease_token = ANY ($2::bigint[]) THEN NULL ELSE j.lease_expires END,
        due_at = CASE WHEN j.lease_token = ANY ($2::bigint[]) THEN (SELECT received_at FROM m) ELSE j.due_at END,
        lease_token = CASE WHEN j.lease_token = ANY ($2::bigint[]) THEN NULL ELSE j.lease_token END
      WHERE j.message_id IN (SELECT id FROM m))
SELECT (SELECT count(*) FROM m)::integer AS n`,
      [id, dropped],
    );
    return (rows[0]?.n ?? 0) > 0;
  }

  /** release: out of hold and out of quarantine, scheduled again; the other nodes are told. */
  async release(id: string): Promise<boolean> {
    if (!ID.test(id)) return false;
    const s = this.#s;
    const { rows } = await this.pool.query<{ n: number }>(
      `WITH m AS (UPDATE ${s}.messages SET held = false, quarantined = false WHERE id = $1 RETURNING id),
j AS (UPDATE ${s}.jobs SET held = false WHERE message_id IN (SELECT id FROM m))
SELECT (SELECT count(*) FROM m)::integer AS n, pg_notify($2, $3)`,
      [id, WAKE_CHANNEL, wakePayload(this.#o.schema, this.#o.nodeId)],
    );
    const found = (rows[0]?.n ?? 0) > 0;
    if (found) {
      this.#forget();
      this.#wakeUp();
    }
    return found;
  }

  async retryNow(id: string): Promise<boolean> {
    if (!ID.test(id)) return false;
    const s = this.#s;
    // Due as of the message's arrival: due now on every node, whatever this one's clock says.
    const { rows } = await this.pool.query<{ n: number }>(
      `WITH m AS (SELECT id, received_at FROM ${s}.messages WHERE id = $1 FOR UPDATE),
r AS (UPDATE ${s}.recipients SET next_attempt_at = least(next_attempt_at, (SELECT received_at FROM m))
      WHERE message_id IN (SELECT id FROM m) AND status = 'pending'),
j AS (UPDATE ${s}.jobs SET due_at = least(due_at, (SELECT received_at FROM m))
      WHERE message_id IN (SELECT id FROM m) AND lease_token IS NULL)
SELECT (SELECT count(*) FROM m)::integer AS n, pg_notify($2, $3)`,
      [id, WAKE_CHANNEL, wakePayload(this.#o.schema, this.#o.nodeId)],
    );
    const found = (rows[0]?.n ?? 0) > 0;
    if (found) {
      this.#forget();
      this.#wakeUp();
    }
    return found;
  }

  async delete(id: string): Promise<boolean> {
    if (!ID.test(id)) return false;
    this.#dropReady(id);
    const { rows } = await this.pool.query<{ found: boolean }>(
      `SELECT ${this.#s}.drop_message($1) AS found`,
      [id],
    );
    return rows[0]?.found === true;
  }

  /**
   * Let go of the jobs of message `id` still waiting in the ready list (a hold
   * or delete here); returns their tokens.
   */
  #dropReady(id: string): number[] {
    const tokens: number[] = [];
    for (let i = this.#ready.length - 1; i >= 0; i--) {
      const lease = this.#ready[i] as Lease;
      if (lease.id !== id) continue;
      this.#ready.splice(i, 1);
      this.#bump(this.#readyAt, lease.destination, -1);
      const held = this.#held.get(lease);
      if (held) tokens.push(held.token);
      this.#held.delete(lease);
    }
    return tokens;
  }

  async content(id: string): Promise<{ size: number; stream(): Readable } | undefined> {
    if (!ID.test(id)) return undefined;
    const { rows } = await this.pool.query<{ size: number; body: Buffer | null }>(
      `SELECT size, body FROM ${this.#s}.messages WHERE id = $1`,
      [id],
    );
    const row = rows[0];
    if (!row) return undefined;
    const { size, body } = row;
    return { size, stream: () => (body ? memoryStream(body) : this.#chunkStream(id, size)) };
  }

  /** A round trip to the queue's tables: rejects when the database or the schema cannot be reached. */
  async check(): Promise<void> {
    if (this.#closed) throw new Error('the queue store is closed');
    await this.pool.query(`SELECT max(version) FROM ${this.#s}.schema_version`);
  }

  async stats(): Promise<QueueStats> {
    const s = this.#s;
    const { rows } = await this.pool.query<{
      messages: number;
      held: number;
      quarantined: number;
      deferred: number;
      active: number;
      pending: number;
      bytes: number;
      oldest: number | null;
      next: number | null;
      destinations: Array<{ destination: string; pending: number }>;
    }>(
      `SELECT
  (SELECT count(*)::integer FROM ${s}.messages) AS messages,
  (SELECT count(*)::integer FROM ${s}.messages WHERE held AND NOT quarantined) AS held,
  (SELECT count(*)::integer FROM ${s}.messages WHERE quarantined) AS quarantined,
  (SELECT count(*)::integer FROM ${s}.messages m WHERE NOT m.held AND NOT m.quarantined
     AND NOT EXISTS (SELECT 1 FROM ${s}.jobs j
                     WHERE j.message_id = m.id AND j.lease_token IS NOT NULL AND j.lease_expires > $1)
     AND EXISTS (SELECT 1 FROM ${s}.recipients r
                 WHERE r.message_id = m.id AND r.status = 'pending' AND r.attempts > 0)) AS deferred,
  (SELECT count(*)::integer FROM ${s}.jobs WHERE lease_token IS NOT NULL AND lease_expires > $1) AS active,
  (SELECT count(*)::integer FROM ${s}.recipients WHERE status = 'pending') AS pending,
  (SELECT coalesce(sum(size), 0)::bigint FROM ${s}.messages) AS bytes,
  (SELECT min(received_at) FROM ${s}.messages) AS oldest,
  (SELECT min(due_at) FROM ${s}.jobs WHERE NOT held AND (lease_token IS NULL OR lease_expires <= $1)) AS next,
  (SELECT coalesce(jsonb_agg(jsonb_build_object('destination', d.domain, 'pending', d.n)
                             ORDER BY d.n DESC, d.domain COLLATE "C"), '[]')
   FROM (SELECT domain, count(*)::integer AS n FROM ${s}.recipients WHERE status = 'pending'
         GROUP BY domain ORDER BY n DESC, domain COLLATE "C" LIMIT 10) d) AS destinations`,
      [this.#o.clock.now()],
    );
    const r = rows[0];
    if (!r) throw new Error('queue statistics query returned nothing');
    return {
      messages: r.messages,
      held: r.held,
      quarantined: r.quarantined,
      deferred: r.deferred,
      active: r.active,
      recipients: { pending: r.pending },
      bytes: r.bytes,
      oldestReceivedAt: r.oldest ?? undefined,
      nextAttemptAt: r.next ?? undefined,
      destinations: r.destinations,
    };
  }

  /** Stop taking work and disconnect. Leases still held expire and are taken over (or retaken after a restart). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#renewal);
    // Messages being stored still get their answer; results being recorded still land.
    while (this.#writes.size > 0) await Promise.allSettled([...this.#writes]);
    // Let go of the slots and of the jobs leased on arrival that never started, for the
    // other nodes to take at once (else they would after their leases expire).
    const ready = this.#ready.flatMap((l) => {
      const held = this.#held.get(l);
      return held ? [held.token] : [];
    });
    const slots = [...this.#slots.values()].flat();
    if (ready.length > 0 || slots.length > 0) {
      const s = this.#s;
      await this.pool
        .query(
          `WITH rel AS (UPDATE ${s}.slots SET owner = NULL, token = NULL, expires = NULL WHERE token = ANY ($2::bigint[]))
UPDATE ${s}.jobs SET lease_owner = NULL, lease_token = NULL, lease_expires = NULL, due_at = $3
WHERE lease_token = ANY ($1::bigint[])`,
          [ready, slots, this.#o.clock.now()],
        )
        .catch((err: unknown) => this.#o.log.warn({ err }, 'could not let go of queue leases at close'));
      this.#ready.length = 0;
      this.#slots.clear();
    }
    await this.#listener?.close();
    await this.pool.end();
  }
}
