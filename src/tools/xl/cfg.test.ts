// xl.cfg: the syntax libxlu accepts, command-line overrides, the conversion
// into a DomainConfig with xl's defaults and checks, and writing it back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { prng } from '../../testing/prng.js';
import {
  XlCfgError, formatCpuSet, parseCpuSet, parseXlCfg, quoteXlCfgString, serialiseXlCfg, toDomainConfig,
  type ToDomainConfigOptions, type XlCfgValue,
} from './cfg.js';
import type { DomainConfig } from './config.js';

const parse = (text: string | Uint8Array, overrides: string[] = []) => parseXlCfg(text, 'hello.cfg', overrides);

/** The value of key as plain data: strings, numbers (as bigint) and arrays. */
function plain(v: XlCfgValue | undefined): unknown {
  if (!v) return undefined;
  if (v.kind === 'list') return v.items.map(plain);
  return v.value;
}
const get = (text: string | Uint8Array, key: string, overrides: string[] = []) => plain(parse(text, overrides).get(key)?.value);

/** The message of the XlCfgError fn throws. */
function error(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof XlCfgError, `expected XlCfgError, got ${String(e)}`);
    return e.message;
  }
  assert.fail('no error thrown');
}
const parseError = (text: string | Uint8Array, overrides: string[] = []) => error(() => parse(text, overrides));

// ---- syntax --------------------------------------------------------------

test('KEY = VALUE statements are separated by newlines or semicolons', () => {
  const cfg = parse('name = "a"\nmemory = 64; vcpus = 2;;\n\n');
  assert.deepEqual([...cfg.keys()], ['name', 'memory', 'vcpus']);
  assert.equal(get('a=1;b=2', 'b'), 2n);
});

test('a missing final newline is accepted', () => {
  assert.equal(get('memory = 64', 'memory'), 64n);
});

test('# starts a comment anywhere outside a string', () => {
  const text = '# header\nname = "a#b" # trailing\nlist = [ # open\n  1, # one\n  2 ]\n';
  assert.equal(get(text, 'name'), 'a#b');
  assert.deepEqual(get(text, 'list'), [1n, 2n]);
});

test('keys start with a lower-case letter and may hold digits, _ and .', () => {
  assert.equal(get('on_poweroff2.x = 1', 'on_poweroff2.x'), 1n);
  assert.equal(parseError('Memory = 64'), "hello.cfg:1:1: invalid key 'Memory' (keys are lower-case letters, digits, '_' and '.', starting with a letter)");
  assert.equal(parseError('_x = 1'), "hello.cfg:1:1: invalid key '_x' (keys are lower-case letters, digits, '_' and '.', starting with a letter)");
});

test('strings in single or double quotes', () => {
  assert.equal(get(`a = 'it"s'`, 'a'), 'it"s');
  assert.equal(get(`a = "it's"`, 'a'), "it's");
  assert.equal(get('a = ""', 'a'), '');
  assert.equal(get('a = "é ünïcode ✓"', 'a'), 'é ünïcode ✓');
});

test('C escapes in strings: \\n \\t \\\\ \\\' \\" \\a \\b \\f \\r \\v, \\xHH and octal', () => {
  assert.equal(get(String.raw`a = "1\n2\t3\\4\'5\"6"`, 'a'), '1\n2\t3\\4\'5"6');
  assert.equal(get(String.raw`a = '\a\b\f\r\v'`, 'a'), '\x07\b\f\r\v');
  assert.equal(get(String.raw`a = "\x41\x7e\x9"`, 'a'), 'A~\t');
  assert.equal(get(String.raw`a = "\101\60\0601"`, 'a'), 'A001');
  assert.equal(get(String.raw`a = "\1011"`, 'a'), 'A1');
});

test('numbers: decimal, 0-prefixed octal, 0x hex', () => {
  assert.equal(get('a = 100', 'a'), 100n);
  assert.equal(get('a = 0100', 'a'), 64n);
  assert.equal(get('a = 0x100', 'a'), 256n);
  assert.equal(get('a = 0XfF', 'a'), 255n);
  assert.equal(get('a = 0', 'a'), 0n);
  const v = parse('a = 0x10').get('a')!.value;
  assert.equal(v.kind === 'number' && v.text, '0x10');
});

test('lists: nested, spanning lines, trailing comma, empty', () => {
  assert.deepEqual(get('a = [1, "two", [3, [4]]]', 'a'), [1n, 'two', [3n, [4n]]]);
  assert.deepEqual(get('a = [\n  "x",\n\n  "y",\n]\nb = 1', 'a'), ['x', 'y']);
  assert.deepEqual(get('a = [\n"x"\n,\n"y"\n]', 'a'), ['x', 'y']);
  assert.deepEqual(get('a = []', 'a'), []);
  assert.deepEqual(get('a = [\n]', 'a'), []);
});

test('a later assignment to a key replaces the earlier one', () => {
  const cfg = parse('memory = 32\nname = "x"\nmemory = 64\n');
  assert.equal(plain(cfg.get('memory')!.value), 64n);
  assert.equal(cfg.get('memory')!.pos.line, 3);
});

