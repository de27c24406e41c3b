// The physmap (a PVH domain's p2m) without KVM: its layout, mapping frames
// into holes and over RAM, moving and unmapping frames, the populate pool,
// and the KVM memory slots it mirrors itself into, checked against a fake VM
// and a reference model over random operation sequences.

import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';

import { P2M_MIRROR_PAGES, Physmap, type PhysmapLayout } from './physmap.js';
import { FOUR_GIB as GIB4, MMIO_HOLE_START, SPECIAL_PAGES_START_PFN as SPECIAL_PFN_BASE, NR_SPECIAL_PAGES as SPECIAL_PAGES } from './x86/e820.js';
import type { Vm } from '../kvm/kvm.js';
import { ENOMEM, XenError } from './errno.js';
import { prng as rng } from '../testing/prng.js';

const PAGE = 4096;
const HOST_BASE = 0x7f00_0000_0000n;

interface Slot {
  gpa: number;
  size: number;
  host: bigint;
}

/** Records KVM_SET_USER_MEMORY_REGION as KVM would apply it, refusing what KVM refuses. */
class FakeVm {
  readonly slots = new Map<number, Slot>();
  calls = 0;
  setUserMemoryRegion(slot: number, gpa: number, size: number, host: bigint): void {
    this.calls++;
    if (size === 0) {
      assert.ok(this.slots.has(slot), `delete of unused slot ${slot}`);
      this.slots.delete(slot);
      return;
    }
    assert.ok(!this.slots.has(slot), `slot ${slot} reused without being deleted first`);
    assert.equal(gpa % PAGE, 0);
    assert.equal(size % PAGE, 0);
    assert.equal(host % BigInt(PAGE), 0n);
    for (const [id, s] of this.slots) {
      assert.ok(gpa + size <= s.gpa || s.gpa + s.size <= gpa, `slot ${slot} [${gpa.toString(16)}+${size.toString(16)}) overlaps slot ${id}`);
    }
    this.slots.set(slot, { gpa, size, host });
  }
  deleteMemoryRegion(slot: number): void {
    this.setUserMemoryRegion(slot, 0, 0, 0n);
  }
  /** The host page KVM would use for `gfn` (or -1). */
  hostPageOf(gfn: number): number {
    for (const s of this.slots.values()) {
      const gpa = gfn * PAGE;
      if (gpa >= s.gpa && gpa < s.gpa + s.size) return Number((s.host - HOST_BASE) / BigInt(PAGE)) + (gpa - s.gpa) / PAGE;
    }
    return -1;
  }
  mappedPages(): number {
    let n = 0;
    for (const s of this.slots.values()) n += s.size / PAGE;
    return n;
  }
}

function attached(layout: PhysmapLayout, coalesce = false): { pm: Physmap; vm: FakeVm } {
  const pm = new Physmap(layout);
  const vm = new FakeVm();
  pm.attach(vm as unknown as Vm, HOST_BASE, Infinity, coalesce);
  return { pm, vm };
}

/** Every slot matches the physmap's truth and covers exactly the mapped GFNs. */
function checkSlots(pm: Physmap, vm: FakeVm, model?: Map<number, number>): void {
  let mapped = 0;
  for (const s of pm.segments()) {
    mapped += s.count;
    const slot = vm.slots.get(s.slot);
    assert.ok(slot, `segment at gfn ${s.gfn.toString(16)} has no slot`);
    assert.deepEqual(slot, { gpa: s.gfn * PAGE, size: s.count * PAGE, host: HOST_BASE + BigInt(s.hostPage * PAGE) });
  }
  assert.equal(vm.slots.size, pm.segments().length, 'no stale slots');
  assert.equal(vm.mappedPages(), mapped);
  if (model) {
    assert.equal(mapped, model.size, 'slots cover exactly the mapped GFNs');
    for (const [gfn, hp] of model) assert.equal(vm.hostPageOf(gfn), hp, `KVM view of gfn ${gfn.toString(16)}`);
  }
}

const small: PhysmapLayout = { ramPages: 64, maxGrantFrames: 4, poolPages: 8 };

