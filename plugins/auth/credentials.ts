/** What the `auth` hook answers: a verdict on credentials, a reply, or no opinion. */
import type { Reply } from '../../core/reply.ts';
import type { AuthResult } from '../../core/types.ts';

export type AuthAnswer = AuthResult | Reply | undefined;
