// The libxl domain skeleton and a PV device handshake, end to end: the
// toolstack builds the tree in one transaction, introduces the guest, and the
// guest (over its ring) does what Linux/Mini-OS/GRUB frontends do.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fixture, raw, type Fixture, type RingGuest } from './helpers.js';
import { XsType } from './wire.js';

const D = 5;
const H = `/local/domain/${D}`;
const UUID = '00000000-0000-4000-8000-000000000005';
let f: Fixture;
let g: RingGuest;

before(async () => {
  f = await fixture();
  const x = f.dom0;
  const ro = ['n0', `r${D}`];
  const rw = [`n${D}`];
  await x.transaction(async (t) => {
    await x.mkdir(H, t);
    await x.setPerms(H, ro, t);
    await x.mkdir(`/vm/${UUID}`, t);
    await x.setPerms(`/vm/${UUID}`, ro, t);
    await x.write(`/vm/${UUID}/uuid`, UUID, t);
    await x.write(`/vm/${UUID}/name`, 'guest', t);
    await x.mkdir(`/libxl/${D}`, t);
    await x.setPerms(`/libxl/${D}`, ['n0'], t);
    await x.write(`${H}/vm`, `/vm/${UUID}`, t);
    await x.write(`${H}/name`, 'guest', t);
    await x.write(`${H}/domid`, String(D), t);
    await x.write(`${H}/cpu/0/availability`, 'online', t);
    await x.write(`${H}/memory/static-max`, '131072', t);
    await x.write(`${H}/memory/target`, '131072', t);
    await x.mkdir(`${H}/device`, t);
    await x.mkdir(`${H}/device/suspend/event-channel`, t);
    await x.setPerms(`${H}/device/suspend/event-channel`, rw, t);
    await x.mkdir(`${H}/control`, t);
    for (const k of ['shutdown', 'feature-poweroff', 'feature-reboot', 'feature-suspend', 'sysrq']) {
      await x.mkdir(`${H}/control/${k}`, t);
      await x.setPerms(`${H}/control/${k}`, rw, t);
    }
    await x.write(`${H}/control/platform-feature-multiprocessor-suspend`, '1', t);
    await x.write(`${H}/control/platform-feature-xs_reset_watches`, '1', t);
    for (const k of ['data', 'drivers', 'feature', 'attr', 'error']) {
      await x.mkdir(`${H}/${k}`, t);
      await x.setPerms(`${H}/${k}`, rw, t);
    }
    await x.write(`${H}/store/port`, '1', t);
    await x.write(`${H}/store/ring-ref`, '1044476', t);
  });
  g = await f.guest(D);
});
after(async () => {
  await f.close();
});

test('the guest reads its identity with relative paths and cannot alter it', async () => {
  assert.equal(await g.read('domid'), String(D));
  assert.equal(await g.read('name'), 'guest');
  assert.equal(await g.read(`/vm/${UUID}/name`), 'guest');
  assert.equal(await raw(g, XsType.WRITE, 'name\0evil'), 'ERROR EACCES|');
  assert.equal(await raw(g, XsType.READ, `/libxl/${D}\0`), 'ERROR EACCES|');
  assert.equal(await raw(g, XsType.WRITE, 'memory/target\0\x31'), 'ERROR EACCES|');
  await g.write('data/updated', '1');
  await g.write('control/feature-poweroff', '1');
});

test('GRUB-style DIRECTORY of device/vbd before any disk exists', async () => {
  assert.equal(await raw(g, XsType.DIRECTORY, 'device/vbd\0'), 'ERROR ENOENT|');
});

test('shutdown control: toolstack writes poweroff, guest acknowledges with ""', async () => {
  const first = g.waitWatch('ctl', 'control/shutdown');
  await g.watch('control/shutdown', 'ctl');
  await first;
  const ev = g.waitWatch('ctl', 'control/shutdown');
  await f.dom0.write(`${H}/control/shutdown`, 'poweroff');
  await ev;
  assert.equal(await g.read('control/shutdown'), 'poweroff');
  const acked = f.dom0.waitWatch('tool', `${H}/control/shutdown`);
  await f.dom0.watch(`${H}/control/shutdown`, 'tool');
  await acked; // the registration event
  const cleared = f.dom0.waitWatch('tool', `${H}/control/shutdown`);
  await g.write('control/shutdown', '');
  await cleared;
  assert.equal(await f.dom0.read(`${H}/control/shutdown`), '');
  await f.dom0.unwatch(`${H}/control/shutdown`, 'tool');
});

