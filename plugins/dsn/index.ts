/**
 * DSN (RFC 3461): advertise it and accept the RET and ENVID parameters of MAIL
 * and the NOTIFY and ORCPT parameters of RCPT. The values are recorded in
 * `tx.attributes.dsn` and in each recipient's `attributes.dsn`, which the queue
 * stores with the message for the delivery side to honour.
 */
import Type from 'typebox';
import { definePlugin } from '../../core/plugin.ts';
import { reply } from '../../core/reply.ts';
import type { EnvelopeDsn, RecipientDsn } from './attributes.ts';
import { parseEnvid, parseNotify, parseOrcpt, parseRet } from './params.ts';

export type { EnvelopeDsn, NotifyCondition, OriginalRecipient, RecipientDsn } from './attributes.ts';

export const schema = Type.Object({}, { additionalProperties: false });

/**
 * Octets each parameter may add to its line (a space, the keyword, `=` and the
 * longest value): RFC 3461 section 4 limits an ENVID value to 100 characters
 * and an ORCPT value to 500; RET and NOTIFY have short fixed values.
 */
const LINE_LENGTH = {
  RET: ' RET=HDRS'.length,
  ENVID: ' ENVID='.length + 100,
  NOTIFY: ' NOTIFY=SUCCESS,FAILURE,DELAY'.length,
  ORCPT: ' ORCPT='.length + 500,
} as const;

const badRet = reply(501, '5.5.4', 'RET must be FULL or HDRS');
const badEnvid = reply(501, '5.5.4', 'ENVID must be xtext of at most 100 characters');
const badNotify = reply(501, '5.5.4', 'NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY');
const badOrcpt = reply(501, '5.5.4', 'ORCPT must be addr-type;xtext');

export default definePlugin({
  name: 'dsn',
  /** Stateless: a config reload may replace or drop it while sessions run. */
  reloadable: true,
  description: 'RFC 3461 DSN: RET, ENVID, NOTIFY and ORCPT recorded with the message.',
  schema,
  register(api) {
    api.hooks.capabilities.tap((keywords) => {
      keywords.push('DSN');
      return keywords;
    });
    const envelope = (dsn: EnvelopeDsn | undefined): EnvelopeDsn => dsn ?? {};
    const recipient = (dsn: RecipientDsn | undefined): RecipientDsn => dsn ?? {};

    api.registerParam({
      name: 'RET',
      command: 'MAIL',
      lineLength: LINE_LENGTH.RET,
      handler(value, { tx }) {
        const ret = value === true ? undefined : parseRet(value);
        if (ret === undefined) return badRet;
        tx.attributes.dsn = { ...envelope(tx.attributes.dsn), ret };
        return undefined;
      },
    });
    api.registerParam({
      name: 'ENVID',
      command: 'MAIL',
      lineLength: LINE_LENGTH.ENVID,
      handler(value, { tx }) {
        const envid = value === true ? undefined : parseEnvid(value);
        if (envid === undefined) return badEnvid;
        tx.attributes.dsn = { ...envelope(tx.attributes.dsn), envid };
        return undefined;
      },
    });
    api.registerParam({
      name: 'NOTIFY',
      command: 'RCPT',
      lineLength: LINE_LENGTH.NOTIFY,
      handler(value, { recipient: attrs }) {
        const notify = value === true ? undefined : parseNotify(value);
        if (notify === undefined || attrs === undefined) return badNotify;
        attrs.dsn = { ...recipient(attrs.dsn), notify };
        return undefined;
      },
    });
    api.registerParam({
      name: 'ORCPT',
      command: 'RCPT',
      lineLength: LINE_LENGTH.ORCPT,
      handler(value, { tx, recipient: attrs }) {
        const orcpt = value === true ? undefined : parseOrcpt(value, tx.utf8);
        if (orcpt === undefined || attrs === undefined) return badOrcpt;
        attrs.dsn = { ...recipient(attrs.dsn), orcpt };
        return undefined;
      },
    });
  },
});
