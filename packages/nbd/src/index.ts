export * from './protocol.js';
export { NBD_DRIVER, nbdErrorCode, nbdErrorName, nbdReplyError, toNbdErrno, optionErrorCode } from './error-map.js';
export type { NbdAddress } from './connection.js';
export { NbdClient, type NbdConnectOptions, type NbdExtent, type BlockSizes } from './nbd-client.js';
export { InFlightWindow } from './in-flight-window.js';
export { NbdServer, type NbdServerOptions } from './nbd-server.js';
export { isReadOnly, type NbdBackend, type NbdExport, type ReadRun, type StatusDescriptor } from './nbd-backend.js';
export { blockDeviceBackend, type BlockDeviceBackendOptions } from './block-device-backend.js';
export { NbdBlockDevice, type NbdBlockDeviceOptions } from './nbd-block-device.js';
