// The VM pool's helper thread (vm_pool.ts): makes prepared VMs on request and
// hands their fds to the main thread. The fds outlive this thread's Vm
// objects: release() forgets them without closing.

import { parentPort, workerData } from 'node:worker_threads';
import { Kvm } from './kvm.js';
import { prepareVm, type HelperToPool, type PoolToHelper, type VmRecipe } from './vm_pool.js';

const port = parentPort!;
const recipe = workerData as VmRecipe;
const kvm = Kvm.open();

port.on('message', (m: PoolToHelper) => {
  if (m.type === 'stop') {
    kvm.close();
    port.close();
    return;
  }
  for (let i = 0; i < m.n; i++) {
    try {
      const vm = prepareVm(kvm, recipe);
      vm.release();
      port.postMessage({ type: 'made', fd: vm.fd } satisfies HelperToPool);
    } catch (e) {
      port.postMessage({ type: 'failed', error: e instanceof Error ? e.message : String(e) } satisfies HelperToPool);
    }
  }
});
