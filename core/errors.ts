/**
 * Errors for operators and programmers, from one coded catalogue. Tests assert
 * on `code`; messages are for people. None of these ever reach an SMTP client.
 */
export type ErrorCode =
  | 'MF_CONFIG_INVALID'
  | 'MF_CONFIG_READ'
  | 'MF_PLUGIN_NOT_FOUND'
  | 'MF_PLUGIN_INVALID'
  | 'MF_PLUGIN_DEPENDENCY'
  | 'MF_PLUGIN_DUPLICATE'
  | 'MF_PLUGIN_REGISTER'
  | 'MF_PLUGIN_TIMEOUT'
  | 'MF_VERB_CONFLICT'
  | 'MF_PARAM_CONFLICT'
  | 'MF_SERVICE_CONFLICT'
  | 'MF_LISTEN';

export class MailframeError extends Error {
  readonly code: ErrorCode;
  readonly details: readonly string[];
  constructor(
    code: ErrorCode,
    message: string,
    details: readonly string[] = [],
    options?: { cause?: unknown },
  ) {
    super(details.length > 0 ? `${message}\n  ${details.join('\n  ')}` : message, options);
    this.name = 'MailframeError';
    this.code = code;
    this.details = details;
  }
}

export const Errors = Object.freeze({
  configInvalid: (details: readonly string[]) =>
    new MailframeError('MF_CONFIG_INVALID', 'Invalid configuration', details),
  configRead: (file: string, cause: unknown) =>
    new MailframeError('MF_CONFIG_READ', `Cannot read configuration file ${file}: ${describe(cause)}`, [], {
      cause,
    }),
  pluginNotFound: (name: string, tried: readonly string[], cause?: unknown) =>
    new MailframeError(
      'MF_PLUGIN_NOT_FOUND',
      `Plugin "${name}" not found (tried ${tried.join(', ')})`,
      cause === undefined ? [] : [describe(cause).split('\n')[0] ?? ''],
      { cause },
    ),
  pluginInvalid: (name: string, why: string) =>
    new MailframeError('MF_PLUGIN_INVALID', `Plugin "${name}" is not a valid mailframe plugin: ${why}`),
  pluginDependency: (name: string, missing: string) =>
    new MailframeError(
      'MF_PLUGIN_DEPENDENCY',
      `Plugin "${name}" needs plugin "${missing}" loaded before it: add it earlier in "plugins"`,
    ),
  pluginDuplicate: (name: string) =>
    new MailframeError(
      'MF_PLUGIN_DUPLICATE',
      `Plugin instance "${name}" is configured twice; give one an "id"`,
    ),
  pluginRegister: (name: string, cause: unknown) =>
    new MailframeError('MF_PLUGIN_REGISTER', `Plugin "${name}" failed to start: ${describe(cause)}`, [], {
      cause,
    }),
  pluginTimeout: (name: string, ms: number) =>
    new MailframeError('MF_PLUGIN_TIMEOUT', `Plugin "${name}" did not finish starting within ${ms} ms`),
  verbConflict: (verb: string, owner: string, other: string) =>
    new MailframeError(
      'MF_VERB_CONFLICT',
      `Verb ${verb} registered by "${other}" is already registered by "${owner}"`,
    ),
  paramConflict: (param: string, owner: string, other: string) =>
    new MailframeError(
      'MF_PARAM_CONFLICT',
      `Parameter ${param} registered by "${other}" is already registered by "${owner}"`,
    ),
  serviceConflict: (key: string, owner: string, other: string) =>
    new MailframeError(
      'MF_SERVICE_CONFLICT',
      `Service "${key}" provided by "${other}" is already provided by "${owner}"`,
    ),
  listen: (where: string, cause: unknown) =>
    new MailframeError('MF_LISTEN', `Cannot listen on ${where}: ${describe(cause)}`, [], { cause }),
});

export function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
