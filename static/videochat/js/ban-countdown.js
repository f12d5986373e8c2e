// Live countdown on the "banned" page. Each [data-ban-countdown][data-seconds-left] element
// counts down from the server's own figure (not the expiry time against the browser's clock,
// which may be off by hours) and reloads the page once the ban is over.

function format(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return (d ? `${d}d ` : "") + `${pad(h)}:${pad(m)}:${pad(sec)}`;
}

export function startCountdown(el, { now = () => performance.now(), reload = () => window.location.reload() } = {}) {
  const seconds = Number(el.dataset.secondsLeft);
  if (!Number.isFinite(seconds) || seconds <= 0) return null;
  const end = now() + seconds * 1000;
  let timer = null;
  const tick = () => {
    const left = end - now();
    el.textContent = format(left);
    if (left <= 0) {
      clearInterval(timer);
      // A moment's grace so the server agrees the ban is over when the page comes back.
      setTimeout(reload, 1000);
    }
  };
  timer = setInterval(tick, 250);
  tick();
  return timer;
}

for (const el of document.querySelectorAll("[data-ban-countdown][data-seconds-left]")) {
  startCountdown(el);
}
