/**
 * The state sidecar: `state/<id>`, one small JSON document with the hold and
 * quarantine flags and each recipient's delivery state, replaced atomically (write to `tmp/`,
 * fsync, rename, directory fsync). The queue file itself is never rewritten.
 * No sidecar means "never attempted": every recipient pending and due at arrival,
 * and quarantined if the envelope's `attributes.quarantine` is set.
 *
 *   {"v":1,"held":false,"quarantined":false,"recipients":[{"status":"pending","attempts":2,
 *     "nextAttemptAt":"2026-11-23T16:44:00.000Z","lastAttemptAt":"...",
 *     "reply":{"code":451,"enhanced":"4.4.0","text":"..."},"mta":"mx.example.net",
 *     "mtaAddress":"192.0.2.25"}]}
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RecipientState, ReplyRecord } from '../queue/types.ts';
import { commitTmpFile, type TmpFilePool } from './durable-file.ts';
import type { DirSync } from './group-sync.ts';

export interface MessageState {
  held: boolean;
  /** Set aside by a policy action on arrival until released (or deleted). */
  quarantined: boolean;
  recipients: RecipientState[];
}

interface StoredRecipient {
  status: RecipientState['status'];
  attempts: number;
  nextAttemptAt: string;
  lastAttemptAt?: string;
  reply?: ReplyRecord;
  mta?: string;
  mtaAddress?: string;
  warned?: boolean;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function freshState(recipients: number, dueAt: number, quarantined = false): MessageState {
  const states: RecipientState[] = [];
  for (let i = 0; i < recipients; i++) states.push({ status: 'pending', attempts: 0, nextAttemptAt: dueAt });
  return { held: false, quarantined, recipients: states };
}

export function serializeState(state: MessageState): string {
  const recipients: StoredRecipient[] = state.recipients.map((r) => ({
    status: r.status,
    attempts: r.attempts,
    nextAttemptAt: iso(r.nextAttemptAt),
    ...(r.lastAttemptAt === undefined ? {} : { lastAttemptAt: iso(r.lastAttemptAt) }),
    ...(r.reply ? { reply: r.reply } : {}),
    ...(r.mta ? { mta: r.mta } : {}),
    ...(r.mtaAddress ? { mtaAddress: r.mtaAddress } : {}),
    ...(r.warned ? { warned: true } : {}),
  }));
  return JSON.stringify({ v: 1, held: state.held, quarantined: state.quarantined, recipients });
}

/** Parse a sidecar; undefined when it is not a valid state for `recipients` recipients. */
export function parseState(text: string, recipients: number): MessageState | undefined {
  let doc: { v?: unknown; held?: unknown; quarantined?: unknown; recipients?: unknown };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch {
    return undefined;
  }
  if (doc?.v !== 1 || !Array.isArray(doc.recipients) || doc.recipients.length !== recipients)
    return undefined;
  const out: RecipientState[] = [];
  for (const raw of doc.recipients as StoredRecipient[]) {
    if (!['pending', 'delivered', 'failed'].includes(raw?.status)) return undefined;
    const next = Date.parse(raw.nextAttemptAt);
    if (!Number.isFinite(next) || !Number.isInteger(raw.attempts)) return undefined;
    const last = raw.lastAttemptAt === undefined ? undefined : Date.parse(raw.lastAttemptAt);
    out.push({
      status: raw.status,
      attempts: raw.attempts,
      nextAttemptAt: next,
      ...(last === undefined || !Number.isFinite(last) ? {} : { lastAttemptAt: last }),
      ...(raw.reply && typeof raw.reply.code === 'number' ? { reply: raw.reply } : {}),
      ...(typeof raw.mta === 'string' ? { mta: raw.mta } : {}),
      ...(typeof raw.mtaAddress === 'string' ? { mtaAddress: raw.mtaAddress } : {}),
      ...(raw.warned === true ? { warned: true } : {}),
    });
  }
  return { held: doc.held === true, quarantined: doc.quarantined === true, recipients: out };
}

export async function readStateFile(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Replace `state/<id>` atomically. */
export async function writeStateFile(
  dirs: { readonly state: string },
  sync: DirSync,
  pool: TmpFilePool,
  id: string,
  state: MessageState,
  fsync: boolean,
): Promise<void> {
  const file = await pool.take();
  await commitTmpFile(file, join(dirs.state, id), [Buffer.from(serializeState(state), 'utf8')], fsync);
  if (fsync) await sync.sync();
}
