/**
 * The bench's workloads. Counts are the full ones; `--quick` divides them by
 * ten (idle connections and large-message sizes too) for smoke runs.
 */
import type { LoadOptions } from './loadgen.ts';

export type LoadShape = Omit<LoadOptions, 'host' | 'port' | 'beforeLoad' | 'afterLoad' | 'timeLimitMs'>;

export interface Workload {
  readonly id: string;
  readonly title: string;
  readonly load: LoadShape;
  /** Idle: report RSS per idle connection. Large: report RSS growth. */
  readonly kind: 'throughput' | 'latency' | 'idle' | 'large';
  /** Workloads whose msgs/s this one is compared with (same server), first the closest. */
  readonly compareWith?: readonly string[];
  /** Unmeasured messages sent first; default `warmupFor(load.messages)`. */
  readonly warmup?: number;
}

/**
 * The warm-up before `messages` measured ones: half as many, 50 to 10,000. A
 * fresh Node server (mailframe, smtp-server) speeds up over its first several
 * thousand transactions (V8's compilers and heap sizing settle: measured, W1's
 * CPU per message falls from 0.30 ms over the first 2,000 to about 0.11 after
 * 10,000); the bench measures the steady state a server spends its life in.
 * `--no-warmup` shows cold numbers.
 */
export function warmupFor(messages: number): number {
  return Math.min(10_000, Math.max(50, Math.round(messages / 2)));
}

const KB = 1024;
const MB = 1024 * 1024;

export function allWorkloads(quick: boolean): Workload[] {
  const n = (count: number) => (quick ? Math.max(1, Math.round(count / 10)) : count);
  const w1: LoadShape = { connections: 10, messages: n(20_000), size: 2 * KB, recipients: 1 };
  const w3 = (idle: number): Workload => ({
    id: `W3-${idle >= 1000 ? `${idle / 1000}k` : idle}`,
    title:
      idle === 0
        ? 'W1 with a tenth of its messages, no idle connections (the baseline of W3-1k and W3-10k)'
        : `W1 with a tenth of its messages while ${idle} idle connections stay open`,
    load: { ...w1, messages: n(2000), idle },
    kind: idle === 0 ? 'throughput' : 'idle',
    // A run a tenth as long is slower on its own (ramp-up and tail weigh more): W3-0 is the
    // same run without idle connections, so the ratio to it isolates what they cost.
    compareWith: idle === 0 ? ['W1'] : ['W3-0', 'W1'],
    // Warmed up as W1 is: the comparison is about the idle connections, not a colder server.
    warmup: warmupFor(w1.messages),
  });
  return [
    {
      id: 'W1',
      title: `2 KB, 1 rcpt, 10 connections, ${w1.messages} messages, one command at a time`,
      load: w1,
      kind: 'throughput',
    },
    {
      id: 'W1P',
      title: `W1 pipelined (MAIL+RCPT+DATA in one write)`,
      load: { ...w1, pipelining: true },
      kind: 'throughput',
      compareWith: ['W1'],
    },
    {
      id: 'W2',
      title: `100 KB, 5 rcpts, 10 connections, ${n(2000)} messages`,
      load: { connections: 10, messages: n(2000), size: 100 * KB, recipients: 5 },
      kind: 'throughput',
    },
    w3(0),
    w3(n(1000)),
    w3(n(10_000)),
    {
      // The issue's comparison taken literally: all of W1 with the idle connections open, against W1.
      id: `W3-${quick ? '1k' : '10k'}-full`,
      title: `all of W1 (${w1.messages} messages) while ${n(10_000)} idle connections stay open`,
      load: { ...w1, idle: n(10_000) },
      kind: 'idle',
      compareWith: ['W1'],
    },
    {
      id: 'W4',
      title: `1 connection, sequential, 2 KB, ${n(2000)} messages (latency)`,
      load: { connections: 1, messages: n(2000), size: 2 * KB, recipients: 1 },
      kind: 'latency',
    },
    {
      id: 'W5',
      title: `churn: connect, EHLO, one message, QUIT; ${n(5000)} messages, 10 at a time`,
      load: { connections: 10, messages: n(5000), size: 2 * KB, recipients: 1, churn: true },
      kind: 'throughput',
    },
    {
      // Not one of the issue's targets: shows what group commit does when more transactions
      // are in flight than W1's ten (the durable path is latency-bound at ten).
      id: 'W6',
      title: `W1 with 50 connections, ${w1.messages} messages`,
      load: { ...w1, connections: 50 },
      kind: 'throughput',
      compareWith: ['W1'],
    },
    {
      id: quick ? 'L5' : 'L50',
      title: `one ${quick ? 5 : 50} MB message`,
      load: { connections: 1, messages: 1, size: (quick ? 5 : 50) * MB, recipients: 1 },
      kind: 'large',
    },
    {
      id: quick ? 'L20' : 'L200',
      title: `one ${quick ? 20 : 200} MB message`,
      load: { connections: 1, messages: 1, size: (quick ? 20 : 200) * MB, recipients: 1 },
      kind: 'large',
    },
  ];
}
