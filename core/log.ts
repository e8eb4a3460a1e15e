/** pino loggers: JSON by default, pretty on a TTY. Secrets and bodies are never logged. */
import { createRequire } from 'node:module';
import { type Logger, pino } from 'pino';

export interface LogOptions {
  readonly level: string;
  readonly pretty?: boolean;
}

/**
 * pino-pretty is an optional peer dependency: a development tool that an
 * installed server does not need. Without it, logs stay JSON.
 */
function prettyAvailable(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

export function createLogger(opts: LogOptions): Logger {
  const pretty = (opts.pretty ?? process.stdout.isTTY === true) && prettyAvailable();
  const base = {
    level: opts.level,
    base: { pid: process.pid },
    redact: { paths: ['password', 'secret', '*.password', '*.secret'], censor: '[redacted]' },
  };
  if (!pretty) return pino(base);
  return pino({
    ...base,
    transport: {
      target: 'pino-pretty',
      options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' },
    },
  });
}

/** A logger that drops everything (tests, embedding). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
