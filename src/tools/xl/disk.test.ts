// xl-disk-configuration(5): the spec strings of the man page and the rules
// around them (positional slots, key=value, flags, target= last).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DiskSpecError, isValidVdev, parseDiskSpec, serialiseDiskSpec } from './disk.js';
import type { DiskSpec } from './config.js';

const disk = (over: Partial<DiskSpec>): DiskSpec => ({
  target: '', format: 'raw', vdev: '', access: 'rw', devtype: 'disk', backend: '0', directIoSafe: false, trusted: true, ...over,
});

function fails(spec: string): string {
  try {
    parseDiskSpec(spec);
  } catch (e) {
    assert.ok(e instanceof DiskSpecError, String(e));
    return e.message;
  }
  assert.fail(`'${spec}' was accepted`);
}

test('the man page\'s equivalent forms of a disk', () => {
  const want = disk({ target: '/dev/vg/guest-volume', vdev: 'hda' });
  for (const spec of ['/dev/vg/guest-volume,,hda', '/dev/vg/guest-volume,raw,hda,rw',
    'format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume', 'raw:/dev/vg/guest-volume,hda,w']) {
    assert.deepEqual(parseDiskSpec(spec), want, spec);
  }
});

test('the man page\'s equivalent forms of a cdrom', () => {
  const want = disk({ target: '/root/image.iso', vdev: 'hdc', access: 'r', devtype: 'cdrom' });
  for (const spec of ['/root/image.iso,,hdc,cdrom', '/root/image.iso,,hdc,,cdrom', '/root/image.iso,raw,hdc,devtype=cdrom',
    'format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso', 'raw:/root/image.iso,hdc:cdrom,ro']) {
    assert.deepEqual(parseDiskSpec(spec), want, spec);
  }
});

test('an empty cdrom drive has no target', () => {
  assert.deepEqual(parseDiskSpec(',,hdc:cdrom,r'), disk({ vdev: 'hdc', access: 'r', devtype: 'cdrom' }));
  assert.deepEqual(parseDiskSpec('vdev=xvdc, devtype=cdrom'), disk({ vdev: 'xvdc', access: 'r', devtype: 'cdrom' }));
  assert.equal(fails('vdev=xvda'), 'no target specified (only a cdrom may be empty)');
});

test('positional parameters fill the slots not yet given by name', () => {
  assert.deepEqual(parseDiskSpec('vdev=xvdb, /img, qcow2, r'), disk({ target: '/img', vdev: 'xvdb', format: 'qcow2', access: 'r' }));
  assert.equal(fails('/img,raw,xvda,rw,extra'), "too many positional parameters at 'extra'");
});

test('target= comes last and takes the rest of the string, commas included', () => {
  assert.equal(parseDiskSpec('vdev=xvda, target=/a,b=c,d').target, '/a,b=c,d');
  assert.equal(parseDiskSpec('vdev=xvda,target=iscsi:iqn.2001-04.com.example:disk,').target, 'iscsi:iqn.2001-04.com.example:disk');
});

test('vdev is required and must be a Xen virtual device name', () => {
  assert.equal(fails('/img'), 'no vdev specified');
  assert.equal(fails('/img,,xvda,,vdev=xvdb'), "parameter 'vdev' given twice");
  for (const v of ['xvda', 'xvdz', 'xvdaa', 'xvda1', 'hda', 'hdd2', 'sda', 'sdp15', 'd0', 'd12p3']) assert.ok(isValidVdev(v), v);
  for (const v of ['vda', 'xvd', 'xvdA', 'hd1', 'sd', 'dp1', 'd1p', '/dev/xvda']) assert.ok(!isValidVdev(v), v);
  assert.equal(fails('/img,,vda'), "invalid vdev 'vda' (xvdX, hdX, sdX or dNpM, see xen-vbd-interface(7))");
});

test('access: r/ro read-only, w/rw read-write; default rw, r for a cdrom which cannot be writable', () => {
  assert.equal(parseDiskSpec('/img,,xvda,ro').access, 'r');
  assert.equal(parseDiskSpec('/img,,xvda,w').access, 'rw');
  assert.equal(parseDiskSpec('/img,,xvda,access=').access, 'rw');
  assert.equal(fails('/img,,xvda,x'), "unknown access 'x' (r, ro, w or rw)");
  assert.equal(fails('/iso,,hdc,rw,cdrom'), 'a cdrom is read-only: access must be r or ro');
});

