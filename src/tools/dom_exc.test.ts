// VIRQ_DOM_EXC: the control domain hears of every domain that shuts down or
// is destroyed through its event channel, as xenstored and the toolstack do on
// Xen (this is what @releaseDomain hangs on).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsKvm } from '../kvm/testing.js';
import { until } from '../testing/wait.js';
import { Toolstack } from './toolstack.js';
import { VIRQ } from '../hv/evtchn_core.js';
import { DOMSTATE } from '../hv/shared.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const guest = (name: string) => readFileSync(path.join(root, 'guests/build', `${name}.elf`));

test('VIRQ_DOM_EXC fires when a domain powers off and again when it is destroyed', needsKvm(), async () => {
  const ts = await Toolstack.start({ pcpus: 1, log: () => {} });
  try {
    const seen: string[] = [];
    let fired = 0;
    const port = ts.hv.bindDom0Virq(VIRQ.DOM_EXC, () => {
      fired++;
      // As a toolstack does: the VIRQ says "look", the domain list says what changed.
      for (const d of ts.hv.list()) if (d.state === DOMSTATE.shutdown) seen.push(`${d.domid}:shutdown`);
    });
    assert.ok(port > 0);
    const d = await ts.create({ name: 'hello', kernel: guest('hello'), memoryMiB: 4, vcpus: 1 }, () => {});
    await until('VIRQ_DOM_EXC after the guest powered off', () => fired > 0);
    assert.deepEqual(seen, [`${d.domid}:shutdown`]);
    const before = fired;
    await ts.destroy(d.domid);
    await until('VIRQ_DOM_EXC after destroy', () => fired > before);
    assert.equal(ts.hv.info(d.domid), null);
    assert.throws(() => ts.hv.bindDom0Virq(VIRQ.DOM_EXC, () => {}), /already bound/);
  } finally {
    await ts.shutdown();
  }
});
