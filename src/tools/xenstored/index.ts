// Public surface of the xenstore daemon for the rest of xenode.
export { Xenstored, SERVER_FEATURES, type XenstoredHooks, type XenstoredOptions, type DomainRingPort } from './daemon.js';
export { LocalClient, SocketClient, ReconnectingClient, XsClientBase, type WatchEvent } from './client.js';
export { XsError, XsType, type XsErrno } from './wire.js';
export { DEFAULT_QUOTA, type Quota } from './store.js';
