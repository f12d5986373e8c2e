// Entry loaded on every page: registers this browser as a device of the signed-in user.
import { registerDevice } from "./device.js";

if (document.body.dataset.authenticated === "true" && !sessionStorage.getItem("cp.device_registered")) {
  registerDevice().then(() => sessionStorage.setItem("cp.device_registered", "1")).catch(() => {});
}
