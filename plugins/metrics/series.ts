/**
 * Series the SMTP path updates on every event, kept as plain numbers in maps
 * (a prom-client `inc` or `observe` validates and hashes its labels on every
 * call: microseconds per message on the hot path), and handed to the
 * prom-client registry at scrape time in its metric shape. prom-client then
 * does what it is for: the registry, the exposition formats, process metrics.
 */
import type { Registry } from 'prom-client';
import type { MetricSpec } from './catalogue.ts';

type Labels = Record<string, string>;

interface MetricValue {
  readonly value: number;
  readonly labels: Labels;
  readonly metricName?: string;
}

/** The shape prom-client's registry reads from a metric (`get()`), for one we keep ourselves. */
interface CollectedMetric {
  readonly name: string;
  readonly help: string;
  readonly type: MetricSpec['type'];
  readonly aggregator: 'sum';
  get(): Promise<{
    name: string;
    help: string;
    type: MetricSpec['type'];
    aggregator: 'sum';
    values: MetricValue[];
  }>;
  reset(): void;
}

function labelsOf(spec: MetricSpec, values: readonly string[]): Labels {
  const out: Labels = {};
  spec.labels.forEach((name, i) => {
    out[name] = values[i] ?? '';
  });
  return out;
}

/** A counter or gauge with labels: one number per label set. */
export class Series {
  readonly spec: MetricSpec;
  readonly #cells = new Map<string, { labels: Labels; value: number }>();

  /** `before`: awaited at each scrape before the values are read (gauges computed then). */
  constructor(spec: MetricSpec, registry: Registry, before?: () => Promise<void>) {
    this.spec = spec;
    register(
      registry,
      before,
      spec,
      () => [...this.#cells.values()].map((c) => ({ value: c.value, labels: c.labels })),
      () => this.#cells.clear(),
    );
  }

  /** Add `by` to the series of these label values (in the spec's label order). */
  add(by: number, ...values: string[]): void {
    this.cell(...values).value += by;
  }

  /** The series of these label values, to update without a lookup each time (hot paths cache it). */
  cell(...values: string[]): { value: number } {
    const key = values.length === 1 ? (values[0] as string) : values.join('\u0000');
    let cell = this.#cells.get(key);
    if (!cell) {
      cell = { labels: labelsOf(this.spec, values), value: 0 };
      this.#cells.set(key, cell);
    }
    return cell;
  }

  /** Set a gauge's series. */
  set(value: number, ...values: string[]): void {
    const key = values.join('\u0000');
    const cell = this.#cells.get(key);
    if (cell) cell.value = value;
    else this.#cells.set(key, { labels: labelsOf(this.spec, values), value });
  }

  /** Forget every series (gauges recomputed at scrape time). */
  clear(): void {
    this.#cells.clear();
  }
}

interface HistogramCell {
  readonly labels: Labels;
  /** Observations at or below each bound (not cumulative: summed at scrape time). */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

/** A histogram with labels: per label set, counts per bucket, sum and count. */
export class HistogramSeries {
  readonly spec: MetricSpec;
  readonly #bounds: readonly number[];
  readonly #cells = new Map<string, HistogramCell>();

  constructor(spec: MetricSpec, registry: Registry, bounds: readonly number[]) {
    this.spec = spec;
    this.#bounds = bounds;
    register(
      registry,
      undefined,
      spec,
      () => this.#values(),
      () => this.#cells.clear(),
    );
  }

  /** The cell of these label values, to observe into without a lookup each time. */
  cell(...values: string[]): HistogramCell {
    const key = values.join('\u0000');
    let cell = this.#cells.get(key);
    if (!cell) {
      cell = {
        labels: labelsOf(this.spec, values),
        counts: new Float64Array(this.#bounds.length + 1),
        sum: 0,
        count: 0,
      };
      this.#cells.set(key, cell);
    }
    return cell;
  }

  observe(cell: HistogramCell, value: number): void {
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    (cell.counts as Float64Array)[i] = ((cell.counts as Float64Array)[i] as number) + 1;
    cell.sum += value;
    cell.count++;
  }

  #values(): MetricValue[] {
    const out: MetricValue[] = [];
    const name = this.spec.name;
    for (const cell of this.#cells.values()) {
      let cumulative = 0;
      this.#bounds.forEach((bound, i) => {
        cumulative += cell.counts[i] as number;
        out.push({
          metricName: `${name}_bucket`,
          labels: { ...cell.labels, le: String(bound) },
          value: cumulative,
        });
      });
      out.push({ metricName: `${name}_bucket`, labels: { ...cell.labels, le: '+Inf' }, value: cell.count });
      out.push({ metricName: `${name}_sum`, labels: cell.labels, value: cell.sum });
      out.push({ metricName: `${name}_count`, labels: cell.labels, value: cell.count });
    }
    return out;
  }
}

function register(
  registry: Registry,
  before: (() => Promise<void>) | undefined,
  spec: MetricSpec,
  values: () => MetricValue[] | Promise<MetricValue[]>,
  reset: () => void,
): void {
  const metric: CollectedMetric = {
    name: spec.name,
    help: spec.help,
    type: spec.type,
    aggregator: 'sum',
    get: async () => {
      if (before) await before();
      return {
        name: spec.name,
        help: spec.help,
        type: spec.type,
        aggregator: 'sum',
        values: await values(),
      };
    },
    reset,
  };
  registry.registerMetric(metric as never);
}
