/**
 * Peer for the bench: nodemailer's `smtp-server` set up to accept every
 * message and throw it away (the same job as mailframe with queue-discard).
 *
 *   node --import tsx bench/peers/smtp-server-sink.ts --port 2526 [--host 127.0.0.1]
 */
import { parseArgs } from 'node:util';
import { SMTPServer } from 'smtp-server';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '2526' },
  },
});

const server = new SMTPServer({
  name: 'bench.local',
  banner: 'smtp-server sink',
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  hidePIPELINING: false,
  // No reverse DNS per connection: mailframe's core does none either, and there is no resolver here.
  disableReverseLookup: true,
  maxClients: 100_000,
  logger: false,
  onData(stream, _session, callback) {
    stream.on('end', () => callback());
    stream.resume();
  },
});

server.on('error', (err) => {
  process.stderr.write(`smtp-server-sink: ${err.message}\n`);
});

server.listen(Number(values.port), values.host, () => {
  process.stdout.write(`smtp-server-sink listening on ${values.host}:${values.port}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