test('a vbd handshake between a dom0 backend and the guest frontend', async () => {
  const fe = `${H}/device/vbd/51712`;
  const be = `/local/domain/0/backend/vbd/${D}/51712`;
  await f.dom0.transaction(async (t) => {
    await f.dom0.write(`${fe}/backend`, be, t);
    await f.dom0.write(`${fe}/backend-id`, '0', t);
    await f.dom0.write(`${fe}/state`, '1', t);
    await f.dom0.setPerms(fe, [`n${D}`, 'r0'], t);
    await f.dom0.setPerms(`${fe}/backend`, [`n${D}`, 'r0'], t);
    await f.dom0.setPerms(`${fe}/backend-id`, [`n${D}`, 'r0'], t);
    await f.dom0.setPerms(`${fe}/state`, [`n${D}`, 'r0'], t);
    await f.dom0.write(`${be}/frontend`, fe, t);
    await f.dom0.write(`${be}/frontend-id`, String(D), t);
    await f.dom0.write(`${be}/online`, '1', t);
    await f.dom0.write(`${be}/state`, '1', t);
    await f.dom0.setPerms(be, ['n0', `r${D}`], t);
    for (const k of ['frontend', 'frontend-id', 'online', 'state']) await f.dom0.setPerms(`${be}/${k}`, ['n0', `r${D}`], t);
  });
  assert.deepEqual(await g.directory('device/vbd'), ['51712']);
  // Backend publishes features and goes to InitWait.
  await f.dom0.write(`${be}/sectors`, '2048');
  await f.dom0.write(`${be}/state`, '2');
  // Frontend reads the backend, writes its ring details in a transaction, goes to Initialised.
  assert.equal(await g.read(`${be}/state`), '2');
  assert.equal(await g.read(`${be}/sectors`), '2048');
  const seen = f.dom0.waitWatch('fe', `${fe}/state`);
  await f.dom0.watch(`${fe}/state`, 'fe');
  await seen;
  const initialised = f.dom0.waitWatch('fe', `${fe}/state`);
  await g.transaction(async (t) => {
    await g.write('device/vbd/51712/ring-ref', '8', t);
    await g.write('device/vbd/51712/event-channel', '4', t);
    await g.write('device/vbd/51712/protocol', 'x86_64-abi', t);
    await g.write('device/vbd/51712/state', '3', t);
  });
  await initialised;
  assert.equal(await f.dom0.read(`${fe}/ring-ref`), '8');
  assert.deepEqual(await f.dom0.getPerms(`${fe}/ring-ref`), [`n${D}`, 'r0']);
  await f.dom0.write(`${be}/state`, '4');
  await g.write('device/vbd/51712/state', '4');
  assert.equal(await raw(g, XsType.WRITE, `${be}/state\0\x35`), 'ERROR EACCES|');
});

test('domain death and release: @releaseDomain fires and the guest\'s own nodes go', async () => {
  const registered = f.dom0.waitWatch('rel', '@releaseDomain');
  await f.dom0.watch('@releaseDomain', 'rel');
  await registered;
  const died = f.dom0.waitWatch('rel', '@releaseDomain');
  f.d.domainDied(D);
  await died;
  await f.dom0.release(D);
  // Guest-owned nodes (ring-ref etc.) are gone; the dom0-owned skeleton stays for libxl to remove.
  assert.equal(await f.dom0.tryRead(`${H}/device/vbd/51712`), undefined);
  assert.equal(await f.dom0.read(`${H}/name`), 'guest');
  await f.dom0.rm(H);
  assert.deepEqual(f.d.store.check(), []);
  assert.equal(f.d.store.accounting(D).nodes, 0);
});
