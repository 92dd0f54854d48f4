#!/usr/bin/env node
// @ts-check
// Entry point of `npx create-gatewayworker-app`: plain ESM, no build step.
import { main } from './cli.js';

process.exitCode = await main(process.argv.slice(2));