test('format: raw default, qcow qcow2 vhd qed; a vdev in the format slot is explained', () => {
  for (const f of ['qcow', 'qcow2', 'vhd', 'qed'] as const) assert.equal(parseDiskSpec(`/img,${f},xvda`).format, f);
  assert.equal(fails('/img,vmdk,xvda'), "unknown format 'vmdk' (raw, qcow, qcow2, vhd, qed)");
  assert.equal(fails('/img,xvda,w'), "unknown format 'xvda' (raw, qcow, qcow2, vhd, qed); a vdev in second place needs an empty format first: 'target,,xvda'");
});

test('deprecated prefixes: format, script and plain ones; the format slot is then skipped', () => {
  assert.deepEqual(parseDiskSpec('phy:/dev/vg/guest,xvda,w'), disk({ target: '/dev/vg/guest', vdev: 'xvda' }));
  assert.equal(parseDiskSpec('tap:qcow2:/img.qcow2,xvda,r').format, 'qcow2');
  assert.equal(parseDiskSpec('tap:aio:/img,xvda,w').target, '/img');
  assert.equal(parseDiskSpec('file:/img,xvda,w').target, '/img');
  const nbd = parseDiskSpec('nbd:server:10809,xvda,w');
  assert.deepEqual([nbd.script, nbd.target], ['block-nbd', 'server:10809']);
  assert.equal(parseDiskSpec('drbd:res0,xvda,w').script, 'block-drbd');
  assert.equal(fails('zfs:/tank/a,xvda,w'), "unknown deprecated disk prefix 'zfs:'");
  assert.equal(fails('raw:/img,xvda,w,format=qcow2'), "parameter 'format' given twice");
});

test('flags and the remaining key=value parameters', () => {
  assert.deepEqual(parseDiskSpec('/img,,xvda,direct-io-safe,discard,untrusted,backend=storage,backendtype=qdisk,script=block-x,specification=virtio'),
    disk({ target: '/img', vdev: 'xvda', directIoSafe: true, discard: true, trusted: false, backend: 'storage',
      backendtype: 'qdisk', script: 'block-x', specification: 'virtio' }));
  assert.equal(parseDiskSpec('/img,,xvda,no-discard,trusted').discard, false);
  assert.equal(fails('/img,,xvda,discard,no-discard'), "both 'discard' and 'no-discard' given");
  assert.equal(fails('/img,,xvda,trusted,untrusted'), "both 'trusted' and 'untrusted' given");
  assert.equal(fails('/img,,xvda,discard,discard'), "flag 'discard' given twice");
  assert.equal(fails('/img,,xvda,backendtype=nvme'), "unknown backendtype 'nvme' (phy, qdisk, standalone, tap)");
  assert.equal(fails('/img,,xvda,devtype=floppy'), "unknown devtype 'floppy' (xl knows only cdrom)");
  assert.equal(fails('/img,,xvda,specification=scsi'), "unknown specification 'scsi' (xen or virtio)");
  assert.equal(fails('/img,,xvda,cache=none'), "unknown parameter 'cache'");
  assert.equal(fails('/img,,xvda,colo,colo-host=h'), 'COLO disk replication is not supported by xenode');
  assert.equal(fails('/img,,xvda,=x'), "malformed parameter '=x'");
});

test('whitespace before parameters is ignored', () => {
  assert.deepEqual(parseDiskSpec('  /img ,  , xvda ,\trw'), disk({ target: '/img', vdev: 'xvda' }));
});

test('serialised specs parse back to the same DiskSpec', () => {
  for (const spec of ['/img,,xvda', ',,hdc:cdrom', 'phy:/dev/x,xvdb,r',
    'vdev=d1p2,direct-io-safe,no-discard,untrusted,backend=dd,backendtype=tap,script=s,specification=xen,target=/a, b']) {
    const d = parseDiskSpec(spec);
    assert.deepEqual(parseDiskSpec(serialiseDiskSpec(d)), d, spec);
  }
  assert.equal(serialiseDiskSpec(parseDiskSpec('/img,,xvda')), 'format=raw, vdev=xvda, access=rw, target=/img');
});