test('+= concatenates strings and appends to lists; on an unset key it is =', () => {
  assert.equal(get('extra = "console=hvc0"\nextra += " quiet"', 'extra'), 'console=hvc0 quiet');
  assert.deepEqual(get('disk = ["a"]\ndisk += ["b", "c"]', 'disk'), ['a', 'b', 'c']);
  assert.deepEqual(get('vif += ["x"]', 'vif'), ['x']);
  assert.equal(get('a = 1\na += 2', 'a'), '12');
  assert.equal(parseError('disk = ["a"]\ndisk += "b"'), "hello.cfg:2:9: cannot add a single value to 'disk', which is a list (hello.cfg:1)");
  assert.equal(parseError('extra = "a"\nextra += ["b"]'), "hello.cfg:2:10: cannot add a list to 'extra', which is a single value (hello.cfg:1)");
});

test('CRLF line ends are accepted', () => {
  assert.equal(get('name = "a"\r\nmemory = 64\r\n', 'memory'), 64n);
});

test('a file given as bytes must be UTF-8', () => {
  assert.equal(get(new TextEncoder().encode('name = "ü"\n'), 'name'), 'ü');
  assert.equal(parseError(new Uint8Array([0x6e, 0x3d, 0x31, 0x0a, 0x61, 0x3d, 0x22, 0xff, 0x22])), 'hello.cfg:2:4: invalid UTF-8 byte 0xff');
});

// ---- syntax errors, each with file:line:col ----------------------------

test('missing = after a key', () => {
  assert.equal(parseError('name = "x"\n\nmemory: 64'), "hello.cfg:3:7: expected '=' after key 'memory'");
  assert.equal(parseError('memory 64'), "hello.cfg:1:8: expected '=' after key 'memory'");
  assert.equal(parseError('memory\n= 64'), "hello.cfg:1:7: expected '=' after key 'memory'");
});

test('missing value', () => {
  assert.equal(parseError('memory =\n'), "hello.cfg:1:9: expected a value for 'memory', found end of line");
  assert.equal(parseError('memory = '), "hello.cfg:1:10: expected a value for 'memory', found end of file");
  assert.equal(parseError('memory = ;'), "hello.cfg:1:10: expected a value for 'memory', found ';'");
  assert.equal(parseError('memory = = 1'), "hello.cfg:1:10: expected a value for 'memory', found '='");
});

test('bare words are not values', () => {
  assert.equal(parseError('type = pvh'), "hello.cfg:1:8: expected a value for 'type', found 'pvh'");
});

test('two values in one statement', () => {
  assert.equal(parseError('memory = 64 128'), "hello.cfg:1:13: expected end of statement after the value of 'memory', found '128'");
  assert.equal(parseError('a = "x" "y"'), "hello.cfg:1:9: expected end of statement after the value of 'a', found a string");
});

test('a statement must start with a key', () => {
  assert.equal(parseError('= 5'), "hello.cfg:1:1: expected a key, found '='");
  assert.equal(parseError('\n  "x" = 1'), 'hello.cfg:2:3: expected a key, found a string');
  assert.equal(parseError('64'), "hello.cfg:1:1: expected a key, found '64'");
});

test('unterminated strings: at end of line or of file', () => {
  assert.equal(parseError('name = "abc\nmemory = 1'), 'hello.cfg:1:8: unterminated string');
  assert.equal(parseError("a = 1\nname = 'abc"), 'hello.cfg:2:8: unterminated string');
  assert.equal(parseError('name = "abc\\'), 'hello.cfg:1:8: unterminated string');
  assert.equal(parseError('name = "abc\\\n"'), 'hello.cfg:1:8: unterminated string');
});

test('bad escapes', () => {
  assert.equal(parseError(String.raw`a = "x\qy"`), "hello.cfg:1:7: unknown escape '\\q' in string");
  assert.equal(parseError(String.raw`a = "\xg"`), "hello.cfg:1:6: invalid escape '\\x': expected hex digits");
  assert.equal(parseError(String.raw`a = "\777"`), "hello.cfg:1:6: octal escape '\\777' is out of range");
  assert.equal(parseError(String.raw`a = "x\0"`), 'hello.cfg:1:7: a string cannot contain a NUL character');
  assert.equal(parseError(String.raw`a = "\x00"`), 'hello.cfg:1:6: a string cannot contain a NUL character');
});

test('unbalanced brackets', () => {
  assert.equal(parseError('disk = [ "a",\n "b"\n'), "hello.cfg:1:8: unclosed '[' in the value of 'disk'");
  assert.equal(parseError('disk = [[1]'), "hello.cfg:1:8: unclosed '[' in the value of 'disk'");
  assert.equal(parseError('disk = ["a"]]'), "hello.cfg:1:13: expected end of statement after the value of 'disk', found ']'");
  assert.equal(parseError('disk = ]'), "hello.cfg:1:8: expected a value for 'disk', found ']'");
  assert.equal(parseError('disk = ["a" "b"]'), "hello.cfg:1:13: expected ',' or ']' in the list for 'disk', found a string");
  assert.equal(parseError('disk = [,]'), "hello.cfg:1:9: expected a value for 'disk', found ','");
  assert.equal(parseError('disk = ["a",,]'), "hello.cfg:1:13: expected a value for 'disk', found ','");
});

