// public/event_channel.h: EVTCHNOP_* numbers, the sub-op argument layouts
// (the same in both ABIs) and the FIFO ABI (event words, control block).

import { struct, type FieldSpec, type Fields } from './layout.js';

export const EVTCHNOP = {
  bind_interdomain: 0, bind_virq: 1, bind_pirq: 2, close: 3, send: 4, status: 5, alloc_unbound: 6, bind_ipi: 7,
  bind_vcpu: 8, unmask: 9, reset: 10, init_control: 11, expand_array: 12, set_priority: 13, reset_cont: 14,
} as const;

export const EvtchnAllocUnbound = struct('evtchn_alloc_unbound', 8, { dom: [0, 'u16'], remote_dom: [2, 'u16'], port: [4, 'u32'] });
export const EvtchnBindInterdomain = struct('evtchn_bind_interdomain', 12, { remote_dom: [0, 'u16'], remote_port: [4, 'u32'], local_port: [8, 'u32'] });
export const EvtchnBindVirq = struct('evtchn_bind_virq', 12, { virq: [0, 'u32'], vcpu: [4, 'u32'], port: [8, 'u32'] });
export const EvtchnBindIpi = struct('evtchn_bind_ipi', 8, { vcpu: [0, 'u32'], port: [4, 'u32'] });
export const EvtchnPort = struct('evtchn_port', 4, { port: [0, 'u32'] }); // close, send, unmask
export const EvtchnStatus = struct('evtchn_status', 24, {
  dom: [0, 'u16'], port: [4, 'u32'], status: [8, 'u32'], vcpu: [12, 'u32'],
  u_dom: [16, 'u16'], u_port: [20, 'u32'], u_virq: [16, 'u32'],
});
export const EvtchnBindVcpu = struct('evtchn_bind_vcpu', 8, { port: [0, 'u32'], vcpu: [4, 'u32'] });
export const EvtchnReset = struct('evtchn_reset', 2, { dom: [0, 'u16'] });
/** struct evtchn_init_control: control_gfn, offset, vcpu IN; link_bits OUT. */
export const EvtchnInitControl = struct('evtchn_init_control', 24, { control_gfn: [0, 'u64'], offset: [8, 'u32'], vcpu: [12, 'u32'], link_bits: [16, 'u8'] });
/** struct evtchn_expand_array: array_gfn IN. */
export const EvtchnExpandArray = struct('evtchn_expand_array', 8, { array_gfn: [0, 'u64'] });
/** struct evtchn_set_priority: port, priority IN. */
export const EvtchnSetPriority = struct('evtchn_set_priority', 8, { port: [0, 'u32'], priority: [4, 'u32'] });

/** EVTCHN_2L_NR_CHANNELS for each shared-info ABI (xen_ulong_t bits squared). */
export const EVTCHN_2L_NR_CHANNELS = { x64: 64 * 64, x32: 32 * 32 } as const;

// --- FIFO ABI -------------------------------------------------------------

/** Priorities: 0 is the highest, 15 the lowest (EVTCHN_FIFO_PRIORITY_*). */
export const EVTCHN_FIFO_PRIORITY_MAX = 0;
export const EVTCHN_FIFO_PRIORITY_DEFAULT = 7;
export const EVTCHN_FIFO_PRIORITY_MIN = 15;
export const EVTCHN_FIFO_MAX_QUEUES = EVTCHN_FIFO_PRIORITY_MIN + 1;

/** Bit numbers in an event word (event_word_t, u32). */
export const EVTCHN_FIFO_PENDING = 31;
export const EVTCHN_FIFO_MASKED = 30;
export const EVTCHN_FIFO_LINKED = 29;
export const EVTCHN_FIFO_BUSY = 28;
export const EVTCHN_FIFO_LINK_BITS = 17;
export const EVTCHN_FIFO_LINK_MASK = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
export const EVTCHN_FIFO_NR_CHANNELS = 1 << EVTCHN_FIFO_LINK_BITS;
/** Event words per event array page (PAGE_SIZE / sizeof(event_word_t)). */
export const EVTCHN_FIFO_EVENT_WORDS_PER_PAGE = 4096 / 4;

/** struct evtchn_fifo_control_block: READY bits, then one HEAD port per priority. */
export const EvtchnFifoControlBlock = struct<Fields>('evtchn_fifo_control_block', 72, {
  ready: [0, 'u32'],
  ...Object.fromEntries(Array.from({ length: EVTCHN_FIFO_MAX_QUEUES }, (_, i): [string, FieldSpec] => [`head${i}`, [8 + 4 * i, 'u32']])),
});
