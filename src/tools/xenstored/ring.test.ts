// The guest ring transport (struct xenstore_domain_interface in a plain buffer).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fixture, raw, RingGuest, type Fixture } from './helpers.js';
import {
  RING_CONNECTION, RING_ERROR, RING_REQ_CONS, RING_REQ_PROD, RING_RSP_CONS, RING_RSP_PROD, RING_SERVER_FEATURES,
  XsType, encodeMessage,
} from './wire.js';

let f: Fixture;
before(async () => {
  f = await fixture();
});
after(async () => {
  await f.close();
});
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

test('INTRODUCE publishes server features and serves the ring', async () => {
  const g = await f.guest(1);
  assert.equal(g.field(RING_SERVER_FEATURES), 7);
  assert.equal(g.field(RING_CONNECTION), 0);
  assert.equal(g.field(RING_ERROR), 0);
  assert.equal(await g.getDomainPath(1), '/local/domain/1');
  assert.ok(g.notifications > 0);
  await f.dom0.release(1);
});

test('messages larger than the ring wrap around in both directions', async () => {
  const g = await f.guest(2);
  await f.dom0.mkdir('/local/domain/2');
  await f.dom0.setPerms('/local/domain/2', ['n2']);
  for (let i = 0; i < 5; i++) {
    const v = Buffer.alloc(1900 + i * 17, 0x30 + i);
    await g.write(`big${i}`, v);
    assert.deepEqual(await g.readBuffer(`big${i}`), v);
  }
  // Many pipelined small requests at once.
  const rs = await Promise.all(Array.from({ length: 300 }, (_, i) => g.read(`big${i % 5}`)));
  assert.equal(rs.length, 300);
  await f.dom0.release(2);
});

test('a guest that signals only a consumed ring (Linux\'s xb_write) gets its answer when it writes a request\'s header and payload apart', async () => {
  const g = await f.guest(6);
  g.linuxSignals = true;
  await f.dom0.mkdir('/local/domain/6');
  await f.dom0.setPerms('/local/domain/6', ['n6']);
  const m = encodeMessage(XsType.WRITE, 77, 0, 'split\0value');
  const answered = new Promise<void>((resolve) => {
    const pump = g.pump.bind(g);
    g.pump = () => {
      pump();
      if (g.messages.some((x) => x.reqId === 77)) resolve();
    };
  });
  g.sendBytes(m.subarray(0, 16)); // signalled: the ring was empty
  await settle();
  g.sendBytes(m.subarray(16)); // not signalled: the header is read but not consumed yet
  await Promise.race([answered, new Promise((_, rej) => setTimeout(() => rej(new Error('no answer to a request whose payload came without an event')), 2000))]);
  assert.equal(await f.dom0.read('/local/domain/6/split'), 'value');
  assert.equal(g.field(RING_REQ_CONS), g.field(RING_REQ_PROD), 'consumed once answered');
  await f.dom0.release(6);
});

test('requests written before INTRODUCE are answered after it', async () => {
  const d = f.d;
  const g = new RingGuest(d, 3);
  // Queue a request in the page before the daemon knows the domain.
  const m = encodeMessage(XsType.GET_DOMAIN_PATH, 9, 0, '3\0');
  g.page.set(m, 0);
  g.view.setUint32(RING_REQ_PROD, m.length, true);
  const reply = new Promise<string>((resolve) => g.once('raw', resolve));
  const origPump = g.pump.bind(g);
  g.pump = () => {
    origPump();
    if (g.messages.length) g.emit('raw', g.messages[0]!.payload.toString('latin1'));
  };
  f.attach(g);
  await f.dom0.introduce(3, 1, 1);
  assert.equal(await reply, '/local/domain/3\0');
  await f.dom0.release(3);
});

test('a bad ring index sets error=RINGIDX and stops only that ring', async () => {
  const bad = await f.guest(4);
  const good = await f.guest(5);
  bad.view.setUint32(RING_REQ_CONS, 0, true);
  bad.view.setUint32(RING_REQ_PROD, 5000, true);
  f.d.ringNotified(4);
  await settle();
  assert.equal(bad.field(RING_ERROR), 2);
  assert.ok(f.logs.some((l) => l.includes('domain 4') && l.includes('bad request ring indexes')));
  assert.equal(await good.getDomainPath(5), '/local/domain/5');
  // A reconnect clears the error and the ring works again.
  bad.requestReconnect();
  await settle();
  assert.equal(bad.field(RING_CONNECTION), 0);
  assert.equal(bad.field(RING_ERROR), 0);
  assert.equal(bad.field(RING_REQ_PROD), 0);
  assert.equal(await bad.getDomainPath(4), '/local/domain/4');
  await f.dom0.release(4);
  await f.dom0.release(5);
});