test('lists nested too deeply are refused, not a stack overflow', () => {
  assert.equal(parseError(`a = ${'['.repeat(100000)}`), "hello.cfg:1:37: lists nested more than 32 deep");
  assert.deepEqual(get(`a = ${'['.repeat(32)}${']'.repeat(32)}`, 'a') !== undefined, true);
});

test('malformed numbers', () => {
  assert.equal(parseError('memory = 64M'), "hello.cfg:1:10: invalid number '64M' (numbers are decimal, 0-prefixed octal or 0x-prefixed hex)");
  assert.equal(parseError('memory = 08'), "hello.cfg:1:10: invalid number '08' (numbers are decimal, 0-prefixed octal or 0x-prefixed hex)");
  assert.equal(parseError('memory = 1.5'), "hello.cfg:1:10: invalid number '1.5' (numbers are decimal, 0-prefixed octal or 0x-prefixed hex)");
  assert.equal(parseError('memory = 0x'), "hello.cfg:1:10: invalid number '0x' (numbers are decimal, 0-prefixed octal or 0x-prefixed hex)");
});

test('negative numbers and Python-isms are lexical errors with a hint', () => {
  const hint = ' (xl.cfg is not Python: values are numbers, quoted strings or [lists])';
  assert.equal(parseError('cap = -1'), `hello.cfg:1:7: unexpected character '-'${hint}`);
  assert.equal(parseError('a = {"b": 1}'), `hello.cfg:1:5: unexpected character '{'${hint}`);
  assert.equal(parseError('a = (1)'), `hello.cfg:1:5: unexpected character '('${hint}`);
});

test('garbage bytes are lexical errors', () => {
  assert.equal(parseError('name = "x"\n\x01'), "hello.cfg:2:1: unexpected character '\\x01'");
  assert.equal(parseError('a = 1 @'), "hello.cfg:1:7: unexpected character '@'");
  assert.equal(parseError('a = \x7f'), "hello.cfg:1:5: unexpected character '\\x7f'");
  assert.equal(parseError('a\x7f= 1'), "hello.cfg:1:2: expected '=' after key 'a'");
});

// ---- command-line overrides -----------------------------------------------

test('overrides are parsed as extra lines after the file and win', () => {
  const cfg = parse('name = "a"\nmemory = 32\n', ['memory=64', 'name="x"', 'extra="quiet"']);
  assert.equal(plain(cfg.get('memory')!.value), 64n);
  assert.equal(plain(cfg.get('name')!.value), 'x');
  assert.equal(cfg.get('memory')!.origin, 'command line');
  assert.equal(cfg.get('extra')!.pos.file, '<command line>');
});

test('an override may append with += and hold several statements', () => {
  assert.equal(get('extra = "a"', 'extra', ['extra+=" b"']), 'a b');
  assert.equal(get('', 'vcpus', ['memory=1; vcpus=2']), 2n);
});

test('an override error names the command line and the argument number as the line', () => {
  assert.equal(parseError('memory = 32', ['vcpus=2', 'memory=abc']), "<command line>:2:8: expected a value for 'memory', found 'abc'");
});

// ---- conversion to DomainConfig ---------------------------------------------

const dir = mkdtempSync(path.join(tmpdir(), 'xenode-cfg-'));
mkdirSync(path.join(dir, 'guests'));
writeFileSync(path.join(dir, 'guests', 'k.elf'), 'kernel');
writeFileSync(path.join(dir, 'initrd'), 'ramdisk');
const cfgFile = path.join(dir, 'hello.cfg');
const BASE = 'name = "hello"\nkernel = "guests/k.elf"\n';

/** toDomainConfig of BASE + text, collecting warnings. */
function convert(text: string, overrides: string[] = [], opts: ToDomainConfigOptions = {}): { c: DomainConfig; warnings: string[] } {
  const warnings: string[] = [];
  const c = toDomainConfig(parseXlCfg(BASE + text, 'hello.cfg', overrides),
    { file: cfgFile, cwd: '/', hostCpus: 4, warn: (w) => warnings.push(w), ...opts });
  return { c, warnings };
}
const convertError = (text: string, overrides: string[] = [], opts: ToDomainConfigOptions = {}) =>
  error(() => convert(text, overrides, opts));