describe('physmap: layout', () => {
  test('small domain: low RAM from 0, Xen frames and specials after RAM in the memfd', () => {
    const pm = new Physmap(small);
    assert.equal(pm.lowRamPages, 64);
    assert.equal(pm.highRamPages, 0);
    assert.equal(pm.sharedInfoPage, 64);
    assert.equal(pm.grantBase, 65);
    assert.equal(pm.specialBase, 69);
    assert.equal(pm.poolBase, 69 + SPECIAL_PAGES);
    // then the pool, one v2 status frame (4 grant frames of 256 entries), the grant table's own pages (header, 8 of active entries, 1 of pin bits), the mirror
    assert.equal(pm.statusBase, 69 + SPECIAL_PAGES + 8);
    assert.equal(pm.grantPrivateBase, pm.statusBase + 1);
    assert.equal(pm.pinBitmapBase, pm.grantPrivateBase + 9);
    assert.equal(pm.mirrorBase, pm.pinBitmapBase + 1);
    assert.equal(pm.totalPages, pm.mirrorBase + P2M_MIRROR_PAGES);
    assert.equal(pm.bytes, pm.totalPages * PAGE);
    assert.deepEqual(pm.segments().map((s) => [s.gfn, s.count, s.hostPage]), [
      [0, 64, 0],
      [SPECIAL_PFN_BASE, SPECIAL_PAGES, pm.specialBase],
    ]);
    assert.equal(SPECIAL_PFN_BASE, 0xfeff8);
    assert.equal(SPECIAL_PFN_BASE + SPECIAL_PAGES - 1, 0xfefff);
    assert.equal(pm.hostPageOf(0), 0);
    assert.equal(pm.hostPageOf(63), 63);
    assert.equal(pm.hostPageOf(64), -1);
    for (let i = 0; i < SPECIAL_PAGES; i++) assert.equal(pm.hostPageOf(0xfeff8 + i), pm.specialBase + i);
    assert.equal(pm.hostPageOf(0xfeff7), -1);
    assert.equal(pm.hostPageOf(0xff000), -1);
    assert.equal(pm.gfnOfHostPage(pm.sharedInfoPage), -1, 'shared_info is not mapped until the guest asks');
  });

  test('ACPI pages: after the specials in the memfd, mapped at GFN 0xFC000, their own kind', () => {
    const pm = new Physmap({ ...small, acpiPages: 2 });
    assert.equal(pm.acpiBase, pm.specialBase + SPECIAL_PAGES);
    assert.equal(pm.poolBase, pm.acpiBase + 2);
    assert.deepEqual(pm.segments().map((s) => [s.gfn, s.count, s.hostPage]), [
      [0, 64, 0],
      [0xfc000, 2, pm.acpiBase],
      [SPECIAL_PFN_BASE, SPECIAL_PAGES, pm.specialBase],
    ]);
    assert.equal(pm.kindOfHostPage(pm.acpiBase + 1), 'acpi');
    assert.equal(pm.kindOfHostPage(pm.poolBase), 'pool');
    assert.equal(pm.hostPageOf(0xfc002), -1);
    assert.throws(() => new Physmap({ ...small, acpiPages: -1 }), RangeError);
  });

  test('large domain: RAM beyond the MMIO hole continues at 4 GiB', () => {
    const lowMax = MMIO_HOLE_START / PAGE;
    const pm = new Physmap({ ramPages: lowMax + 100, maxGrantFrames: 32, poolPages: 0 });
    assert.equal(pm.lowRamPages, lowMax);
    assert.equal(pm.highRamPages, 100);
    assert.deepEqual(pm.segments().map((s) => [s.gfn, s.count, s.hostPage]), [
      [0, lowMax, 0],
      [SPECIAL_PFN_BASE, SPECIAL_PAGES, pm.specialBase],
      [GIB4 / PAGE, 100, lowMax],
    ]);
    assert.equal(pm.hostOffsetOf(MMIO_HOLE_START - 1), MMIO_HOLE_START - 1);
    assert.equal(pm.hostOffsetOf(MMIO_HOLE_START), -1);
    assert.equal(pm.hostOffsetOf(GIB4 + 7), lowMax * PAGE + 7);
    assert.equal(pm.hostOffsetOf(GIB4 + 100 * PAGE), -1);
    assert.equal(pm.kindOfHostPage(lowMax + 99), 'ram');
    assert.equal(pm.kindOfHostPage(lowMax + 100), 'shared_info');
  });

  test('exactly the low-RAM maximum leaves nothing above 4 GiB', () => {
    const lowMax = MMIO_HOLE_START / PAGE;
    const pm = new Physmap({ ramPages: lowMax, maxGrantFrames: 1, poolPages: 0 });
    assert.equal(pm.highRamPages, 0);
    assert.equal(pm.segments().length, 2);
  });

  test('hostOffsetOf keeps the offset within the page; kinds of host pages', () => {
    const pm = new Physmap(small);
    assert.equal(pm.hostOffsetOf(0x1234), 0x1234);
    assert.equal(pm.hostOffsetOf(63 * PAGE + 4095), 63 * PAGE + 4095);
    assert.equal(pm.hostOffsetOf(64 * PAGE), -1);
    assert.equal(pm.hostOffsetOf(0xfeffc000 + 5), (pm.specialBase + 4) * PAGE + 5);
    assert.equal(pm.kindOfHostPage(0), 'ram');
    assert.equal(pm.kindOfHostPage(63), 'ram');
    assert.equal(pm.kindOfHostPage(pm.sharedInfoPage), 'shared_info');
    assert.equal(pm.kindOfHostPage(pm.grantBase), 'grant');
    assert.equal(pm.kindOfHostPage(pm.grantBase + 3), 'grant');
    assert.equal(pm.kindOfHostPage(pm.specialBase), 'special');
    assert.equal(pm.kindOfHostPage(pm.poolBase - 1), 'special');
    assert.equal(pm.kindOfHostPage(pm.poolBase), 'pool');
  });
});

