/**
 * What the greylist and rate-limit tests share: a settable clock, SMTP
 * clients that connect from a chosen loopback address (127.0.0.2 and
 * 127.0.0.3 are different clients in one /24), and a stand-in for a DNSWL
 * check that records a `pass`.
 */
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import Type from 'typebox';
import { Stage } from '../../core/hooks.ts';
import { definePlugin } from '../../core/plugin.ts';
import { SmtpClient, type TestServer } from '../../core/testkit.ts';
import { policyNotes } from '../../plugins/policy/policy.ts';
import {
  type BucketRow,
  bucketStep,
  type GreylistRow,
  greylistStep,
} from '../../plugins/policy/state-store.ts';

export const MINUTE = 60_000;
export const DAY = 24 * 60 * MINUTE;

export class FakeClock {
  t = Date.parse('2026-03-02T10:00:00.000Z');
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/** Connect to the test server from `localAddress` (any 127.x.y.z works on Linux loopback); reads the greeting. */
export async function connectFrom(t: TestServer, localAddress = '127.0.0.1'): Promise<SmtpClient> {
  const socket = netConnect({ port: t.port, host: t.host, localAddress });
  await once(socket, 'connect');
  const client = new SmtpClient(socket);
  client.greeting = await client.read();
  return client;
}

/**
 * Records a `dnswl` pass at MAIL for clients from `address`, as a DNS
 * allow-list check would. Written loosely (no `PolicyChecks` entry), as the
 * greylist plugin reads it.
 */
export function fakeDnswl(address: string) {
  return definePlugin({
    name: 'test-dnswl',
    schema: Type.Object({}),
    register(api) {
      api.hooks.mail.tap(
        (tx) => {
          if (tx.session.remote.address === address)
            policyNotes(tx).results.push({ check: 'dnswl', result: { result: 'pass' } });
          return undefined;
        },
        { stage: Stage.EARLY },
      );
    },
  });
}

/**
 * A `policyState` store whose every operation fails, as an unreachable
 * database would: in place of `policy-store`, as another backend would be.
 */
export const brokenStore = definePlugin({
  name: 'test-broken-store',
  schema: Type.Object({}),
  register(api) {
    const down = async (): Promise<never> => {
      throw new Error('store unreachable');
    };
    api.provide('policyState', {
      description: 'broken',
      greylistSeen: down,
      takeTokens: down,
      prune: down,
    });
  },
});

/**
 * A `policyState` store that answers every operation with a promise, a turn
 * of the event loop later, as a database store would: the reference
 * semantics over two maps. Tests run the plugins' asynchronous path with it.
 */
export const asyncStore = definePlugin({
  name: 'test-async-store',
  schema: Type.Object({}),
  register(api) {
    const greylist = new Map<string, GreylistRow>();
    const buckets = new Map<string, BucketRow>();
    const later = <T>(f: () => T) => new Promise<T>((resolve) => setImmediate(() => resolve(f())));
    api.provide('policyState', {
      description: 'test async',
      greylistSeen: (key, now, times) =>
        later(() => {
          const { row, status } = greylistStep(greylist.get(key), now, times);
          greylist.set(key, row);
          return { status, firstSeen: row.firstSeen, expires: row.expires };
        }),
      takeTokens: (key, now, bucket, n) =>
        later(() => {
          const { row, result } = bucketStep(buckets.get(key), now, bucket, n);
          buckets.set(key, row);
          return result;
        }),
      prune: () => later(() => 0),
    });
  },
});
