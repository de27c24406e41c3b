#!/usr/bin/env node
// `xl` as an installed command (package.json bin): the same as `xenode xl ...`.

import { main } from './cli.js';

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    console.error(`xl: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
