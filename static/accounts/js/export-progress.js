// "What we hold" page: follows an export being built (progress bar), then shows its link.
const box = document.querySelector("[data-export-status-url]");
const POLL_MS = 1000;

function render(state) {
  box.querySelector("[data-export-label]").textContent = state.status_label;
  const bar = box.querySelector("[data-export-progress]");
  const busy = state.status === "pending" || state.status === "running";
  bar.hidden = !busy;
  bar.value = state.percent;
  bar.textContent = `${state.percent}%`;
  const ready = box.querySelector("[data-export-ready]");
  ready.hidden = !state.download_url;
  if (state.download_url) {
    box.querySelector("[data-export-link]").href = state.download_url;
    box.querySelector("[data-export-expires]").textContent = state.expires_at
      .slice(0, 16)
      .replace("T", " ");
  }
  return busy;
}

async function poll() {
  try {
    const response = await fetch(box.dataset.exportStatusUrl, { credentials: "same-origin" });
    if (response.ok && !render(await response.json())) return;
  } catch {
    // Offline for a moment: try again on the next tick.
  }
  setTimeout(poll, POLL_MS);
}

if (box && !box.querySelector("[data-export-progress]").hidden) poll();
