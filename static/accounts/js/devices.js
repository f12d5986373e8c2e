// Devices page: marks the row of the browser the user is looking from.
import { deviceId } from "../../shared/js/device.js";

const mine = deviceId();
for (const row of document.querySelectorAll("[data-device-id]")) {
  if (row.dataset.deviceId === mine) {
    row.classList.add("current");
    row.querySelector("[data-this-device]")?.removeAttribute("hidden");
  }
}
