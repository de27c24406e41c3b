// The xl command line without a daemon: help, option errors and their exit
// statuses (xl's def_getopt rules), create's argument handling up to the
// point it needs the daemon, and the message when no daemon is running.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defaultSocketPath } from '../daemon/client.js';
import { COMMANDS, DEFAULT_GLOBALS, globalHelp, lookup, parseGlobal, runXl } from './cli.js';
import { splitCreateArgs } from './commands/create.js';
import { parseEscape } from './commands/console.js';
import { fileURLToPath } from 'node:url';

/** guests/build/hello.elf from dist/src/tools/xl/ */
const HELLO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'guests', 'build', 'hello.elf');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-cli-'));
const NO_DAEMON = path.join(tmp, 'nobody-home.sock');

async function xl(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runXl(argv, { env: { XENODE_SOCKET: NO_DAEMON }, io: { out: (s) => { out += s; }, err: (s) => { err += s; } } });
  return { code, out, err };
}

test('xl with no command prints the command list and exits 1; xl help exits 0', async () => {
  const none = await xl();
  assert.equal(none.code, 1);
  assert.equal(none.out, globalHelp());
  assert.match(none.out, /^Usage xl \[-vfNtT\] <subcommand> \[args\]\n\nxl full list of subcommands:\n\n create {14}Create a domain/);
  for (const c of COMMANDS) assert.ok(none.out.includes(` ${c.name}`), c.name);
  const help = await xl('help');
  assert.equal(help.code, 0);
  assert.equal(help.out, none.out);
});

test('xl help <cmd> and xl <cmd> -h print the command help, exit 0', async () => {
  const a = await xl('help', 'list');
  const b = await xl('list', '-h');
  assert.equal(a.code, 0);
  assert.equal(b.code, 0);
  assert.equal(a.out, b.out);
  assert.match(a.out, /^Usage: xl \[-vtT\] list \[options\] \[Domain\]\n\n\nList information about all\/some domains\.\n\nOptions:\n\n-l, --long/);
  assert.equal((await xl('help', 'frobnicate')).out, 'command "frobnicate" not implemented\n');
});

test('unknown command: "command not implemented", exit 1', async () => {
  const r = await xl('frobnicate');
  assert.equal(r.code, 1);
  assert.equal(r.err, 'command not implemented\n');
});

test('unknown option: "option `x\' not supported.", exit 2, nothing else done', async () => {
  const r = await xl('list', '-x');
  assert.deepEqual(r, { code: 2, out: '', err: "option `x' not supported.\n" });
  assert.equal((await xl('destroy', '--bogus', 'd')).err, "option `--bogus' not supported.\n");
  // an option that needs a value and has none
  assert.deepEqual(await xl('create', '-f'), { code: 2, out: '', err: "option `f' not supported.\n" });
});

test('too few arguments: "\'xl cmd\' requires at least N argument(s).", help on stdout, exit 2', async () => {
  const r = await xl('destroy');
  assert.equal(r.code, 2);
  assert.equal(r.err, "'xl destroy' requires at least 1 argument.\n\n");
  assert.match(r.out, /^Usage: xl \[-vtTf\] destroy \[options\] <Domain>/);
  assert.equal((await xl('rename', 'a')).err, "'xl rename' requires at least 2 arguments.\n\n");
  assert.equal((await xl('vcpu-pin', 'a', '0')).err, "'xl vcpu-pin' requires at least 3 arguments.\n\n");
});

test('shutdown without -a or a domain: xl\'s message, exit 1', async () => {
  const r = await xl('shutdown', '-w');
  assert.equal(r.code, 1);
  assert.equal(r.err, 'You must specify -a or a domain id.\n\n');
});

test('options may follow the positionals, as with GNU getopt', async () => {
  // both reach the daemon (and fail there): the options were accepted
  for (const argv of [['list', '-v', 'dom'], ['list', 'dom', '-v']]) {
    const r = await xl(...argv);
    assert.equal(r.code, 1);
    assert.match(r.err, /cannot reach the xenode daemon/);
  }
});

test('no daemon: the message names the socket and how to start the daemon, exit 1', async () => {
  const r = await xl('list');
  assert.equal(r.code, 1);
  assert.equal(r.out, '');
  assert.ok(r.err.includes(NO_DAEMON), r.err);
  assert.match(r.err, /\(ENOENT\)/);
  assert.match(r.err, /xenode daemon/);
  // --socket wins over XENODE_SOCKET
  const other = path.join(tmp, 'other.sock');
  const r2 = await xl('--socket', other, 'info');
  assert.ok(r2.err.includes(other), r2.err);
  assert.equal((await xl('--socket=' + other, 'info')).err, r2.err);
});

