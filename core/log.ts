/** pino loggers: JSON by default, pretty on a TTY. Secrets and bodies are never logged. */
import { type Logger, pino } from 'pino';

export interface LogOptions {
  readonly level: string;
  readonly pretty?: boolean;
}

export function createLogger(opts: LogOptions): Logger {
  const pretty = opts.pretty ?? process.stdout.isTTY === true;
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
