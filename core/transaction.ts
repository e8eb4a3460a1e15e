/** One mail transaction (MAIL, RCPT..., DATA/BDAT) as the session keeps it. */
import type { Logger } from 'pino';
import type {
  EnvelopeAttributes,
  Params,
  Recipient,
  ReversePath,
  Session,
  Transaction,
  TransactionNotes,
} from './types.ts';

const EMPTY_PARAMS: Params = new Map();

export class SmtpTransaction implements Transaction {
  readonly id: string;
  readonly session: Session;
  from: ReversePath = { address: null, params: EMPTY_PARAMS };
  readonly recipients: Recipient[] = [];
  utf8 = false;
  declaredSize: number | undefined = undefined;
  readonly attributes: EnvelopeAttributes = {};
  readonly notes: TransactionNotes = {};
  readonly startedAt: number;
  #log: Logger | undefined;

  constructor(session: Session, id: string, now: number) {
    this.id = id;
    this.session = session;
    this.startedAt = now;
  }

  /** Child logger with `tid`, made on first use (most transactions only log their summary line). */
  get log(): Logger {
    this.#log ??= this.session.log.child({ tid: this.id });
    return this.#log;
  }
}
