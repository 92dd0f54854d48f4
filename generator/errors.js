// @ts-check
/**
 * Errors meant for the person running the CLI: each is printed as one line on stderr and ends
 * the process with exit code 1. Anything else that is thrown is a bug and is reported as such.
 */

/** @typedef {'ERR_ARGS' | 'ERR_APP_NAME' | 'ERR_TEMPLATE' | 'ERR_PACKAGE_MANAGER' | 'ERR_TARGET_NOT_EMPTY' | 'ERR_UNWRITABLE' | 'ERR_NOT_A_PROJECT' | 'ERR_APP_EXISTS' | 'ERR_GENERATE' | 'ERR_INSTALL' | 'ERR_CANCELLED'} CliErrorCode */

export class CliError extends Error {
  /**
   * @param {CliErrorCode} code stable, for tests and scripts
   * @param {string} message one line, says what is wrong and, where it helps, what to do
   */
  constructor(code, message) {
    super(message);
    this.name = 'CliError';
    this.code = code;
  }
}

/**
 * The one line printed for an error.
 * @param {unknown} err
 * @returns {string}
 */
export function formatError(err) {
  if (err instanceof CliError) return `create-gatewayworker-app: ${err.message}`;
  const message = err instanceof Error ? err.message : String(err);
  return `create-gatewayworker-app: unexpected error: ${message.split('\n')[0]}`;
}
