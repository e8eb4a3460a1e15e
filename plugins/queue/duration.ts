/**
 * Durations as people write them in config: `30s`, `5m`, `1h30m`, `5d`, `1w`.
 * Parsed to milliseconds; formatted back for the CLI.
 */

const UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

const PART = /(\d+)(ms|s|m|h|d|w)/gy;

/** Milliseconds of a duration such as `90s`, `5m`, `1h30m`, `5d`; `undefined` when it is not one. */
export function parseDuration(text: string): number | undefined {
  const s = text.trim().toLowerCase();
  if (s === '') return undefined;
  PART.lastIndex = 0;
  let total = 0;
  let end = 0;
  for (let m = PART.exec(s); m; m = PART.exec(s)) {
    total += Number(m[1]) * (UNITS[m[2] as string] as number);
    end = PART.lastIndex;
  }
  return end === s.length ? total : undefined;
}

/** Like `parseDuration`, but throws a message naming the setting. */
export function requireDuration(text: string, setting: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new Error(`${setting}: "${text}" is not a duration (write e.g. 30s, 5m, 1h30m, 5d)`);
  }
  return ms;
}

/** A short human form: `45s`, `5m`, `1h30m`, `2d4h`. */
export function formatDuration(ms: number): string {
  if (ms < 0) return `-${formatDuration(-ms)}`;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let s = Math.round(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join('');
}