describe('physmap: mapping frames', () => {
  test('into a hole: nothing displaced, one new slot', () => {
    const { pm, vm } = attached(small);
    assert.equal(pm.map(0x80000, pm.sharedInfoPage), -1);
    assert.equal(pm.hostPageOf(0x80000), pm.sharedInfoPage);
    assert.equal(pm.gfnOfHostPage(pm.sharedInfoPage), 0x80000);
    assert.equal(pm.hostOffsetOf(0x80000 * PAGE + 8), pm.sharedInfoPage * PAGE + 8);
    checkSlots(pm, vm);
    assert.equal(vm.slots.size, 3);
  });

  test('over RAM: the RAM page is displaced, its neighbours stay mapped', () => {
    const { pm, vm } = attached(small);
    assert.equal(pm.map(10, pm.sharedInfoPage), 10);
    assert.equal(pm.hostPageOf(9), 9);
    assert.equal(pm.hostPageOf(10), pm.sharedInfoPage);
    assert.equal(pm.hostPageOf(11), 11);
    assert.equal(pm.hostPageOf(63), 63);
    assert.equal(pm.gfnOfHostPage(10), -1, 'the displaced RAM page is not mapped anywhere');
    checkSlots(pm, vm);
    // at the edges of a segment
    assert.equal(pm.map(0, pm.grantBase), 0);
    assert.equal(pm.map(63, pm.grantBase + 1), 63);
    assert.equal(pm.hostPageOf(1), 1);
    assert.equal(pm.hostPageOf(62), 62);
    checkSlots(pm, vm);
  });

  test('moving a frame: it leaves its old GFN (which becomes a hole)', () => {
    const { pm, vm } = attached(small);
    pm.map(10, pm.sharedInfoPage);
    assert.equal(pm.map(0x90000, pm.sharedInfoPage), -1);
    assert.equal(pm.hostPageOf(10), -1, 'old GFN is a hole (the displaced RAM does not come back)');
    assert.equal(pm.hostPageOf(0x90000), pm.sharedInfoPage);
    // moving a RAM page
    assert.equal(pm.map(0x90001, 5), -1);
    assert.equal(pm.hostPageOf(5), -1);
    assert.equal(pm.hostPageOf(0x90001), 5);
    checkSlots(pm, vm);
  });

  test('mapping a frame where it already is changes nothing', () => {
    const { pm, vm } = attached(small);
    pm.map(0x80000, pm.sharedInfoPage);
    const calls = vm.calls;
    assert.equal(pm.map(0x80000, pm.sharedInfoPage), -1);
    assert.equal(pm.map(7, 7), -1);
    assert.equal(vm.calls, calls, 'no slot churn');
    assert.equal(pm.hostPageOf(7), 7);
  });

  test('over a special page', () => {
    const { pm, vm } = attached(small);
    assert.equal(pm.map(0xfeffa, pm.sharedInfoPage), pm.specialBase + 2);
    assert.equal(pm.hostPageOf(0xfeff9), pm.specialBase + 1);
    assert.equal(pm.hostPageOf(0xfeffb), pm.specialBase + 3);
    checkSlots(pm, vm);
  });

  test('unmap: the GFN becomes a hole; unmapping a hole is -1', () => {
    const { pm, vm } = attached(small);
    assert.equal(pm.unmap(20), 20);
    assert.equal(pm.hostPageOf(20), -1);
    assert.equal(pm.hostOffsetOf(20 * PAGE), -1);
    assert.equal(pm.hostPageOf(19), 19);
    assert.equal(pm.hostPageOf(21), 21);
    assert.equal(pm.unmap(20), -1);
    assert.equal(pm.unmap(0x12345), -1);
    checkSlots(pm, vm);
    // a page mapped later into the hole
    assert.equal(pm.map(20, pm.poolBase), -1);
    assert.equal(pm.hostPageOf(20), pm.poolBase);
    checkSlots(pm, vm);
  });

  test('lookups after a change never use a stale cached segment', () => {
    const pm = new Physmap(small);
    assert.equal(pm.hostPageOf(30), 30); // caches the RAM segment
    pm.map(30, pm.sharedInfoPage);
    assert.equal(pm.hostPageOf(30), pm.sharedInfoPage);
    assert.equal(pm.hostPageOf(31), 31);
    pm.unmap(31);
    assert.equal(pm.hostPageOf(31), -1);
  });

  test('slots installed before attach are mirrored on attach', () => {
    const pm = new Physmap(small);
    pm.map(10, pm.sharedInfoPage);
    const vm = new FakeVm();
    pm.attach(vm as unknown as Vm, HOST_BASE);
    checkSlots(pm, vm);
    assert.equal(vm.slots.size, 4);
  });
});

