// A still frame of the partner's video for a report, as a JPEG Blob. DOM-free: it is given the
// <video> (anything with videoWidth/videoHeight that drawImage accepts) and makes its own
// canvas (OffscreenCanvas where the browser has it, else the factory it is passed).

export const MAX_SNAPSHOT_WIDTH = 960;

export function snapshotSize(width, height, maxWidth = MAX_SNAPSHOT_WIDTH) {
  if (!width || !height) return null;
  const scale = Math.min(1, maxWidth / width);
  return { width: Math.round(width * scale), height: Math.round(height * scale) };
}

function defaultCanvas(width, height) {
  if (typeof OffscreenCanvas === "function") return new OffscreenCanvas(width, height);
  const canvas = globalThis.document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

function toBlob(canvas, type, quality) {
  if (typeof canvas.convertToBlob === "function") return canvas.convertToBlob({ type, quality });
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("no frame"))), type, quality);
  });
}

// Resolves to a Blob, or null when the video has no frame yet.
export async function captureFrame(video, { type = "image/jpeg", quality = 0.85,
  maxWidth = MAX_SNAPSHOT_WIDTH, makeCanvas = defaultCanvas } = {}) {
  const size = snapshotSize(video?.videoWidth, video?.videoHeight, maxWidth);
  if (!size) return null;
  const canvas = makeCanvas(size.width, size.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(video, 0, 0, size.width, size.height);
  return toBlob(canvas, type, quality);
}