test('global options: xl\'s -v -N -f -t -T (bundled, before the command), --socket; unknown ones refused as xl does', async () => {
  const g = (argv: string[]) => parseGlobal(argv, {});
  assert.deepEqual(g(['--socket', '/s', 'list', '-v']), { socket: '/s', global: DEFAULT_GLOBALS, rest: ['list', '-v'] });
  assert.deepEqual(parseGlobal(['list'], { XENODE_SOCKET: '/e' }), { socket: '/e', global: DEFAULT_GLOBALS, rest: ['list'] });
  assert.deepEqual(g(['-vvN', '-f', '-tT', 'create', '-v']), {
    socket: defaultSocketPath({}),
    global: { verbose: 2, dryRun: true, force: true, progressCr: true, timestamps: true }, rest: ['create', '-v'],
  });
  // getopt's line, then xl's; exit 1
  assert.deepEqual(g(['-Q', 'list']), { error: "xl: invalid option -- 'Q'\nunknown global option\n" });
  assert.deepEqual(await xl('-h'), { code: 1, out: '', err: "xl: invalid option -- 'h'\nunknown global option\n" });
  assert.deepEqual(await xl('--help'), { code: 1, out: '', err: "xl: unrecognized option '--help'\nunknown global option\n" });
  assert.deepEqual(g(['--socket']), { error: 'xl: --socket needs a path\n' });
  // -N with a command that cannot dry-run
  assert.deepEqual(await xl('-N', 'list'), { code: 1, out: '', err: 'command does not implement -N (dryrun) option\n' });
});

test('commands: any unambiguous prefix of xl\'s table; an ambiguous one, or one of a command xenode lacks, is refused', async () => {
  assert.equal((lookup('li') as { cmd: { name: string } }).cmd.name, 'list');
  assert.equal((lookup('vcpu-l') as { cmd: { name: string } }).cmd.name, 'vcpu-list');
  // an exact name wins even where it prefixes another (xenstore-ls, xenstore-list)
  assert.equal((lookup('xenstore-ls') as { cmd: { name: string } }).cmd.name, 'xenstore-ls');
  // ambiguous in xl's table: shutdown, sharing
  assert.equal(lookup('sh'), null);
  assert.deepEqual(lookup('sav'), { missing: 'save' });
  assert.deepEqual(await xl('sh'), { code: 1, out: '', err: 'command not implemented\n' });
  assert.deepEqual(await xl('sav', 'd', 'f'), { code: 1, out: '', err: "command not implemented: xenode has no 'xl save' yet (docs/xl.md lists the commands it has)\n" });
  assert.equal((await xl('help', 'li')).out, (await xl('help', 'list')).out);
  assert.equal((await xl('li', '-h')).code, 0);
});

test('create: the file and k=v overrides in any order; two files is a usage error (help, exit 2)', async () => {
  assert.deepEqual(splitCreateArgs(['a.cfg', 'memory=64', 'name="x"'], undefined), { file: 'a.cfg', extra: ['memory=64', 'name="x"'] });
  assert.deepEqual(splitCreateArgs(['memory=64'], 'b.cfg'), { file: 'b.cfg', extra: ['memory=64'] });
  assert.equal(splitCreateArgs(['a.cfg', 'b.cfg'], undefined), null);
  const two = await xl('create', 'a.cfg', 'b.cfg');
  assert.equal(two.code, 2);
  assert.match(two.out, /^Usage: xl \[-vtTfN\] create <ConfigFile> \[options\] \[vars\]/);
});

test('create: no file, unreadable file, malformed file (file:line:col), before any daemon contact', async () => {
  const none = await xl('create');
  assert.deepEqual(none, { code: 6, out: '', err: 'Config file not specified and none in save file\n' });
  const missing = path.join(tmp, 'missing.cfg');
  const m = await xl('create', missing);
  assert.equal(m.code, 3);
  assert.equal(m.err, `Failed to read config file: ${missing}: No such file or directory\n`);
  const bad = path.join(tmp, 'bad.cfg');
  fs.writeFileSync(bad, 'name = "x"\nmemory = = 3\n');
  const b = await xl('create', bad);
  assert.equal(b.code, 1);
  assert.match(b.err, new RegExp(`^Parsing config from ${bad}\\n${bad}:2:\\d+: `));
  assert.doesNotMatch(b.err, /daemon/);
  // -q drops the "Parsing config" line
  assert.match((await xl('create', '-q', bad)).err, new RegExp(`^${bad}:2:`));
});

test('create -n prints the validated configuration without a daemon', async () => {
  const cfg = path.join(tmp, 'dry.cfg');
  fs.writeFileSync(cfg, `name = "dry"\ntype = "pvh"\nkernel = "${HELLO}"\nmemory = 16\n`);
  const r = await xl('create', '-n', cfg, 'vcpus=2');
  assert.equal(r.code, 0, r.err);
  const c = (JSON.parse(r.out) as { domid: null; config: { name: string; memory: number; vcpus: number } }).config;
  assert.equal(c.name, 'dry');
  assert.equal(c.memory, 16);
  assert.equal(c.vcpus, 2);
});

test('console -e: ^X, one character or 0xNN; -t other than pv refused', async () => {
  assert.equal(parseEscape('^]'), 0x1d);
  assert.equal(parseEscape('^a'), 0x01);
  assert.equal(parseEscape('q'), 0x71);
  assert.equal(parseEscape('0x1d'), 0x1d);
  assert.equal(parseEscape('ab'), null);
  assert.deepEqual(await xl('console', '-t', 'bogus', 'd'), { code: 1, out: '', err: 'console type supported are: pv, serial, vuart\n' });
  assert.deepEqual(await xl('console', '-t', 'serial', 'd'), { code: 1, out: '', err: 'xl: domains on xenode have no serial console, only the PV one (-t pv)\nUnable to attach console\n' });
  assert.equal((await xl('console', '-e', 'xyz', 'd')).code, 2);
});
