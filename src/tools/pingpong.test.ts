// The pingpong pair on /dev/kvm through the toolstack: two domains rendezvous
// through xenstore like a frontend and a backend (one publishes an unbound
// port readable by the other, which binds to it) and bounce 1000 events over
// the interdomain channel, each side sleeping until the upcall.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsKvm } from '../kvm/testing.js';
import { Toolstack } from './toolstack.js';
import { runPingPong } from '../testing/pingpong.js';

for (const wait of ['hlt', 'poll']) {
  test(`two domains bounce 1000 events over an interdomain channel and power off (wait=${wait})`, needsKvm(), async () => {
    const ts = await Toolstack.start({ pcpus: 2, log: () => {} });
    try {
      const r = await runPingPong(ts, { n: 1000, wait });
      assert.match(r.pong.output, /pingpong: pong d\d+ port \d+ published for d\d+/);
      assert.match(r.ping.output, new RegExp(`pingpong: ping d${r.ping.domid} bound port \\d+ to d${r.pong.domid} port \\d+: 0`));
      assert.match(r.ping.output, /pingpong: ping done sent=1000 received=1000/, r.ping.output);
      assert.match(r.pong.output, /pingpong: pong done sent=1000 received=1000/, r.pong.output);
      assert.ok(r.rtt, 'ping printed its round-trip figures');
      assert.equal(r.rtt.n, 1000);
      assert.ok(r.rtt.min! > 0 && r.rtt.min! <= r.rtt.median! && r.rtt.median! <= r.rtt.max!, JSON.stringify(r.rtt));
      assert.notEqual(r.pcpus.ping, r.pcpus.pong, `with 2 pCPUs the pair runs on different workers (${JSON.stringify(r.pcpus)})`);
      assert.equal(r.ping.reason, 0, 'ping powered off');
      assert.equal(r.pong.reason, 0, 'pong powered off');
    } finally {
      await ts.shutdown();
    }
  });
}

test('the port pong publishes is readable by its peer only (owner pong, read for ping)', needsKvm(), async () => {
  const ts = await Toolstack.start({ pcpus: 1, log: () => {} });
  try {
    let perms: string[] = [];
    let pongId = -1;
    // Read the node's ACL while the pair runs (pong's tree is removed when it is destroyed).
    const onConsole = (domid: number, _src: string, s: string) => {
      if (s.includes('published for')) pongId = domid;
    };
    ts.hv.on('console', onConsole);
    const poll = setInterval(() => {
      if (pongId >= 0 && perms.length === 0) ts.client.getPerms(`/local/domain/${pongId}/data/port`).then((p) => { perms = p; }, () => {});
    }, 1);
    const r = await runPingPong(ts, { n: 3000 });
    clearInterval(poll);
    ts.hv.off('console', onConsole);
    assert.equal(r.ping.reason, 0);
    assert.deepEqual(perms, [`n${r.pong.domid}`, `r${r.ping.domid}`]);
  } finally {
    await ts.shutdown();
  }
});
