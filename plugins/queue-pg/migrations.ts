/**
 * The queue's tables in PostgreSQL, as numbered migrations applied at start
 * (or by `mailframe queue migrate`). `schema_version` holds the number of the
 * last one applied; a database at a newer version than this code knows is
 * refused, so an old node never writes to tables it does not understand.
 *
 * Every migration runs in its own transaction under an advisory lock, so
 * nodes starting together apply each one exactly once.
 */
import type { Pool, PoolClient } from 'pg';

/** A quoted SQL identifier. */
export function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** The SQL of each migration, for schema `s` (a quoted identifier); index 0 is version 1. */
const MIGRATIONS: ReadonlyArray<(s: string) => string> = [
  (s) => `
CREATE SEQUENCE ${s}.lease_tokens;

-- One row per message: the envelope, and the octets once (inline when small, else in message_chunks).
CREATE TABLE ${s}.messages (
  id text PRIMARY KEY,
  sender text NOT NULL,
  attributes jsonb NOT NULL,
  source jsonb,
  received_at bigint NOT NULL,
  size bigint NOT NULL,
  -- held: an operator stopped it. quarantined: a policy action set it aside on
  -- arrival (attributes.quarantine), in the same transaction that stored it.
  held boolean NOT NULL DEFAULT false,
  quarantined boolean NOT NULL DEFAULT false,
  body bytea
);

CREATE TABLE ${s}.message_chunks (
  message_id text NOT NULL REFERENCES ${s}.messages (id) ON DELETE CASCADE,
  seq integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (message_id, seq)
);

-- Per-recipient delivery state (times in ms since the epoch, from the server clock).
CREATE TABLE ${s}.recipients (
  message_id text NOT NULL REFERENCES ${s}.messages (id) ON DELETE CASCADE,
  idx integer NOT NULL,
  address text NOT NULL,
  domain text NOT NULL,
  attributes jsonb NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at bigint NOT NULL,
  last_attempt_at bigint,
  reply jsonb,
  mta text,
  mta_address text,
  warned boolean NOT NULL DEFAULT false,
  PRIMARY KEY (message_id, idx)
);

-- A job: one message's pending recipients at one destination. due_at is the
-- earliest next attempt; while leased it is the lease expiry, so a job whose
-- node died becomes due again by itself. held: not scheduled, because its
-- message is held or quarantined (or both).
CREATE TABLE ${s}.jobs (
  message_id text NOT NULL REFERENCES ${s}.messages (id) ON DELETE CASCADE,
  destination text NOT NULL,
  due_at bigint NOT NULL,
  held boolean NOT NULL DEFAULT false,
  lease_owner text,
  lease_token bigint,
  lease_expires bigint,
  PRIMARY KEY (message_id, destination)
);
CREATE INDEX jobs_due ON ${s}.jobs (due_at, message_id) WHERE NOT held;
CREATE INDEX jobs_leased ON ${s}.jobs (destination) WHERE lease_token IS NOT NULL;
-- One destination's due jobs in due order (lease_due takes at most its room of them).
CREATE INDEX jobs_destination_due ON ${s}.jobs (destination, due_at, message_id) WHERE NOT held;

-- Lease up to p_limit due jobs for p_owner, at most p_per running (unexpired
-- leases, all nodes) per destination. A destination another node is leasing
-- for at this moment (its advisory lock is taken) is skipped: that node fills it.
-- p_mine: the tokens of leases the calling node still runs (even if expired:
-- it never races itself for a job; they count against the destination's room).
-- Destinations are taken in the order of their earliest due job; each one's
-- due jobs come from jobs_destination_due, at most its room of them, so a
-- destination at its limit costs one look however large its backlog of due
-- jobs, and no step of the function reads more than 64 rows of that backlog.
-- Returns each leased job with its message and pending recipients there (read
-- after the lock, so the message row committed with the job is always seen).
CREATE FUNCTION ${s}.lease_due(p_owner text, p_now bigint, p_limit integer, p_per integer, p_expires bigint,
  p_mine bigint[])
RETURNS TABLE (id text, destination text, token bigint, sender text, attributes jsonb, received_at bigint,
  size bigint, body bytea, recipients jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  j record;
  d text;
  ids text[] := '{}';
  dests text[] := '{}';
  tokens bigint[] := '{}';
  seen text[] := '{}';
  cands text[];
  more boolean;
  pass integer;
  room integer;
  taken integer := 0;
  t bigint;
BEGIN
  -- A lease lost in a database crash only lets the job run again (at least once): no WAL flush to wait for.
  PERFORM set_config('synchronous_commit', 'off', true);
  IF p_limit <= 0 THEN RETURN; END IF;
  -- The destinations of the first 64 due jobs, in due order; when there may be
  -- more (64 found) and room is left, every other destination with a due job,
  -- found one index probe each (its earliest job) rather than over the backlog.
  SELECT coalesce(array_agg(f.destination ORDER BY f.first), '{}'), coalesce(sum(f.n) >= 64, false) INTO cands, more
  FROM (SELECT x.destination, min(x.k) AS first, count(*) AS n
        FROM (SELECT y.destination, row_number() OVER (ORDER BY y.due_at, y.message_id) AS k
              FROM (SELECT z.destination, z.due_at, z.message_id FROM ${s}.jobs z
                    WHERE z.due_at <= p_now AND NOT z.held ORDER BY z.due_at, z.message_id LIMIT 64) y) x
        GROUP BY x.destination) f;
  FOR pass IN 1..2 LOOP
    IF pass = 2 THEN
      EXIT WHEN NOT more OR taken >= p_limit;
      WITH RECURSIVE ds AS (
        (SELECT x.destination, x.due_at FROM ${s}.jobs x WHERE NOT x.held ORDER BY x.destination, x.due_at LIMIT 1)
        UNION ALL
        SELECT n.destination, n.due_at FROM ds p CROSS JOIN LATERAL (
          SELECT x.destination, x.due_at FROM ${s}.jobs x WHERE NOT x.held AND x.destination > p.destination
          ORDER BY x.destination, x.due_at LIMIT 1) n
      )
      SELECT coalesce(array_agg(ds.destination ORDER BY ds.due_at), '{}') INTO cands FROM ds
      WHERE ds.due_at <= p_now AND ds.destination <> ALL (seen);
    END IF;
    FOREACH d IN ARRAY cands LOOP
      EXIT WHEN taken >= p_limit;
      seen := seen || d;
      IF p_per IS NULL THEN
        room := p_limit - taken;
      ELSE
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtextextended(${literal(s)} || '/' || d, 0));
        SELECT p_per - count(*) INTO room FROM ${s}.jobs l
        WHERE l.destination = d AND l.lease_token IS NOT NULL
          AND (l.lease_expires > p_now OR l.lease_token = ANY (p_mine));
        room := least(room, p_limit - taken);
      END IF;
      CONTINUE WHEN room <= 0;
      FOR j IN
        SELECT x.message_id FROM ${s}.jobs x
        WHERE x.destination = d AND x.due_at <= p_now AND NOT x.held
          AND (x.lease_token IS NULL OR NOT x.lease_token = ANY (p_mine))
        ORDER BY x.due_at, x.message_id LIMIT room
        FOR UPDATE SKIP LOCKED
      LOOP
        t := nextval('${s}.lease_tokens');
        UPDATE ${s}.jobs x SET lease_owner = p_owner, lease_token = t, lease_expires = p_expires, due_at = p_expires
        WHERE x.message_id = j.message_id AND x.destination = d;
        taken := taken + 1;
        ids := ids || j.message_id;
        dests := dests || d;
        tokens := tokens || t;
      END LOOP;
    END LOOP;
  END LOOP;
  RETURN QUERY
    SELECT l.id, l.destination, l.token, m.sender, m.attributes, m.received_at, m.size, m.body,
      (SELECT jsonb_agg(jsonb_build_object('index', r.idx, 'address', r.address, 'attributes', r.attributes,
         'attempts', r.attempts, 'warned', r.warned) ORDER BY r.idx)
       FROM ${s}.recipients r
       WHERE r.message_id = l.id AND r.domain = l.destination AND r.status = 'pending')
    FROM unnest(ids, dests, tokens) AS l(id, destination, token) JOIN ${s}.messages m ON m.id = l.id;
END $$;

-- Record an attempt's outcomes and end the lease, if p_token still holds it.
-- Returns 'stale' (the lease was taken over or the message deleted: nothing
-- recorded), 'removed' (every recipient final: the message is gone) or 'kept'.
CREATE FUNCTION ${s}.settle(p_id text, p_destination text, p_token bigint, p_now bigint, p_outcomes jsonb)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  next_due bigint;
BEGIN
  -- A result lost in a database crash repeats the attempt (delivery is at least once,
  -- as with queue-fs; a bounce is queued, durably, before this): no WAL flush to wait for.
  PERFORM set_config('synchronous_commit', 'off', true);
  -- The message row first (as hold, release, retry and delete take it): settles of
  -- one message's jobs at several destinations run one after the other, so the
  -- last one sees every recipient final and removes the message.
  PERFORM 1 FROM ${s}.messages WHERE id = p_id FOR UPDATE;
  IF NOT FOUND THEN RETURN 'stale'; END IF;
  PERFORM 1 FROM ${s}.jobs WHERE message_id = p_id AND destination = p_destination AND lease_token = p_token
  FOR UPDATE;
  IF NOT FOUND THEN RETURN 'stale'; END IF;
  UPDATE ${s}.recipients r SET
    status = CASE o.status WHEN 'deferred' THEN 'pending' ELSE o.status END,
    attempts = r.attempts + 1,
    next_attempt_at = CASE WHEN o.status = 'deferred' THEN coalesce(o."nextAttemptAt", p_now) ELSE r.next_attempt_at END,
    last_attempt_at = p_now,
    reply = o.reply,
    mta = o.mta,
    mta_address = o."mtaAddress",
    warned = r.warned OR coalesce(o.warned, false)
  FROM jsonb_to_recordset(p_outcomes) AS o("index" integer, status text, reply jsonb, mta text,
    "mtaAddress" text, "nextAttemptAt" bigint, warned boolean)
  WHERE r.message_id = p_id AND r.idx = o."index" AND r.status = 'pending';
  IF NOT EXISTS (SELECT 1 FROM ${s}.recipients WHERE message_id = p_id AND status = 'pending') THEN
    DELETE FROM ${s}.messages WHERE id = p_id;
    RETURN 'removed';
  END IF;
  SELECT min(next_attempt_at) INTO next_due FROM ${s}.recipients
  WHERE message_id = p_id AND domain = p_destination AND status = 'pending';
  IF next_due IS NULL THEN
    DELETE FROM ${s}.jobs WHERE message_id = p_id AND destination = p_destination;
  ELSE
    UPDATE ${s}.jobs SET due_at = next_due, lease_owner = NULL, lease_token = NULL, lease_expires = NULL
    WHERE message_id = p_id AND destination = p_destination;
  END IF;
  RETURN 'kept';
END $$;
`,
  // 2: lease at insert, next-due times answered with the leases, grouped settles that lease where they make room.
  (s) => `
-- When the next job is due that p_owner could lease (not held, not one of
-- p_mine): room_next at a destination below p_per unexpired leases, any_next
-- at any destination (jobs left at a full destination, or a lease of another
-- node that expires then); waiting: the full destinations with jobs due at
-- p_now (the caller's settles there may take them). One index probe per destination with jobs (the
-- earliest not-mine job of each), not a scan of any destination's backlog.
CREATE FUNCTION ${s}.next_due(p_now bigint, p_per integer, p_mine bigint[])
RETURNS TABLE (room_next bigint, any_next bigint, waiting text[])
LANGUAGE sql STABLE AS $$
  WITH RECURSIVE ds AS (
    (SELECT x.destination, x.due_at FROM ${s}.jobs x
     WHERE NOT x.held AND (x.lease_token IS NULL OR NOT x.lease_token = ANY (p_mine))
     ORDER BY x.destination, x.due_at LIMIT 1)
    UNION ALL
    SELECT n.destination, n.due_at FROM ds p CROSS JOIN LATERAL (
      SELECT x.destination, x.due_at FROM ${s}.jobs x
      WHERE NOT x.held AND x.destination > p.destination
        AND (x.lease_token IS NULL OR NOT x.lease_token = ANY (p_mine))
      ORDER BY x.destination, x.due_at LIMIT 1) n
  ), full_destinations AS (
    SELECT l.destination FROM ${s}.jobs l
    WHERE p_per IS NOT NULL AND l.lease_token IS NOT NULL
      AND (l.lease_expires > p_now OR l.lease_token = ANY (p_mine))
    GROUP BY l.destination HAVING count(*) >= p_per
  )
  SELECT min(ds.due_at) FILTER (WHERE ds.destination NOT IN (SELECT f.destination FROM full_destinations f)),
    min(ds.due_at),
    coalesce(array_agg(ds.destination)
      FILTER (WHERE ds.due_at <= p_now AND ds.destination IN (SELECT f.destination FROM full_destinations f)), '{}')
  FROM ds
$$;

-- Insert messages (p_messages: their envelopes; each one's octets are
-- substring(p_octets, offset + 1, length), or NULL when in chunk rows), their
-- recipients and their jobs, and lease up to p_limit of the new jobs to p_owner
-- right away, by lease_due's rule: the destination's advisory lock taken
-- (never waited for: a destination another transaction is leasing for gets
-- its jobs unleased, for lease_due to find) and fewer than p_per unexpired
-- leases there across all nodes, counting p_mine. Held (quarantined) jobs are
-- never leased. Returns the jobs leased (with their tokens) and those left
-- unleased but not held (token NULL), with why: 'full' (no room at their
-- destination), 'busy' (its lock was taken) or 'limit' (p_limit reached).
-- One statement: the caller's COMMIT (synchronous_commit on) makes the messages durable.
CREATE FUNCTION ${s}.enqueue(p_messages jsonb, p_octets bytea, p_owner text, p_now bigint, p_limit integer,
  p_per integer, p_expires bigint, p_mine bigint[])
RETURNS TABLE (id text, destination text, token bigint, unleased text)
LANGUAGE plpgsql AS $$
DECLARE
  j_ids text[];
  j_dests text[];
  j_held boolean[];
  j_due bigint[];
  j_tokens bigint[];
  j_why text[];
  seen text[] := '{}';
  rooms integer[] := '{}';
  n integer;
  k integer;
  r integer;
  taken integer := 0;
  d text;
BEGIN
  SELECT coalesce(array_agg(x.mid ORDER BY x.n, x.dest), '{}'), coalesce(array_agg(x.dest ORDER BY x.n, x.dest), '{}'),
    coalesce(array_agg(x.q ORDER BY x.n, x.dest), '{}'), coalesce(array_agg(x.due ORDER BY x.n, x.dest), '{}')
  INTO j_ids, j_dests, j_held, j_due
  FROM (SELECT DISTINCT e.n, e.m ->> 'id' AS mid, x.r ->> 'domain' AS dest,
          (e.m -> 'attributes' -> 'quarantine') IS NOT NULL AS q, (e.m ->> 'receivedAt')::bigint AS due
        FROM jsonb_array_elements(p_messages) WITH ORDINALITY AS e(m, n),
          jsonb_array_elements(e.m -> 'recipients') AS x(r)) x;
  n := coalesce(array_length(j_ids, 1), 0);
  j_tokens := array_fill(NULL::bigint, ARRAY[n]);
  j_why := array_fill('limit'::text, ARRAY[n]);
  FOR i IN 1..n LOOP
    EXIT WHEN taken >= p_limit;
    CONTINUE WHEN j_held[i];
    d := j_dests[i];
    k := array_position(seen, d);
    IF k IS NULL THEN
      IF p_per IS NULL THEN
        r := p_limit;
      ELSIF NOT pg_try_advisory_xact_lock(hashtextextended(${literal(s)} || '/' || d, 0)) THEN
        r := -1;
      ELSE
        -- A statement of its own, so its snapshot is taken after the lock: leases committed before it are counted.
        SELECT greatest(p_per - count(*), 0) INTO r FROM ${s}.jobs l
        WHERE l.destination = d AND l.lease_token IS NOT NULL
          AND (l.lease_expires > p_now OR l.lease_token = ANY (p_mine));
      END IF;
      seen := seen || d;
      rooms := rooms || r;
      k := array_length(seen, 1);
    END IF;
    -- 0: full (counted); -1: the lock was busy (not known).
    j_why[i] := CASE WHEN rooms[k] = 0 THEN 'full' WHEN rooms[k] < 0 THEN 'busy' END;
    CONTINUE WHEN rooms[k] <= 0;
    rooms[k] := rooms[k] - 1;
    j_tokens[i] := nextval('${s}.lease_tokens');
    taken := taken + 1;
  END LOOP;
  INSERT INTO ${s}.messages (id, sender, attributes, source, received_at, size, quarantined, body)
  SELECT e.m ->> 'id', e.m ->> 'from', e.m -> 'attributes', e.m -> 'source', (e.m ->> 'receivedAt')::bigint,
    (e.m ->> 'size')::bigint, (e.m -> 'attributes' -> 'quarantine') IS NOT NULL,
    CASE WHEN e.m ? 'offset' THEN substring(p_octets FROM (e.m ->> 'offset')::integer + 1
                                             FOR (e.m ->> 'size')::integer) END
  FROM jsonb_array_elements(p_messages) AS e(m);
  INSERT INTO ${s}.recipients (message_id, idx, address, domain, attributes, next_attempt_at)
  SELECT e.m ->> 'id', (x.k - 1)::integer, x.r ->> 'address', x.r ->> 'domain', x.r -> 'attributes',
    (e.m ->> 'receivedAt')::bigint
  FROM jsonb_array_elements(p_messages) AS e(m), jsonb_array_elements(e.m -> 'recipients') WITH ORDINALITY AS x(r, k);
  INSERT INTO ${s}.jobs (message_id, destination, due_at, held, lease_owner, lease_token, lease_expires)
  SELECT u.mid, u.dest, CASE WHEN u.token IS NULL THEN u.due ELSE p_expires END, u.q,
    CASE WHEN u.token IS NOT NULL THEN p_owner END, u.token, CASE WHEN u.token IS NOT NULL THEN p_expires END
  FROM unnest(j_ids, j_dests, j_held, j_due, j_tokens) AS u(mid, dest, q, due, token);
  RETURN QUERY SELECT u.mid, u.dest, u.token, u.f FROM unnest(j_ids, j_dests, j_tokens, j_why, j_held)
    AS u(mid, dest, token, f, q) WHERE NOT u.q;
END $$;

-- lease_due as in version 1, plus one last row (id NULL) with next_due()'s
-- answer after the leases taken (the caller needs no second round trip to
-- know when to look again), its waiting list with the destinations skipped
-- because another transaction held their lock.
DROP FUNCTION ${s}.lease_due(text, bigint, integer, integer, bigint, bigint[]);
CREATE FUNCTION ${s}.lease_due(p_owner text, p_now bigint, p_limit integer, p_per integer, p_expires bigint,
  p_mine bigint[])
RETURNS TABLE (id text, destination text, token bigint, sender text, attributes jsonb, received_at bigint,
  size bigint, body bytea, recipients jsonb, room_next bigint, any_next bigint, waiting text[])
LANGUAGE plpgsql AS $$
DECLARE
  j record;
  d text;
  ids text[] := '{}';
  dests text[] := '{}';
  tokens bigint[] := '{}';
  seen text[] := '{}';
  busy text[] := '{}';
  cands text[];
  more boolean;
  pass integer;
  room integer;
  taken integer := 0;
  t bigint;
BEGIN
  -- A lease lost in a database crash only lets the job run again (at least once): no WAL flush to wait for.
  PERFORM set_config('synchronous_commit', 'off', true);
  IF p_limit > 0 THEN
    SELECT coalesce(array_agg(f.destination ORDER BY f.first), '{}'), coalesce(sum(f.n) >= 64, false) INTO cands, more
    FROM (SELECT x.destination, min(x.k) AS first, count(*) AS n
          FROM (SELECT y.destination, row_number() OVER (ORDER BY y.due_at, y.message_id) AS k
                FROM (SELECT z.destination, z.due_at, z.message_id FROM ${s}.jobs z
                      WHERE z.due_at <= p_now AND NOT z.held ORDER BY z.due_at, z.message_id LIMIT 64) y) x
          GROUP BY x.destination) f;
    FOR pass IN 1..2 LOOP
      IF pass = 2 THEN
        EXIT WHEN NOT more OR taken >= p_limit;
        WITH RECURSIVE ds AS (
          (SELECT x.destination, x.due_at FROM ${s}.jobs x WHERE NOT x.held ORDER BY x.destination, x.due_at LIMIT 1)
          UNION ALL
          SELECT n.destination, n.due_at FROM ds p CROSS JOIN LATERAL (
            SELECT x.destination, x.due_at FROM ${s}.jobs x WHERE NOT x.held AND x.destination > p.destination
            ORDER BY x.destination, x.due_at LIMIT 1) n
        )
        SELECT coalesce(array_agg(ds.destination ORDER BY ds.due_at), '{}') INTO cands FROM ds
        WHERE ds.due_at <= p_now AND ds.destination <> ALL (seen);
      END IF;
      FOREACH d IN ARRAY cands LOOP
        EXIT WHEN taken >= p_limit;
        seen := seen || d;
        IF p_per IS NULL THEN
          room := p_limit - taken;
        ELSE
          IF NOT pg_try_advisory_xact_lock(hashtextextended(${literal(s)} || '/' || d, 0)) THEN
            busy := busy || d;
            CONTINUE;
          END IF;
          SELECT p_per - count(*) INTO room FROM ${s}.jobs l
          WHERE l.destination = d AND l.lease_token IS NOT NULL
            AND (l.lease_expires > p_now OR l.lease_token = ANY (p_mine));
          room := least(room, p_limit - taken);
        END IF;
        CONTINUE WHEN room <= 0;
        FOR j IN
          SELECT x.message_id FROM ${s}.jobs x
          WHERE x.destination = d AND x.due_at <= p_now AND NOT x.held
            AND (x.lease_token IS NULL OR NOT x.lease_token = ANY (p_mine))
          ORDER BY x.due_at, x.message_id LIMIT room
          FOR UPDATE SKIP LOCKED
        LOOP
          t := nextval('${s}.lease_tokens');
          UPDATE ${s}.jobs x SET lease_owner = p_owner, lease_token = t, lease_expires = p_expires, due_at = p_expires
          WHERE x.message_id = j.message_id AND x.destination = d;
          taken := taken + 1;
          ids := ids || j.message_id;
          dests := dests || d;
          tokens := tokens || t;
        END LOOP;
      END LOOP;
    END LOOP;
    IF taken > 0 THEN
    RETURN QUERY
      SELECT l.id, l.destination, l.token, m.sender, m.attributes, m.received_at, m.size, m.body,
        (SELECT jsonb_agg(jsonb_build_object('index', r.idx, 'address', r.address, 'attributes', r.attributes,
           'attempts', r.attempts, 'warned', r.warned) ORDER BY r.idx)
         FROM ${s}.recipients r
         WHERE r.message_id = l.id AND r.domain = l.destination AND r.status = 'pending'),
        NULL::bigint, NULL::bigint, NULL::text[]
      FROM unnest(ids, dests, tokens) AS l(id, destination, token) JOIN ${s}.messages m ON m.id = l.id;
    END IF;
  END IF;
  RETURN QUERY
    SELECT NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::jsonb, NULL::bigint, NULL::bigint, NULL::bytea,
      NULL::jsonb, nd.room_next, nd.any_next, nd.waiting || busy
    FROM ${s}.next_due(p_now, p_per, p_mine || tokens) AS nd;
END $$;

-- Record several attempts' outcomes and end their leases, in one transaction:
-- p_items is an array of {id, destination, token, now, final, outcomes}, in
-- message id order (so two groups lock message rows in one order). Each item
-- as settle() did in version 1: 'stale' (the lease was taken over or the
-- message deleted: nothing recorded), 'removed' (every recipient final: the
-- message is gone) or 'kept' (with its job's next due time, if the job stays).
-- final: every outcome is delivered or failed and covers every recipient of
-- the lease; when no other destination has a job, the message is deleted
-- without recording them.
CREATE FUNCTION ${s}.settle_many(p_items jsonb)
RETURNS TABLE (token bigint, result text, next_due bigint)
LANGUAGE plpgsql AS $$
DECLARE
  it record;
  nd bigint;
BEGIN
  -- A result lost in a database crash repeats the attempt (delivery is at least once,
  -- as with queue-fs; a bounce is queued, durably, before this): no WAL flush to wait for.
  PERFORM set_config('synchronous_commit', 'off', true);
  FOR it IN
    SELECT * FROM jsonb_to_recordset(p_items) AS x(id text, destination text, token bigint, now bigint,
      final boolean, outcomes jsonb)
  LOOP
    token := it.token;
    next_due := NULL;
    -- The message row first (as hold, release, retry and delete take it): settles of
    -- one message's jobs at several destinations run one after the other, so the
    -- last one sees every recipient final and removes the message.
    PERFORM 1 FROM ${s}.messages m WHERE m.id = it.id FOR UPDATE;
    IF NOT FOUND THEN
      result := 'stale';
      RETURN NEXT;
      CONTINUE;
    END IF;
    PERFORM 1 FROM ${s}.jobs j WHERE j.message_id = it.id AND j.destination = it.destination AND j.lease_token = it.token
    FOR UPDATE;
    IF NOT FOUND THEN
      result := 'stale';
      RETURN NEXT;
      CONTINUE;
    END IF;
    IF it.final AND NOT EXISTS (SELECT 1 FROM ${s}.jobs j WHERE j.message_id = it.id AND j.destination <> it.destination)
    THEN
      DELETE FROM ${s}.messages m WHERE m.id = it.id;
      result := 'removed';
      RETURN NEXT;
      CONTINUE;
    END IF;
    UPDATE ${s}.recipients r SET
      status = CASE o.status WHEN 'deferred' THEN 'pending' ELSE o.status END,
      attempts = r.attempts + 1,
      next_attempt_at = CASE WHEN o.status = 'deferred' THEN coalesce(o."nextAttemptAt", it.now) ELSE r.next_attempt_at END,
      last_attempt_at = it.now,
      reply = o.reply,
      mta = o.mta,
      mta_address = o."mtaAddress",
      warned = r.warned OR coalesce(o.warned, false)
    FROM jsonb_to_recordset(it.outcomes) AS o("index" integer, status text, reply jsonb, mta text,
      "mtaAddress" text, "nextAttemptAt" bigint, warned boolean)
    WHERE r.message_id = it.id AND r.idx = o."index" AND r.status = 'pending';
    IF NOT EXISTS (SELECT 1 FROM ${s}.recipients r WHERE r.message_id = it.id AND r.status = 'pending') THEN
      DELETE FROM ${s}.messages m WHERE m.id = it.id;
      result := 'removed';
      RETURN NEXT;
      CONTINUE;
    END IF;
    SELECT min(r.next_attempt_at) INTO nd FROM ${s}.recipients r
    WHERE r.message_id = it.id AND r.domain = it.destination AND r.status = 'pending';
    IF nd IS NULL THEN
      DELETE FROM ${s}.jobs j WHERE j.message_id = it.id AND j.destination = it.destination;
    ELSE
      UPDATE ${s}.jobs j SET due_at = nd, lease_owner = NULL, lease_token = NULL, lease_expires = NULL
      WHERE j.message_id = it.id AND j.destination = it.destination;
    END IF;
    result := 'kept';
    next_due := nd;
    RETURN NEXT;
  END LOOP;
END $$;

-- Lease up to p_limit due jobs at the destinations p_destinations only (in
-- that order), by lease_due's rule; then one row per destination (id NULL)
-- saying whether due jobs are still left there. For a node whose settles just
-- made room where it knows jobs wait: a few index probes, no look at the rest
-- of the queue.
CREATE FUNCTION ${s}.lease_at(p_owner text, p_now bigint, p_limit integer, p_per integer, p_expires bigint,
  p_mine bigint[], p_destinations text[])
RETURNS TABLE (id text, destination text, token bigint, sender text, attributes jsonb, received_at bigint,
  size bigint, body bytea, recipients jsonb, more boolean)
LANGUAGE plpgsql AS $$
DECLARE
  j record;
  d text;
  ids text[] := '{}';
  dests text[] := '{}';
  tokens bigint[] := '{}';
  room integer;
  got integer;
  taken integer := 0;
  t bigint;
  left_at text[] := '{}';
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- Whether jobs are left at a destination follows from the counts: fewer taken than
  -- there was room for means none (or only ones another transaction is taking).
  FOREACH d IN ARRAY p_destinations LOOP
    IF taken >= p_limit OR NOT pg_try_advisory_xact_lock(hashtextextended(${literal(s)} || '/' || d, 0)) THEN
      left_at := left_at || d;
      CONTINUE;
    END IF;
    SELECT p_per - count(*) INTO room FROM ${s}.jobs l
    WHERE l.destination = d AND l.lease_token IS NOT NULL
      AND (l.lease_expires > p_now OR l.lease_token = ANY (p_mine));
    room := least(room, p_limit - taken);
    IF room <= 0 THEN
      left_at := left_at || d;
      CONTINUE;
    END IF;
    got := 0;
    FOR j IN
      SELECT x.message_id FROM ${s}.jobs x
      WHERE x.destination = d AND x.due_at <= p_now AND NOT x.held
        AND (x.lease_token IS NULL OR NOT x.lease_token = ANY (p_mine))
      ORDER BY x.due_at, x.message_id LIMIT room
      FOR UPDATE SKIP LOCKED
    LOOP
      t := nextval('${s}.lease_tokens');
      UPDATE ${s}.jobs x SET lease_owner = p_owner, lease_token = t, lease_expires = p_expires, due_at = p_expires
      WHERE x.message_id = j.message_id AND x.destination = d;
      taken := taken + 1;
      got := got + 1;
      ids := ids || j.message_id;
      dests := dests || d;
      tokens := tokens || t;
    END LOOP;
    IF got >= room THEN left_at := left_at || d; END IF;
  END LOOP;
  IF taken > 0 THEN
    RETURN QUERY
    SELECT l.id, l.destination, l.token, m.sender, m.attributes, m.received_at, m.size, m.body,
      (SELECT jsonb_agg(jsonb_build_object('index', r.idx, 'address', r.address, 'attributes', r.attributes,
         'attempts', r.attempts, 'warned', r.warned) ORDER BY r.idx)
       FROM ${s}.recipients r
       WHERE r.message_id = l.id AND r.domain = l.destination AND r.status = 'pending'),
      NULL::boolean
    FROM unnest(ids, dests, tokens) AS l(id, destination, token) JOIN ${s}.messages m ON m.id = l.id;
  END IF;
  RETURN QUERY
    SELECT NULL::text, w.d, NULL::bigint, NULL::text, NULL::jsonb, NULL::bigint, NULL::bigint, NULL::bytea,
      NULL::jsonb, w.d = ANY (left_at)
    FROM unnest(p_destinations) AS w(d);
END $$;

-- settle_many(p_items), then lease_at(...) in the same transaction when
-- p_destinations is not empty: a node whose deliveries free room at a
-- destination where jobs wait takes the next ones with the same round trip.
-- Settle rows carry settled_result; the rest are lease_at's.
CREATE FUNCTION ${s}.settle_and_lease(p_items jsonb, p_owner text, p_now bigint, p_limit integer, p_per integer,
  p_expires bigint, p_mine bigint[], p_destinations text[])
RETURNS TABLE (settled_token bigint, settled_result text, settled_next bigint, id text, destination text,
  token bigint, sender text, attributes jsonb, received_at bigint, size bigint, body bytea, recipients jsonb,
  more boolean)
LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY SELECT m.token, m.result, m.next_due, NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::jsonb,
    NULL::bigint, NULL::bigint, NULL::bytea, NULL::jsonb, NULL::boolean
  FROM ${s}.settle_many(p_items) AS m;
  IF p_limit > 0 AND cardinality(p_destinations) > 0 THEN
    RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::bigint, l.id, l.destination, l.token, l.sender, l.attributes,
      l.received_at, l.size, l.body, l.recipients, l.more
    FROM ${s}.lease_at(p_owner, p_now, p_limit, p_per, p_expires, p_mine, p_destinations) AS l;
  END IF;
END $$;

DROP FUNCTION ${s}.settle(text, text, bigint, bigint, jsonb);
`,
  // 3: destination slots (the per-destination limit no longer counts job leases), no foreign keys.
  (s) => `
-- The per-destination limit across nodes: slot n of a destination (n up to
-- the limit) is held by at most one node at a time (owner, token, expiry,
-- renewed with its leases). A node runs at most as many deliveries at a
-- destination as it holds slots there; it may lease more jobs there than
-- that (they wait in its memory), so a job stored by a node holding a slot
-- at its destination is leased by the statement that stores it, with no
-- count of anything. Free slots have token NULL.
CREATE TABLE ${s}.slots (
  destination text NOT NULL,
  slot integer NOT NULL,
  owner text,
  token bigint,
  expires bigint,
  PRIMARY KEY (destination, slot)
);

-- The rows of one message are removed together by the queue's statements
-- (settle, delete), not by cascades: no foreign-key checks on every insert
-- and delete of the hot path.
ALTER TABLE ${s}.recipients DROP CONSTRAINT recipients_message_id_fkey;
ALTER TABLE ${s}.jobs DROP CONSTRAINT jobs_message_id_fkey;
ALTER TABLE ${s}.message_chunks DROP CONSTRAINT message_chunks_message_id_fkey;
-- Job leases are no longer counted per destination.
DROP INDEX ${s}.jobs_leased;
DROP FUNCTION ${s}.settle_and_lease(jsonb, text, bigint, integer, integer, bigint, bigint[], text[]);
DROP FUNCTION ${s}.lease_at(text, bigint, integer, integer, bigint, bigint[], text[]);
DROP FUNCTION ${s}.enqueue(jsonb, bytea, text, bigint, integer, integer, bigint, bigint[]);

-- Remove message p_id and all its rows; whether it was there. The message
-- row first: every statement takes a message's rows in that order.
CREATE FUNCTION ${s}.drop_message(p_id text) RETURNS boolean
LANGUAGE sql AS $$
  WITH m AS (DELETE FROM ${s}.messages WHERE id = p_id RETURNING id),
  j AS (DELETE FROM ${s}.jobs WHERE message_id IN (SELECT id FROM m)),
  r AS (DELETE FROM ${s}.recipients WHERE message_id IN (SELECT id FROM m)),
  c AS (DELETE FROM ${s}.message_chunks WHERE message_id IN (SELECT id FROM m))
  SELECT count(*) > 0 FROM m;
$$;

-- Take up to p_want free slots (never held, released, or expired and not one
-- of p_mine) numbered up to p_per at p_destination for p_owner; returns their
-- tokens. Slot rows are created the first time a destination needs them.
CREATE FUNCTION ${s}.take_slots(p_owner text, p_now bigint, p_expires bigint, p_per integer,
  p_destination text, p_want integer, p_mine bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE
  got integer := 0;
  sl integer;
  t bigint;
BEGIN
  IF p_want <= 0 OR p_per IS NULL THEN RETURN; END IF;
  FOR pass IN 1..2 LOOP
    FOR sl IN
      SELECT x.slot FROM ${s}.slots x
      WHERE x.destination = p_destination AND x.slot <= p_per
        AND (x.token IS NULL OR (x.expires <= p_now AND NOT x.token = ANY (p_mine)))
      ORDER BY x.slot LIMIT p_want - got
      FOR UPDATE SKIP LOCKED
    LOOP
      t := nextval('${s}.lease_tokens');
      UPDATE ${s}.slots x SET owner = p_owner, token = t, expires = p_expires
      WHERE x.destination = p_destination AND x.slot = sl;
      got := got + 1;
      RETURN NEXT t;
    END LOOP;
    EXIT WHEN got >= p_want OR pass = 2;
    EXIT WHEN (SELECT count(*) FROM ${s}.slots x WHERE x.destination = p_destination AND x.slot <= p_per) >= p_per;
    INSERT INTO ${s}.slots (destination, slot) SELECT p_destination, g FROM generate_series(1, p_per) AS g
    ON CONFLICT DO NOTHING;
  END LOOP;
END $$;

-- When the next job is due that p_owner could lease (not held, not one of
-- p_mine), as in version 2, with the limit read from the slots: a destination
-- is full when its p_per slots are all held by other nodes (unexpired) or by
-- this one with no room left (p_full: the caller's own full destinations);
-- waiting: the full destinations with jobs due at p_now.
DROP FUNCTION ${s}.next_due(bigint, integer, bigint[]);
CREATE FUNCTION ${s}.next_due(p_now bigint, p_per integer, p_mine bigint[], p_have text[], p_full text[])
RETURNS TABLE (room_next bigint, any_next bigint, waiting text[])
LANGUAGE sql STABLE AS $$
  WITH RECURSIVE ds AS (
    (SELECT x.destination, x.due_at FROM ${s}.jobs x
     WHERE NOT x.held AND (x.lease_token IS NULL OR NOT x.lease_token = ANY (p_mine))
     ORDER BY x.destination, x.due_at LIMIT 1)
    UNION ALL
    SELECT n.destination, n.due_at FROM ds p CROSS JOIN LATERAL (
      SELECT x.destination, x.due_at FROM ${s}.jobs x
      WHERE NOT x.held AND x.destination > p.destination
        AND (x.lease_token IS NULL OR NOT x.lease_token = ANY (p_mine))
      ORDER BY x.destination, x.due_at LIMIT 1) n
  ), full_destinations AS (
    SELECT l.destination FROM ${s}.slots l
    WHERE p_per IS NOT NULL AND l.slot <= p_per AND l.token IS NOT NULL
      AND (l.expires > p_now OR l.token = ANY (p_mine)) AND l.destination <> ALL (p_have)
    GROUP BY l.destination HAVING count(*) >= p_per
    UNION ALL
    SELECT unnest(p_full)
  )
  SELECT min(ds.due_at) FILTER (WHERE ds.destination NOT IN (SELECT f.destination FROM full_destinations f)),
    min(ds.due_at),
    coalesce(array_agg(ds.destination)
      FILTER (WHERE ds.due_at <= p_now AND ds.destination IN (SELECT f.destination FROM full_destinations f)), '{}')
  FROM ds
$$;

-- Lease up to p_limit due jobs for p_owner (not held, not one of p_mine), in
-- due order of destinations, as in version 2, the limit now from the slots:
-- at a destination of p_have the caller holds slots and may lease up to the
-- matching p_room more jobs; where more jobs are due than that (counting at
-- most p_per of them), it first takes free slots for them.
-- p_need: destinations where the caller holds leased jobs but no slot (it
-- lost them): slots are taken there first. Rows: each leased job (with solo:
-- the message has no job at another destination); each slot taken (id NULL,
-- destination, token); last, next_due()'s answer (id and destination NULL).
DROP FUNCTION ${s}.lease_due(text, bigint, integer, integer, bigint, bigint[]);
CREATE FUNCTION ${s}.lease_due(p_owner text, p_now bigint, p_limit integer, p_per integer, p_expires bigint,
  p_mine bigint[], p_have text[], p_room integer[], p_need text[])
RETURNS TABLE (id text, destination text, token bigint, sender text, attributes jsonb, received_at bigint,
  size bigint, body bytea, recipients jsonb, solo boolean, room_next bigint, any_next bigint, waiting text[])
LANGUAGE plpgsql AS $$
DECLARE
  j record;
  d text;
  ids text[] := '{}';
  dests text[] := '{}';
  tokens bigint[] := '{}';
  slot_dests text[] := '{}';
  slot_tokens bigint[] := '{}';
  seen text[] := '{}';
  busy text[] := '{}';
  full_here text[] := '{}';
  have text[] := p_have;
  rooms integer[] := p_room;
  cands text[];
  more boolean;
  pass integer;
  room integer;
  k integer;
  due integer;
  taken integer := 0;
  t bigint;
BEGIN
  -- A lease lost in a database crash only lets the job run again (at least once): no WAL flush to wait for.
  PERFORM set_config('synchronous_commit', 'off', true);
  IF p_per IS NOT NULL THEN
    FOREACH d IN ARRAY p_need LOOP
      FOR t IN SELECT x FROM ${s}.take_slots(p_owner, p_now, p_expires, p_per, d, 1, p_mine) AS x LOOP
        slot_dests := slot_dests || d;
        slot_tokens := slot_tokens || t;
      END LOOP;
    END LOOP;
  END IF;
  IF p_limit > 0 THEN
    SELECT coalesce(array_agg(f.destination ORDER BY f.first), '{}'), coalesce(sum(f.n) >= 64, false) INTO cands, more
    FROM (SELECT x.destination, min(x.k) AS first, count(*) AS n
          FROM (SELECT y.destination, row_number() OVER (ORDER BY y.due_at, y.message_id) AS k
                FROM (SELECT z.destination, z.due_at, z.message_id FROM ${s}.jobs z
                      WHERE z.due_at <= p_now AND NOT z.held ORDER BY z.due_at, z.message_id LIMIT 64) y) x
          GROUP BY x.destination) f;
    FOR pass IN 1..2 LOOP
      IF pass = 2 THEN
        EXIT WHEN NOT more OR taken >= p_limit;
        WITH RECURSIVE ds AS (
          (SELECT x.destination, x.due_at FROM ${s}.jobs x WHERE NOT x.held ORDER BY x.destination, x.due_at LIMIT 1)
          UNION ALL
          SELECT n.destination, n.due_at FROM ds p CROSS JOIN LATERAL (
            SELECT x.destination, x.due_at FROM ${s}.jobs x WHERE NOT x.held AND x.destination > p.destination
            ORDER BY x.destination, x.due_at LIMIT 1) n
        )
        SELECT coalesce(array_agg(ds.destination ORDER BY ds.due_at), '{}') INTO cands FROM ds
        WHERE ds.due_at <= p_now AND ds.destination <> ALL (seen);
      END IF;
      FOREACH d IN ARRAY cands LOOP
        EXIT WHEN taken >= p_limit;
        seen := seen || d;
        IF p_per IS NULL THEN
          room := p_limit - taken;
        ELSE
          k := array_position(have, d);
          room := CASE WHEN k IS NULL THEN 0 ELSE greatest(rooms[k], 0) END;
          -- More due here than this node has room for: take free slots for them (at most p_per looked at).
          IF room < p_limit - taken THEN
            SELECT count(*) INTO due FROM (
              SELECT 1 FROM ${s}.jobs x
              WHERE x.destination = d AND x.due_at <= p_now AND NOT x.held
                AND (x.lease_token IS NULL OR NOT x.lease_token = ANY (p_mine))
              LIMIT p_per) x;
            IF due > room THEN
              FOR t IN SELECT x FROM ${s}.take_slots(p_owner, p_now, p_expires, p_per, d,
                                                     least(due, p_limit - taken) - room, p_mine) AS x LOOP
                slot_dests := slot_dests || d;
                slot_tokens := slot_tokens || t;
                room := room + 1;
              END LOOP;
            END IF;
          END IF;
          IF k IS NULL THEN
            IF room = 0 THEN
              busy := busy || d;
              CONTINUE;
            END IF;
            have := have || d;
            rooms := rooms || room;
            k := array_length(have, 1);
          ELSE
            rooms[k] := room;
          END IF;
          IF room <= 0 THEN
            full_here := full_here || d;
            CONTINUE;
          END IF;
          room := least(room, p_limit - taken);
        END IF;
        FOR j IN
          SELECT x.message_id FROM ${s}.jobs x
          WHERE x.destination = d AND x.due_at <= p_now AND NOT x.held
            AND (x.lease_token IS NULL OR NOT x.lease_token = ANY (p_mine))
          ORDER BY x.due_at, x.message_id LIMIT room
          FOR UPDATE SKIP LOCKED
        LOOP
          t := nextval('${s}.lease_tokens');
          UPDATE ${s}.jobs x SET lease_owner = p_owner, lease_token = t, lease_expires = p_expires, due_at = p_expires
          WHERE x.message_id = j.message_id AND x.destination = d;
          taken := taken + 1;
          ids := ids || j.message_id;
          dests := dests || d;
          tokens := tokens || t;
          IF p_per IS NOT NULL THEN rooms[k] := rooms[k] - 1; END IF;
        END LOOP;
        IF p_per IS NOT NULL AND rooms[k] <= 0 THEN full_here := full_here || d; END IF;
      END LOOP;
    END LOOP;
    IF taken > 0 THEN
    RETURN QUERY
      SELECT l.id, l.destination, l.token, m.sender, m.attributes, m.received_at, m.size, m.body,
        (SELECT jsonb_agg(jsonb_build_object('index', r.idx, 'address', r.address, 'attributes', r.attributes,
           'attempts', r.attempts, 'warned', r.warned) ORDER BY r.idx)
         FROM ${s}.recipients r
         WHERE r.message_id = l.id AND r.domain = l.destination AND r.status = 'pending'),
        NOT EXISTS (SELECT 1 FROM ${s}.jobs o WHERE o.message_id = l.id AND o.destination <> l.destination),
        NULL::bigint, NULL::bigint, NULL::text[]
      FROM unnest(ids, dests, tokens) AS l(id, destination, token) JOIN ${s}.messages m ON m.id = l.id;
    END IF;
  END IF;
  RETURN QUERY
    SELECT NULL::text, u.d, u.t, NULL::text, NULL::jsonb, NULL::bigint, NULL::bigint, NULL::bytea,
      NULL::jsonb, NULL::boolean, NULL::bigint, NULL::bigint, NULL::text[]
    FROM unnest(slot_dests, slot_tokens) AS u(d, t);
  RETURN QUERY
    SELECT NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::jsonb, NULL::bigint, NULL::bigint, NULL::bytea,
      NULL::jsonb, NULL::boolean, nd.room_next, nd.any_next, nd.waiting || busy
    FROM ${s}.next_due(p_now, p_per, p_mine || tokens, have, full_here) AS nd;
END $$;

-- The nodes' sessions use generic plans (plan_cache_mode, set by the store:
-- the hot-path statements are planned once per connection); the functions'
-- statements are planned for their values, as before.
ALTER FUNCTION ${s}.lease_due(text, bigint, integer, integer, bigint, bigint[], text[], integer[], text[])
  SET plan_cache_mode = auto;
ALTER FUNCTION ${s}.take_slots(text, bigint, bigint, integer, text, integer, bigint[]) SET plan_cache_mode = auto;

-- settle_many as in version 2, removing a message's rows itself (no cascades).
CREATE OR REPLACE FUNCTION ${s}.settle_many(p_items jsonb)
RETURNS TABLE (token bigint, result text, next_due bigint)
LANGUAGE plpgsql AS $$
DECLARE
  it record;
  nd bigint;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  FOR it IN
    SELECT * FROM jsonb_to_recordset(p_items) AS x(id text, destination text, token bigint, now bigint,
      final boolean, outcomes jsonb)
  LOOP
    token := it.token;
    next_due := NULL;
    PERFORM 1 FROM ${s}.messages m WHERE m.id = it.id FOR UPDATE;
    IF NOT FOUND THEN
      result := 'stale';
      RETURN NEXT;
      CONTINUE;
    END IF;
    PERFORM 1 FROM ${s}.jobs j WHERE j.message_id = it.id AND j.destination = it.destination AND j.lease_token = it.token
    FOR UPDATE;
    IF NOT FOUND THEN
      result := 'stale';
      RETURN NEXT;
      CONTINUE;
    END IF;
    IF it.final AND NOT EXISTS (SELECT 1 FROM ${s}.jobs j WHERE j.message_id = it.id AND j.destination <> it.destination)
    THEN
      PERFORM ${s}.drop_message(it.id);
      result := 'removed';
      RETURN NEXT;
      CONTINUE;
    END IF;
    UPDATE ${s}.recipients r SET
      status = CASE o.status WHEN 'deferred' THEN 'pending' ELSE o.status END,
      attempts = r.attempts + 1,
      next_attempt_at = CASE WHEN o.status = 'deferred' THEN coalesce(o."nextAttemptAt", it.now) ELSE r.next_attempt_at END,
      last_attempt_at = it.now,
      reply = o.reply,
      mta = o.mta,
      mta_address = o."mtaAddress",
      warned = r.warned OR coalesce(o.warned, false)
    FROM jsonb_to_recordset(it.outcomes) AS o("index" integer, status text, reply jsonb, mta text,
      "mtaAddress" text, "nextAttemptAt" bigint, warned boolean)
    WHERE r.message_id = it.id AND r.idx = o."index" AND r.status = 'pending';
    IF NOT EXISTS (SELECT 1 FROM ${s}.recipients r WHERE r.message_id = it.id AND r.status = 'pending') THEN
      PERFORM ${s}.drop_message(it.id);
      result := 'removed';
      RETURN NEXT;
      CONTINUE;
    END IF;
    SELECT min(r.next_attempt_at) INTO nd FROM ${s}.recipients r
    WHERE r.message_id = it.id AND r.domain = it.destination AND r.status = 'pending';
    IF nd IS NULL THEN
      DELETE FROM ${s}.jobs j WHERE j.message_id = it.id AND j.destination = it.destination;
    ELSE
      UPDATE ${s}.jobs j SET due_at = nd, lease_owner = NULL, lease_token = NULL, lease_expires = NULL
      WHERE j.message_id = it.id AND j.destination = it.destination;
    END IF;
    result := 'kept';
    next_due := nd;
    RETURN NEXT;
  END LOOP;
END $$;
ALTER FUNCTION ${s}.settle_many(jsonb) SET plan_cache_mode = auto;
`,
];

