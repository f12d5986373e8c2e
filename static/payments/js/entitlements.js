// Which paid features the user holds, kept current by the server over /ws/payments/: a page
// that locks a feature calls watchEntitlements and unlocks it the moment a purchase lands
// (or locks it again after a refund or expiry), without a reload.
import { LiveSocket } from "../../shared/js/socket.js";

export function watchEntitlements(onChange) {
  const socket = new LiveSocket("/ws/payments/");
  socket.on("entitlements", (m) => onChange(new Set(m.features ?? [])));
  socket.connect();
  return socket;
}
