// vm_assist (public/xen.h).

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL } from './abi/xen.js';
import { EINVAL, XenError } from './errno.js';

export const VMASST_CMD_enable = 0;
export const VMASST_CMD_disable = 1;
/** The only assist an HVM/PVH guest may use: runstate_update_flag (5). */
export const VMASST_TYPE_runstate_update_flag = 5;
const HVM_VM_ASSIST_MASK = 1 << VMASST_TYPE_runstate_update_flag;

function vmAssist(h: Hcall): number {
  const cmd = h.uint(0);
  const type = h.uint(1);
  if (type >= 32 || !(HVM_VM_ASSIST_MASK & (1 << type))) throw new XenError(EINVAL);
  if (cmd === VMASST_CMD_enable) h.dom.vmAssist |= 1 << type;
  else if (cmd === VMASST_CMD_disable) h.dom.vmAssist &= ~(1 << type);
  else throw new XenError(EINVAL);
  return 0;
}

registerHypercall(HYPERCALL.vm_assist, vmAssist);