/** A SQL string literal. */
function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/** The schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

export class NewerSchemaError extends Error {
  readonly code = 'ESCHEMANEWER';
  constructor(schema: string, found: number) {
    super(
      `the queue schema "${schema}" is at version ${found}, newer than this mailframe knows (${SCHEMA_VERSION}): upgrade mailframe on this node, or point it at another schema`,
    );
  }
}

/** The version the schema is at (0: no queue tables yet). */
async function versionOf(client: PoolClient, s: string): Promise<number> {
  const r = await client.query<{ version: number }>(
    `SELECT max(version)::int AS version FROM ${s}.schema_version`,
  );
  return r.rows[0]?.version ?? 0;
}

export class OlderSchemaError extends Error {
  readonly code = 'ESCHEMAOLDER';
  constructor(schema: string, found: number) {
    super(
      found === 0
        ? `the queue schema "${schema}" has no queue tables yet: run "mailframe queue migrate", or set "migrate": true`
        : `the queue schema "${schema}" is at version ${found}, older than this mailframe needs (${SCHEMA_VERSION}): run "mailframe queue migrate", or set "migrate": true`,
    );
  }
}

/** Check that `schema` is at exactly `SCHEMA_VERSION` without changing it. */
export async function checkSchema(pool: Pool, schema: string): Promise<void> {
  const s = ident(schema);
  const table = await pool.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [
    `${s}.schema_version`,
  ]);
  let found = 0;
  if (table.rows[0]?.present) {
    const r = await pool.query<{ version: number | null }>(
      `SELECT max(version)::int AS version FROM ${s}.schema_version`,
    );
    found = r.rows[0]?.version ?? 0;
  }
  if (found > SCHEMA_VERSION) throw new NewerSchemaError(schema, found);
  if (found < SCHEMA_VERSION) throw new OlderSchemaError(schema, found);
}

