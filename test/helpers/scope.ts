/**
 * Per-test resources closed after each test: test servers, raw sockets and
 * SMTP clients. Call `useScope()` once at the top of a test file.
 */
import { afterEach } from 'vitest';
import {
  type SmtpClient,
  startTestServer,
  type TestServer,
  type TestServerOptions,
} from '../../core/testkit.ts';
import { RawSocket } from './raw-socket.ts';

export interface Scope {
  /** Start a test server that is closed after the test. */
  start(opts?: TestServerOptions): Promise<TestServer>;
  /** Connect a testkit client (greeting read unless `waitGreeting: false`). */
  connect(t: TestServer, opts?: { waitGreeting?: boolean }): Promise<SmtpClient>;
  /** Connect a raw socket that records every data event. */
  raw(t: TestServer): Promise<RawSocket>;
  /** Register any other cleanup. */
  defer(fn: () => unknown): void;
}

export function useScope(): Scope {
  let cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    const list = cleanups.reverse();
    cleanups = [];
    for (const fn of list) await fn();
  });
  return {
    async start(opts) {
      const t = await startTestServer(opts);
      cleanups.push(() => t.close());
      return t;
    },
    async connect(t, opts) {
      const c = await t.connect(opts);
      cleanups.push(() => c.close());
      return c;
    },
    async raw(t) {
      const r = await RawSocket.connect(t.port, t.host);
      cleanups.push(() => r.close());
      return r;
    },
    defer(fn) {
      cleanups.push(fn);
    },
  };
}
