// The Matrix crypto SDK (matrix-sdk-crypto-wasm, from the npm registry), loaded once per page
// from our static files. Everything cryptographic in CallsApp goes through it.
import * as sdk from "/static/vendor/@matrix-org/matrix-sdk-crypto-wasm/index.mjs";

let ready = null;

/** The SDK module, once its WebAssembly is instantiated. */
export async function loadSdk() {
  if (!ready) ready = sdk.initAsync().then(() => sdk);
  return ready;
}
