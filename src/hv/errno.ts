// Xen's errno values (public/errno.h). Hypercalls return -value on failure.
export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EIO = 5;
export const E2BIG = 7;
export const EBADF = 9;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENODEV = 19;
export const EINVAL = 22;
export const ENOSPC = 28;
export const ERANGE = 34;
export const ENOSYS = 38;
export const ENODATA = 61;
export const ETIME = 62;
export const EOPNOTSUPP = 95;

/** Thrown inside hypercall handlers to return -errno to the guest. */
export class XenError extends Error {
  constructor(readonly errno: number, why?: string) {
    super(why ?? `Xen errno ${errno}`);
  }
}
