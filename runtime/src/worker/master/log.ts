import { Logger } from '../log.js';

/** The master's logger: the shared structured format, role `master`. */
export const log = new Logger('master');