test('a producer index moved back behind what xenstored already read sets error=RINGIDX', async () => {
  const g = await f.guest(8);
  g.sendBytes(Buffer.alloc(8)); // half a header: read, not consumed
  await settle();
  assert.equal(g.field(RING_REQ_CONS), 0);
  g.view.setUint32(RING_REQ_PROD, 4, true);
  f.d.ringNotified(8);
  await settle();
  assert.equal(g.field(RING_ERROR), 2);
  assert.ok(f.logs.some((l) => l.includes('domain 8') && l.includes('read up to 8')));
  await f.dom0.release(8);
});

test('an oversized request sets error=PROTO and logs', async () => {
  const g = await f.guest(6);
  const h = Buffer.alloc(16);
  h.writeUInt32LE(XsType.READ, 0);
  h.writeUInt32LE(4097, 12);
  g.sendBytes(h);
  await settle();
  assert.equal(g.field(RING_ERROR), 3);
  assert.ok(f.logs.some((l) => l.includes('domain 6') && l.includes('over 4096')));
  assert.ok(await f.dom0.isDomainIntroduced(6));
  await f.dom0.release(6);
});

test('a bad response index is caught too', async () => {
  const g = await f.guest(7);
  g.consuming = false;
  g.view.setUint32(RING_RSP_CONS, 0, true);
  g.view.setUint32(RING_RSP_PROD, 3000, true);
  void g.read('x').catch(() => {});
  await settle();
  assert.equal(g.field(RING_ERROR), 2);
  await f.dom0.release(7);
});

test('reconnect drops watches and transactions of the guest', async () => {
  const g = await f.guest(8);
  await g.watch('/tool', 'w');
  const tx = await g.transactionStart();
  g.requestReconnect();
  await settle();
  assert.equal(await raw(g, XsType.UNWATCH, '/tool\0w\0'), 'ERROR ENOENT|');
  assert.equal(await raw(g, XsType.TRANSACTION_END, 'F\0', tx), 'ERROR ENOENT|');
  await f.dom0.release(8);
});

test('watch events reach a guest through its ring', async () => {
  const g = await f.guest(9);
  await f.dom0.mkdir('/local/domain/9');
  await f.dom0.setPerms('/local/domain/9', ['n9']);
  const first = g.waitWatch('ctl', 'control/shutdown');
  await g.watch('control/shutdown', 'ctl');
  await first;
  const ev = g.waitWatch('ctl', 'control/shutdown');
  await f.dom0.write('/local/domain/9/control/shutdown', 'poweroff');
  await ev;
  assert.equal(await g.read('control/shutdown'), 'poweroff');
  await f.dom0.release(9);
});

test('re-INTRODUCE keeps the connection', async () => {
  const g = await f.guest(10);
  await g.watch('/tool', 'keep');
  await f.dom0.introduce(10, 1, 2);
  assert.equal(await raw(g, XsType.WATCH, '/tool\0keep\0'), 'ERROR EEXIST|');
  await f.dom0.release(10);
  assert.equal(f.d.ringNotified(10), undefined);
});

test('RING_RSP_PROD only moves forward by what was written', async () => {
  const g = await f.guest(11);
  const before = g.field(RING_RSP_PROD);
  await g.getDomainPath(11);
  const after = g.field(RING_RSP_PROD);
  assert.equal((after - before) >>> 0, 16 + '/local/domain/11\0'.length);
  await f.dom0.release(11);
});

test('a failing unmap hook still releases the domain: its nodes go and @releaseDomain fires', async () => {
  const h = await fixture({ hooks: { unmapDomainRing: () => { throw new Error('port already closed'); } } });
  try {
    await h.guest(12);
    await h.dom0.mkdir('/local/domain/12');
    await h.dom0.setPerms('/local/domain/12', ['n12']);
    let events = 0;
    h.dom0.on('watch', () => events++);
    await h.dom0.watch('@releaseDomain/12', 'rel');
    await settle();
    assert.equal(events, 1); // the event every new watch fires
    await h.dom0.release(12);
    await settle();
    assert.equal(events, 2);
    assert.equal(await h.dom0.tryRead('/local/domain/12'), undefined);
    assert.ok(h.logs.some((l) => l.includes('unmapping its ring failed')));
  } finally {
    await h.close();
  }
});
