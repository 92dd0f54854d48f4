export { Register } from './Register.js';
export type { RegisterOptions } from './Register.js';
