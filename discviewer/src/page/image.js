// Decoding and rendering one frame (calls decode.js and render.js), shared by the view,
// the thumbnails and the test hook.
import { decodeFrame } from '../decode.js';
import { defaultWindow, renderRGBA } from '../render.js';

/** A canvas holding the frame at its own size, and the frame's default window. */
export async function renderFrame(file, index, window, invert = false) {
  const frame = await decodeFrame(file, index);
  const win = window || defaultWindow(file, frame);
  const rgba = renderRGBA(file, frame, { center: win.center, width: win.width, invert });
  const canvas = document.createElement('canvas');
  canvas.width = frame.columns;
  canvas.height = frame.rows;
  canvas.getContext('2d').putImageData(new ImageData(rgba, frame.columns, frame.rows), 0, 0);
  return { frame, canvas, window: win };
}

export async function thumbnail(file, size = 96) {
  const { canvas } = await renderFrame(file, 0);
  const scale = size / Math.max(canvas.width, canvas.height);
  const thumb = document.createElement('canvas');
  thumb.width = Math.max(1, Math.round(canvas.width * scale));
  thumb.height = Math.max(1, Math.round(canvas.height * scale));
  const ctx = thumb.getContext('2d');
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(canvas, 0, 0, thumb.width, thumb.height);
  return thumb;
}