describe('physmap: populate pool', () => {
  test('hands out each pool page once, -1 when exhausted, takes pages back', () => {
    const pm = new Physmap(small);
    const got: number[] = [];
    for (let i = 0; i < 8; i++) got.push(pm.allocPoolPage());
    assert.deepEqual([...got].sort((a, b) => a - b), Array.from({ length: 8 }, (_, i) => pm.poolBase + i));
    assert.equal(pm.allocPoolPage(), -1);
    pm.freePoolPage(got[3]!);
    assert.equal(pm.allocPoolPage(), got[3]);
    assert.equal(pm.allocPoolPage(), -1);
    // non-pool pages are never taken into the pool
    pm.freePoolPage(5);
    pm.freePoolPage(pm.sharedInfoPage);
    pm.freePoolPage(pm.totalPages);
    assert.equal(pm.allocPoolPage(), -1);
  });

  test('RAM frames given back become free to populate again; nothing but RAM is taken that way', () => {
    const pm = new Physmap({ ramPages: 16, maxGrantFrames: 1, poolPages: 0 });
    pm.freeRamPage(15);
    pm.freeRamPage(pm.sharedInfoPage);
    pm.freeRamPage(16);
    pm.freeRamPage(-1);
    assert.equal(pm.allocPoolPage(), 15);
    assert.equal(pm.allocPoolPage(), -1);
  });

  test('ballooning out pages and back in gives the runs back: each page goes back beside its neighbours and, where the map may join them, into their run and slot', () => {
    const pm = new Physmap({ ramPages: 64, maxGrantFrames: 1, poolPages: 4 });
    const vm = new FakeVm();
    pm.attach(vm as unknown as Vm, HOST_BASE, Infinity, true);
    const runs = () => pm.segments().filter((x) => x.gfn < 64).length;
    assert.equal(runs(), 1);
    // Linux's balloon: every other page of 8..39 out, then the rest of them
    const out = [...Array.from({ length: 16 }, (_, i) => 8 + 2 * i), ...Array.from({ length: 16 }, (_, i) => 9 + 2 * i)];
    for (const g of out) pm.freeRamPage(pm.unmap(g));
    assert.equal(runs(), 2, 'a hole of 32 pages');
    // back in, last out first (the balloon's list order), while the pool still has pages of its own
    for (const g of [...out].reverse()) {
      const hp = pm.allocPoolPage(g);
      assert.equal(hp, g, `gfn ${g} gets its own frame back, beside a neighbour`);
      pm.map(g, hp);
    }
    assert.equal(runs(), 1, 'one run again');
    checkSlots(pm, vm);
    assert.equal(vm.slots.size, pm.segments().length, 'one slot per segment, the joined ones gone');
    // a gfn with no mapped neighbour takes whatever is free
    assert.ok(pm.allocPoolPage(1000) >= pm.poolBase);
  });

  test('a domain without a pool has none', () => {
    const pm = new Physmap({ ramPages: 16, maxGrantFrames: 1, poolPages: 0 });
    assert.equal(pm.allocPoolPage(), -1);
  });
});


