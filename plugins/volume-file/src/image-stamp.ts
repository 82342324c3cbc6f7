// Image stamps moved to @cairn/core (drivers/image-stamp.ts) so that the qcow2 driver uses them too.
export { isImageStamp, sameStamp, settledStampOf, stampOf, type ImageStamp } from '@cairn/core';
