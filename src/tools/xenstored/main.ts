// `xenode xenstored [--socket PATH] [--db PATH]`: run the store standalone.

import { parseArgs } from 'node:util';
import { Xenstored } from './daemon.js';

export const DEFAULT_SOCKET = '/var/run/xenstored/socket';
export const DEFAULT_DB = '/var/lib/xenstored/xenode.journal';

const USAGE = `usage: xenode xenstored [--socket PATH] [--db PATH|none] [--no-fsync]
  --socket PATH  Unix socket to serve (default: $XENSTORED_PATH, else ${DEFAULT_SOCKET})
  --db PATH      journal file that makes the store persistent (default ${DEFAULT_DB});
                 "none" keeps the store in memory only
  --no-fsync     do not fdatasync the journal (faster, not crash safe)`;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        db: { type: 'string' },
        'no-fsync': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: false,
      strict: true,
    }));
  } catch (e) {
    console.error(`xenstored: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const socketPath = values.socket ?? (process.env['XENSTORED_PATH'] || DEFAULT_SOCKET);
  const db = values.db ?? DEFAULT_DB;
  const d = new Xenstored({
    socketPath,
    dbPath: db === 'none' || db === '' ? undefined : db,
    fsync: !values['no-fsync'],
  });
  try {
    await d.start();
  } catch (e) {
    console.error(`xenstored: cannot start: ${(e as Error).message}`);
    return 1;
  }
  d.log(`listening on ${socketPath}${db === 'none' ? ' (memory only)' : `, journal ${db}`}`);
  await new Promise<void>((resolve) => {
    const done = (): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
  });
  await d.stop();
  return 0;
}