describe('physmap: property test against a model', () => {
  for (const [seed, coalesce] of [1, 2, 3, 4, 5, 6, 7, 8].flatMap((s) => [[s, false], [s, true]] as const)) {
    test(`random map/unmap sequence (seed ${seed}${coalesce ? ', runs joined' : ''}): slots never overlap and cover exactly the mapped GFNs`, () => {
      const r = rng(seed);
      const { pm, vm } = attached(small, coalesce);
      const model = new Map<number, number>();
      for (let g = 0; g < 64; g++) model.set(g, g);
      for (let i = 0; i < SPECIAL_PAGES; i++) model.set(SPECIAL_PFN_BASE + i, pm.specialBase + i);
      const gfns = () => {
        const k = r();
        if (k < 0.5) return Math.floor(r() * 72);
        if (k < 0.8) return SPECIAL_PFN_BASE - 4 + Math.floor(r() * 16);
        return 0x80000 + Math.floor(r() * 8);
      };
      for (let step = 0; step < 400; step++) {
        const gfn = gfns();
        if (r() < 0.65) {
          // now and then the page that continues the run below, so runs get joined
          const below = model.get(gfn - 1);
          const hp = below !== undefined && below + 1 < pm.totalPages && r() < 0.4 ? below + 1 : Math.floor(r() * pm.totalPages);
          let prev = -1;
          for (const [g, h] of model) if (h === hp) prev = g;
          let expect = -1;
          if (prev !== gfn) {
            if (prev >= 0) model.delete(prev);
            expect = model.get(gfn) ?? -1;
            model.set(gfn, hp);
          }
          assert.equal(pm.map(gfn, hp), expect, `step ${step}: map(${gfn.toString(16)}, ${hp})`);
        } else {
          const expect = model.get(gfn) ?? -1;
          model.delete(gfn);
          assert.equal(pm.unmap(gfn), expect, `step ${step}: unmap(${gfn.toString(16)})`);
        }
        checkSlots(pm, vm, model);
        const segs = pm.segments();
        for (let i = 1; i < segs.length; i++) assert.ok(segs[i - 1]!.gfn + segs[i - 1]!.count <= segs[i]!.gfn, 'segments sorted, disjoint');
        for (const [g, h] of model) {
          assert.equal(pm.hostPageOf(g), h);
          assert.equal(pm.gfnOfHostPage(h), g);
        }
        for (let k = 0; k < 8; k++) {
          const g = gfns();
          assert.equal(pm.hostPageOf(g), model.get(g) ?? -1);
        }
      }
    });
  }
});

test('a map that would need more KVM slots than the host has is refused with -ENOMEM and changes nothing', () => {
  const vm = { setUserMemoryRegion: () => {}, deleteMemoryRegion: () => {} } as unknown as Vm;
  const p = new Physmap({ ramPages: 64, maxGrantFrames: 2, poolPages: 8 });
  p.attach(vm, 0n, 6); // RAM + special pages use 2 slots
  p.map(10, p.sharedInfoPage); // splits RAM: 4 slots
  const before = p.segments().map((s) => ({ ...s }));
  assert.throws(() => p.map(20, p.grantBase), (e: unknown) => e instanceof XenError && e.errno === ENOMEM);
  assert.deepEqual(p.segments().map((s) => ({ ...s })), before);
  assert.equal(p.hostPageOf(20), 20, 'the RAM page is still there');
});

test('a hole that would split a run when no KVM slot is left is refused with -ENOMEM and changes nothing', () => {
  const vm = { setUserMemoryRegion: () => {}, deleteMemoryRegion: () => {} } as unknown as Vm;
  const p = new Physmap({ ramPages: 64, maxGrantFrames: 2, poolPages: 8 });
  p.attach(vm, 0n, 3); // RAM + special pages use 2 slots
  assert.equal(p.unmap(10), 10, 'the first split takes the last slot');
  const before = p.segments().map((s) => ({ ...s }));
  assert.throws(() => p.unmap(20), (e: unknown) => e instanceof XenError && e.errno === ENOMEM);
  assert.deepEqual(p.segments().map((s) => ({ ...s })), before);
  assert.equal(p.hostPageOf(20), 20, 'the RAM page is still there');
  assert.equal(p.unmap(63), 63, 'trimming the end of a run needs no new slot');
  assert.equal(p.unmap(11), 11, 'nor does trimming its start');
});

describe('physmap: copies on other workers', () => {
  test('a copy loaded with the owner\'s segments translates as the owner does; changes bump the version', () => {
    const owner = new Physmap({ ramPages: 64, maxGrantFrames: 2, poolPages: 4 });
    const copy = new Physmap({ ramPages: 64, maxGrantFrames: 2, poolPages: 4 });
    const v0 = owner.version;
    owner.map(10, owner.sharedInfoPage);
    assert.ok(owner.version > v0);
    assert.notEqual(copy.hostPageOf(10), owner.sharedInfoPage);
    const before = copy.version;
    copy.load(owner.segments());
    assert.ok(copy.version > before);
    for (const gfn of [0, 9, 10, 11, 63, 64]) assert.equal(copy.hostPageOf(gfn), owner.hostPageOf(gfn), `gfn ${gfn}`);
  });
});
