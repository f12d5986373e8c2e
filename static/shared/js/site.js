// Entry loaded on every page: tells the server what this browser is (make, platform,
// version) once per device, so the devices page can name it.
import { describeThisDevice } from "./device.js";

const account = document.querySelector("[data-account-device]");
if (account) {
  const flag = `cp.device_described.${account.dataset.accountDevice}`;
  if (!sessionStorage.getItem(flag)) {
    describeThisDevice()
      .then(() => sessionStorage.setItem(flag, "1"))
      .catch(() => {}); // retried on the next page load
  }
}