/**
 * Bring `schema` up to `SCHEMA_VERSION` (or `upTo`, for tests of an upgrade);
 * returns the versions applied. Throws `NewerSchemaError` when the database is
 * ahead of this code.
 */
export async function migrate(pool: Pool, schema: string, upTo: number = SCHEMA_VERSION): Promise<number[]> {
  const s = ident(schema);
  const client = await pool.connect();
  try {
    await client.query(
      `SELECT pg_advisory_lock(hashtextextended(${literal(`mailframe-migrate/${schema}`)}, 0))`,
    );
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${s}.schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const found = await versionOf(client, s);
      if (found > SCHEMA_VERSION) throw new NewerSchemaError(schema, found);
      const applied: number[] = [];
      for (let v = found + 1; v <= Math.min(upTo, SCHEMA_VERSION); v++) {
        const sql = (MIGRATIONS[v - 1] as (s: string) => string)(s);
        await client.query('BEGIN');
        try {
          await client.query(sql);
          await client.query(`INSERT INTO ${s}.schema_version (version) VALUES ($1)`, [v]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        }
        applied.push(v);
      }
      return applied;
    } finally {
      await client.query(
        `SELECT pg_advisory_unlock(hashtextextended(${literal(`mailframe-migrate/${schema}`)}, 0))`,
      );
    }
  } finally {
    client.release();
  }
}
