// Entry loaded on every page: registers this browser as a device of the signed-in user,
// once per tab session and user (a different user logging in on the same tab registers too).
import { registerDevice } from "./device.js";

const account = document.querySelector("[data-account-user]");
if (account) {
  const flag = `cp.device_registered.${account.dataset.accountUser}`;
  if (!sessionStorage.getItem(flag)) {
    registerDevice()
      .then(() => sessionStorage.setItem(flag, "1"))
      .catch(() => {}); // retried on the next page load
  }
}