test('defaults: xl and libxl defaults for everything the file leaves out', () => {
  const { c, warnings } = convert('');
  assert.match(c.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.deepEqual({ ...c, uuid: '' }, {
    name: 'hello', type: 'pvh', uuid: '', memory: 32, maxmem: 32, vcpus: 1, maxvcpus: 1, cpus: null, cpusSoft: null,
    kernel: path.join(dir, 'guests/k.elf'), cmdline: '',
    onPoweroff: 'destroy', onReboot: 'restart', onCrash: 'destroy', onWatchdog: 'destroy', onSoftReset: 'soft-reset',
    sched: {}, maxGrantFrames: 64, maxEventChannels: 1023, disks: [], vifs: [], autostart: false,
  });
  assert.deepEqual(warnings, []);
});

test('acpi: absent leaves libxl\'s default (on) to the builder; 0 and 1 are kept and written back', () => {
  assert.equal(convert('').c.acpi, undefined);
  const off = convert('acpi = 0');
  assert.equal(off.c.acpi, false);
  assert.deepEqual(off.warnings, []);
  assert.equal(convert('acpi = 1').c.acpi, true);
  assert.match(serialiseXlCfg(off.c), /^acpi = 0$/m);
  assert.doesNotMatch(serialiseXlCfg(convert('').c), /acpi/);
});

test('every domain gets a different generated uuid', () => {
  assert.notEqual(convert('').c.uuid, convert('').c.uuid);
});

test('name is required and sane', () => {
  const noName = () => toDomainConfig(parseXlCfg('kernel = "guests/k.elf"\n', 'hello.cfg'), { file: cfgFile, checkFiles: false });
  assert.equal(error(noName), `${cfgFile}:1:1: no 'name': every domain needs one (name = "...")`);
  assert.equal(convertError('name = ""'), 'hello.cfg:3:8: the domain name is empty');
  assert.equal(convertError('name = "a/b"'), `hello.cfg:3:8: the domain name "a/b" contains '/' or a control character`);
  assert.equal(convertError('name = "a\\tb"'), `hello.cfg:3:8: the domain name "a\\tb" contains '/' or a control character`);
  assert.equal(convertError(`name = "${'x'.repeat(65)}"`), 'hello.cfg:3:8: the domain name is longer than 64 bytes');
  assert.equal(convert(`name = "${'x'.repeat(64)}"`).c.name.length, 64);
  assert.equal(convertError('name = " a"'), 'hello.cfg:3:8: the domain name " a" starts or ends with white space');
  assert.equal(convertError('name = "42"'), "hello.cfg:3:8: the domain name '42' is all digits, which xl would read as a domain id");
  assert.equal(convertError('name = "Domain-0"'), "hello.cfg:3:8: 'Domain-0' is the control domain's name");
  assert.equal(convertError('name = ["a"]'), "hello.cfg:3:8: 'name' must be a single value, not a list");
});

test('type must be pvh: pv and hvm are refused with the reason', () => {
  assert.equal(convert('type = "pvh"').c.type, 'pvh');
  assert.match(convertError('type = "pv"'), /^hello\.cfg:3:8: type "pv" is not supported: xenode runs PVH guests only/);
  assert.match(convertError('type = "hvm"'), /^hello\.cfg:3:8: type "hvm" is not supported: xenode runs PVH guests only \(HVM needs a device model/);
  assert.equal(convertError('type = "pvhx"'), "hello.cfg:3:8: unknown type 'pvhx' (xl knows pv, pvh and hvm; xenode runs pvh)");
});

test('the pre-4.10 builder key: hvm and generic (pv) are refused; pvh = 1 means PVH', () => {
  assert.match(convertError('builder = "hvm"\ndevice_model_version = "qemu-xen"'), /^hello\.cfg:3:11: type "hvm" is not supported/);
  assert.match(convertError('builder = "generic"'), /^hello\.cfg:3:11: type "pv" is not supported/);
  assert.equal(convert('pvh = 1').c.type, 'pvh');
  assert.deepEqual(convert('type = "pvh"\nbuilder = "hvm"').warnings, ["hello.cfg:4: 'builder' is ignored when 'type' is given"]);
});

test('uuid is validated and lower-cased', () => {
  assert.equal(convert('uuid = "0A1B2C3D-0000-4000-8000-00000000000F"').c.uuid, '0a1b2c3d-0000-4000-8000-00000000000f');
  assert.equal(convertError('uuid = "0a1b2c3d00004000800000000000000f"'),
    "hello.cfg:3:8: invalid uuid '0a1b2c3d00004000800000000000000f' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx in hex)");
});

test('memory and maxmem in MiB; maxmem defaults to memory and may not be below it', () => {
  assert.deepEqual([convert('memory = 64').c.memory, convert('memory = 64').c.maxmem], [64, 64]);
  assert.deepEqual([convert('memory = 64\nmaxmem = 128').c.memory, convert('memory = 64\nmaxmem = 128').c.maxmem], [64, 128]);
  assert.equal(convertError('memory = 64\nmaxmem = 32'), 'hello.cfg:4:10: maxmem (32 MiB) must not be below memory (64 MiB)');
  assert.equal(convertError('memory = 0'), "hello.cfg:3:10: 'memory' is 0, outside 1..1048576");
  assert.equal(convertError('memory = 99999999999999999999999'), "hello.cfg:3:10: 'memory' is 99999999999999999999999, outside 1..1048576");
});

test('a number may be written as a string holding one, as xl converts both', () => {
  assert.equal(convert('memory = "0x40"').c.memory, 64);
  assert.equal(convert('memory = "64"').c.memory, 64);
  assert.equal(convertError('memory = "64M"'), `hello.cfg:3:10: 'memory' must be a number, not the string "64M"`);
  assert.equal(convertError('memory = [64]'), "hello.cfg:3:10: 'memory' must be a number, not a list");
});

test('vcpus and maxvcpus: default 1, maxvcpus defaults to vcpus, at most HVM_MAX_VCPUS', () => {
  const { c } = convert('vcpus = 2\nmaxvcpus = 4');
  assert.deepEqual([c.vcpus, c.maxvcpus], [2, 4]);
  assert.equal(convert('vcpus = 3').c.maxvcpus, 3);
  assert.equal(convertError('vcpus = 4\nmaxvcpus = 2'), 'hello.cfg:4:12: maxvcpus (2) must not be below vcpus (4)');
  assert.equal(convertError('vcpus = 0'), "hello.cfg:3:9: 'vcpus' is 0, outside 1..128");
  assert.equal(convertError('maxvcpus = 129'), "hello.cfg:3:12: 'maxvcpus' is 129, outside 1..128");
});

test('cpus: all, ranges, exclusions, node:0; a set covering the host is no restriction', () => {
  assert.equal(convert('cpus = "all"').c.cpus, null);
  assert.deepEqual(convert('cpus = "0-3,^2"').c.cpus, [0, 1, 3]);
  assert.deepEqual(convert('cpus = "all,^0"').c.cpus, [1, 2, 3]);
  assert.deepEqual(convert('cpus = 2').c.cpus, [2]);
  assert.equal(convert('cpus = "0-3"').c.cpus, null);
  assert.equal(convert('cpus = "node:0"').c.cpus, null);
  assert.deepEqual(convert('cpus_soft = "nodes:0,^1-2"').c.cpusSoft, [0, 3]);
});

test('cpus errors: NUMA nodes other than 0, CPUs the host lacks, empty sets, bad syntax', () => {
  assert.equal(convertError('cpus = "node:1"'), 'hello.cfg:3:8: cpus: NUMA node 1 does not exist (xenode presents the host as a single node 0)');
  assert.equal(convertError('cpus = "1,7"'), 'hello.cfg:3:8: cpus: CPU 7 does not exist (this host has 4: 0-3)');
  assert.equal(convertError('cpus = "1,^1"'), 'hello.cfg:3:8: cpus: "1,^1" leaves no CPU');
  assert.equal(convertError('cpus = "3-1"'), "hello.cfg:3:8: cpus: CPU range '3-1' runs backwards");
  assert.equal(convertError('cpus_soft = "0,,1"'), 'hello.cfg:3:13: cpus_soft: empty entry in "0,,1"');
  assert.equal(convertError('cpus = "x"'), `hello.cfg:3:8: cpus: invalid CPU 'x' in "x"`);
});

test('cpus as a list gives per-vCPU affinity; the union bounds the domain', () => {
  const { c } = convert('vcpus = 2\ncpus = ["0", "1-2"]');
  assert.deepEqual(c.cpusPerVcpu, [[0], [1, 2]]);
  assert.deepEqual(c.cpus, [0, 1, 2]);
  // vCPUs past the list may run anywhere, so the domain as a whole is unrestricted.
  const short = convert('vcpus = 3\ncpus = [0, 1]').c;
  assert.deepEqual(short.cpusPerVcpu, [[0], [1]]);
  assert.equal(short.cpus, null);
  assert.equal(convertError('vcpus = 1\ncpus = ["0", "1"]'), "hello.cfg:4:8: 'cpus' has 2 entries but the domain has 1 vCPUs");
  assert.equal(convertError('vcpus = 2\ncpus = [["0"], "1"]'), `hello.cfg:4:9: 'cpus' entries must be strings such as "0-3,^2", not lists`);
});

test('kernel is required and resolved against the config file directory; ramdisk likewise', () => {
  const { c } = convert('ramdisk = "initrd"');
  assert.equal(c.kernel, path.join(dir, 'guests/k.elf'));
  assert.equal(c.ramdisk, path.join(dir, 'initrd'));
  assert.equal(convert(`kernel = "${path.join(dir, 'initrd')}"`).c.kernel, path.join(dir, 'initrd'));
  const noKernel = () => toDomainConfig(parseXlCfg('name = "a"\n', 'hello.cfg'), { file: 'hello.cfg' });
  assert.match(error(noKernel), /^hello\.cfg:1:1: no 'kernel': xenode boots PVH kernels directly/);
  assert.equal(convertError('kernel = "nope.elf"'), `hello.cfg:3:10: kernel '${path.join(dir, 'nope.elf')}' is not a readable file`);
  assert.equal(convertError('ramdisk = "guests"'), `hello.cfg:3:11: ramdisk '${path.join(dir, 'guests')}' is not a readable file`);
  assert.equal(convertError('kernel = ""'), "hello.cfg:3:10: 'kernel' is empty");
});

test('a path given on the command line resolves against the current directory', () => {
  const { c } = convert('', ['kernel="k.elf"'], { cwd: path.join(dir, 'guests') });
  assert.equal(c.kernel, path.join(dir, 'guests/k.elf'));
  assert.equal(convert('', ['kernel="nothing/here"'], { checkFiles: false }).c.kernel, '/nothing/here');
});

test('cmdline, or root and extra combined as xl does', () => {
  assert.equal(convert('cmdline = "console=hvc0"').c.cmdline, 'console=hvc0');
  assert.equal(convert('root = "/dev/xvda1"\nextra = "quiet"').c.cmdline, 'root=/dev/xvda1 quiet');
  assert.equal(convert('root = "/dev/xvda1"').c.cmdline, 'root=/dev/xvda1');
  assert.equal(convert('extra = "quiet"').c.cmdline, 'quiet');
  const both = convert('cmdline = "a"\nextra = "b"');
  assert.equal(both.c.cmdline, 'a');
  assert.deepEqual(both.warnings, ["hello.cfg:3: 'root' and 'extra' are ignored in favour of 'cmdline'"]);
});

test('on_* actions: defaults, every libxl action name, unknown names refused', () => {
  const { c } = convert('on_poweroff = "preserve"\non_reboot = "rename-restart"\non_crash = "coredump-restart"\non_watchdog = "coredump-destroy"\non_soft_reset = "destroy"');
  assert.deepEqual([c.onPoweroff, c.onReboot, c.onCrash, c.onWatchdog, c.onSoftReset],
    ['preserve', 'rename-restart', 'coredump-restart', 'coredump-destroy', 'destroy']);
  assert.equal(convertError('on_crash = "restart_now"'),
    "hello.cfg:3:12: unknown on_crash action 'restart_now' (destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart, soft-reset)");
});

test('pool and scheduling parameters are stored under sched', () => {
  const { c } = convert('pool = "rt"\ncpu_weight = 512\ncap = 50\nperiod = 10000\nslice = 4000\nlatency = 100\nextratime = 1');
  assert.equal(c.pool, 'rt');
  assert.deepEqual(c.sched, { weight: 512, cap: 50, period: 10000, slice: 4000, latency: 100, extratime: 1 });
  assert.equal(convertError('cpu_weight = 0'), "hello.cfg:3:14: 'cpu_weight' is 0, outside 1..65535");
  assert.equal(convertError('vcpus = 2\ncap = 201'), "hello.cfg:4:7: 'cap' is 201, outside 0..200");
  assert.equal(convertError('extratime = 2'), "hello.cfg:3:13: 'extratime' is 2, outside 0..1");
});

test('max_grant_frames (libxl default 64) and max_event_channels (1023)', () => {
  const { c } = convert('max_grant_frames = 32\nmax_event_channels = 4095');
  assert.deepEqual([c.maxGrantFrames, c.maxEventChannels], [32, 4095]);
  assert.equal(convertError('max_event_channels = 0x20000'), "hello.cfg:3:22: 'max_event_channels' is 131072, outside 1..131071");
  assert.equal(convert('max_event_channels = 131071').c.maxEventChannels, 131071);
  assert.equal(convertError('max_grant_frames = 4097'), "hello.cfg:3:20: 'max_grant_frames' is 4097, outside 1..4096");
});

test('seclabel and init_seclabel are FLASK labels', () => {
  const { c } = convert('seclabel = "system_u:system_r:domU_t"\ninit_seclabel = "system_u:system_r:domU_t_building:s0"');
  assert.deepEqual([c.seclabel, c.initSeclabel], ['system_u:system_r:domU_t', 'system_u:system_r:domU_t_building:s0']);
  assert.equal(convertError('seclabel = "domU_t"'), "hello.cfg:3:12: seclabel 'domU_t' is not a security label (user:role:type)");
});

test('autostart is a boolean number, default 0', () => {
  assert.equal(convert('autostart = 1').c.autostart, true);
  assert.equal(convert('autostart = 0').c.autostart, false);
  assert.equal(convertError('autostart = "yes"'), `hello.cfg:3:13: 'autostart' must be a number, not the string "yes"`);
});

test('exclusive_ms (xenode extension) grants the machine to itself for up to N ms; absent or 0 grants nothing', () => {
  const { c, warnings } = convert('exclusive_ms = 50');
  assert.equal(c.exclusiveMs, 50);
  assert.deepEqual(warnings, []);
  assert.equal(convert('').c.exclusiveMs, undefined);
  assert.equal(convert('exclusive_ms = 0').c.exclusiveMs, undefined);
  const text = serialiseXlCfg(c);
  assert.match(text, /^exclusive_ms = 50$/m);
  assert.deepEqual(toDomainConfig(parseXlCfg(text, 'out.cfg'), { hostCpus: 4, checkFiles: false }), c);
  assert.equal(convertError('exclusive_ms = 60001'), "hello.cfg:3:16: 'exclusive_ms' is 60001, outside 0..60000");
  assert.match(convertError('exclusive_ms = "x"'), /'exclusive_ms' must be a number/);
});

test('disk and vif lists are parsed per entry; errors point at the entry', () => {
  const { c } = convert(`disk = [ '/dev/vg/guest-volume,,hda', '/root/image.iso,,hdc,cdrom' ]\nvif = [ 'bridge=xenbr1', 'mac=00:16:3E:01:02:03' ]`,
    [], { random: () => new Uint8Array([0xff, 0x01, 0x02]) });
  assert.deepEqual(c.disks.map((d) => [d.target, d.vdev, d.devtype, d.access]),
    [['/dev/vg/guest-volume', 'hda', 'disk', 'rw'], ['/root/image.iso', 'hdc', 'cdrom', 'r']]);
  assert.deepEqual(c.vifs.map((v) => [v.mac, v.bridge, v.devid]), [['00:16:3e:7f:01:02', 'xenbr1', 0], ['00:16:3e:01:02:03', 'xenbr0', 1]]);
  assert.equal(convertError(`disk = [ "/img,,xvda",\n  "/img2" ]`), 'hello.cfg:4:3: disk "/img2": no vdev specified');
  assert.equal(convertError(`disk = [ "/a,,xvda", "/b,,xvda" ]`), "hello.cfg:3:22: disk: vdev 'xvda' is already used by the disk at 3:10");
  assert.equal(convertError(`vif = [ "mac=01:00:00:00:00:01" ]`), 'hello.cfg:3:9: vif "mac=01:00:00:00:00:01": mac \'01:00:00:00:00:01\' is a multicast address');
  assert.equal(convertError(`vif = [ "devid=1", "" ]`), 'hello.cfg:3:20: vif: devid 1 is already used');
  assert.equal(convertError(`disk = "/img,,xvda"`), "hello.cfg:3:8: 'disk' must be a list, e.g. disk = [ '...' ]");
  assert.equal(convertError(`disk = [ ["/img,,xvda"] ]`), 'hello.cfg:3:10: disk entries must be strings');
  assert.deepEqual(convert(`vif = [ "model=e1000" ]`).warnings,
    ['hello.cfg:3: vif: model=e1000 selects an emulated NIC, which needs a device model: a PVH guest has none']);
});

test('disks, vifs with their rates, affinity and scheduler parameters are all applied: no warning says otherwise', () => {
  const { warnings } = convert('disk = [ "/img,,xvda" ]\nvif = [ "", "rate=10Mb/s" ]\ncpus = "0"\ncpus_soft = "0"\ncpu_weight = 512\ncap = 50\n', [], { random: () => new Uint8Array(3) });
  assert.deepEqual(warnings, []);
});

test("keys xl's parser reads are recognised: PVH options xenode does not take say why, HVM/PV/Arm ones say so", () => {
  const { warnings } = convert('hap = 1\nnestedhvm = 0\nhap = 0\noos = 1\nbootloader = "pygrub"\nnx = 1\npvshim = 1\nsve = "hw"\nvmtrace_buf_kb = 64\nmsr_relaxed = 1\nclaim_mode = 1\n');
  // nestedhvm = 0 asks for what xenode does: no warning; the later hap replaces the first
  assert.deepEqual(warnings, [
    "hello.cfg:5: 'hap' is not supported by xenode (KVM picks the paging mode: the CPU's nested paging where it has it, shadow paging otherwise); ignored",
    "hello.cfg:6: 'oos' is not supported by xenode (KVM decides how shadowed page tables are kept in sync); ignored",
    "hello.cfg:7: 'bootloader' is not supported by xenode (xenode boots the PVH kernel named by 'kernel' directly); ignored",
    "hello.cfg:8: 'nx' does not apply to PVH guests on xenode; ignored",
    "hello.cfg:9: 'pvshim' does not apply to PVH guests on xenode; ignored",
    "hello.cfg:10: 'sve' is an Arm option; ignored on x86",
    "hello.cfg:11: 'vmtrace_buf_kb' is not supported by xenode yet; ignored",
    "hello.cfg:12: 'msr_relaxed' is not supported by xenode yet; ignored",
    // xl.conf's key, not one xl.cfg has
    "hello.cfg:13: unknown key 'claim_mode' ignored",
  ]);
});

test('keys that do not apply to PVH, are not supported yet, or are unknown are warned about, not refused', () => {
  const { warnings } = convert('vnc = 1\nserial = "pty"\nusb = 1\nvnuma = []\nmax_maptrack_frames = 1024\nfrobnicate = "yes"\n', ['sdl=0']);
  assert.deepEqual(warnings, [
    "hello.cfg:3: 'vnc' does not apply to PVH guests on xenode; ignored",
    "hello.cfg:4: 'serial' does not apply to PVH guests on xenode; ignored",
    "hello.cfg:5: 'usb' does not apply to PVH guests on xenode; ignored",
    "hello.cfg:6: 'vnuma' is not supported by xenode yet; ignored",
    "hello.cfg:7: 'max_maptrack_frames' is not supported by xenode yet; ignored",
    "hello.cfg:8: unknown key 'frobnicate' ignored",
    "<command line>:1: 'sdl' does not apply to PVH guests on xenode; ignored",
  ]);
});

test('wrong types are errors at the value', () => {
  assert.equal(convertError('on_reboot = ["restart"]'), "hello.cfg:3:13: 'on_reboot' must be a single value, not a list");
  assert.equal(convertError('vcpus = "two"'), `hello.cfg:3:9: 'vcpus' must be a number, not the string "two"`);
  assert.equal(convertError('vif = 1'), "hello.cfg:3:7: 'vif' must be a list, e.g. vif = [ '...' ]");
});

test('command-line overrides apply before validation (xl create cfg memory=64)', () => {
  const { c } = convert('memory = 32\n', ['memory=64', 'name="other"']);
  assert.deepEqual([c.memory, c.name], [64, 'other']);
  assert.equal(convertError('', ['memory=0']), "<command line>:1:8: 'memory' is 0, outside 1..1048576");
});

// ---- writing -------------------------------------------------------------

test('serialise then parse gives back the same DomainConfig', () => {
  const full = convert([
    'uuid = "12345678-1234-4234-8234-123456789abc"', 'memory = 64', 'maxmem = 96', 'vcpus = 2', 'maxvcpus = 3',
    'cpus = ["0", "1-2", "all"]', 'cpus_soft = "0-1,3"', 'ramdisk = "initrd"',
    'cmdline = "console=hvc0 msg=\\"hi\\"\\tx\\\\y é"', 'on_crash = "preserve"', 'pool = "pool 1"', 'cpu_weight = 300', 'cap = 0',
    'extratime = 0', 'max_grant_frames = 16', 'max_event_channels = 63', 'seclabel = "u:r:t"', 'init_seclabel = "u:r:b:s0"',
    `disk = [ 'phy:/dev/vg/a,xvda,w', '/root/image.iso,,hdc,cdrom', 'vdev=xvdb, backendtype=qdisk, script=block-x, specification=virtio, direct-io-safe, no-discard, untrusted, backend=dd, target=/x,y=z' ]`,
    `vif = [ 'mac=00:16:3e:00:00:01, bridge=br0, ip=10.0.0.2 fd00::2/64, rate=10Mb/s@20ms, mtu=9000, vifname=vif-a, script=vif-route, gatewaydev=eth0, backend=netdom, vlan=10, type=vif, untrusted', 'devid=7' ]`,
    'autostart = 1',
    'exclusive_ms = 20',
  ].join('\n')).c;
  const minimal = convert('').c;
  for (const c of [full, minimal]) {
    const text = serialiseXlCfg(c);
    const back = toDomainConfig(parseXlCfg(text, 'out.cfg'), { hostCpus: 4, checkFiles: false });
    assert.deepEqual(back, c, text);
  }
});

test('the written text reads as an xl.cfg file', () => {
  const c = convert('disk = [ "/img,,xvda" ]').c;
  const text = serialiseXlCfg(c);
  assert.match(text, /^name = "hello"\ntype = "pvh"\nuuid = "[0-9a-f-]{36}"\nmemory = 32\n/);
  assert.match(text, /\ndisk = \[\n {4}"format=raw, vdev=xvda, access=rw, target=\/img",\n\]\n/);
  assert.ok(text.endsWith('autostart = 0\n'));
});

test('quoted strings escape what the lexer would otherwise read differently', () => {
  for (const s of ['', 'plain', 'q"uote', "it's", 'back\\slash', 'nl\nline', 'tab\t', '\x01\x1f\x7f', 'ünï ✓']) {
    assert.equal(plain(parse(`a = ${quoteXlCfgString(s)}`).get('a')!.value), s);
  }
});

test('cpu sets print as ranges', () => {
  assert.equal(formatCpuSet([0, 1, 2, 3, 5, 7, 8]), '0-3,5,7-8');
  assert.equal(formatCpuSet(null), 'all');
  assert.deepEqual(parseCpuSet(formatCpuSet([1, 3, 4]), 8), [1, 3, 4]);
});

// ---- robustness ----------------------------------------------------------

test('fuzz: random bytes and mutated configs only ever throw XlCfgError', () => {
  const rand = prng(0x5eed);
  const alphabet = 'abcz_.09x=+[],;#"\'\\ \t\n\r-@é\x00\x01';
  const sample = BASE + 'memory = 64\ndisk = [ "/img,,xvda", \'x\' ]\nvif = [ "bridge=br0" ]\ncpus = "0-1,^1"\nextra += "a\\x41"\n';
  const tries = 3000;
  let parsed = 0;
  for (let i = 0; i < tries; i++) {
    let input: string | Uint8Array;
    const mode = i % 3;
    if (mode === 0) {
      input = Uint8Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256));
    } else if (mode === 1) {
      input = Array.from({ length: Math.floor(rand() * 64) }, () => alphabet[Math.floor(rand() * alphabet.length)]).join('');
    } else {
      const chars = [...sample];
      for (let k = 0; k < 3; k++) chars[Math.floor(rand() * chars.length)] = alphabet[Math.floor(rand() * alphabet.length)];
      input = chars.join('');
    }
    try {
      const cfg = parseXlCfg(input, 'fuzz.cfg');
      parsed++;
      toDomainConfig(cfg, { file: cfgFile, hostCpus: 2, warn: () => {} });
    } catch (e) {
      if (!(e instanceof XlCfgError)) assert.fail(`input ${JSON.stringify(typeof input === 'string' ? input : [...input])} threw ${String(e)}`);
    }
  }
  assert.ok(parsed > 0);
});

test('examples/hello.cfg names the hello sample guest relative to itself', () => {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
  const file = path.join(root, 'examples/hello.cfg');
  const warnings: string[] = [];
  const c = toDomainConfig(parseXlCfg(readFileSync(file), file), { file, cwd: '/', checkFiles: false, warn: (w) => warnings.push(w) });
  assert.deepEqual([c.name, c.kernel, c.memory, warnings], ['hello', path.join(root, 'guests/build/hello.elf'), 32, []]);
});
