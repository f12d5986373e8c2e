// Live countdown on the "banned" page: every [data-ban-countdown][data-expires] element shows
// the time left until its ISO expiry and reloads the page when the ban is over.

function format(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return (d ? `${d}d ` : "") + `${pad(h)}:${pad(m)}:${pad(sec)}`;
}

export function startCountdown(el, now = () => Date.now()) {
  const expires = Date.parse(el.dataset.expires);
  if (Number.isNaN(expires)) return null;
  const tick = () => {
    const left = expires - now();
    el.textContent = format(left);
    if (left <= 0) {
      clearInterval(timer);
      window.location.reload();
    }
  };
  const timer = setInterval(tick, 1000);
  tick();
  return timer;
}

for (const el of document.querySelectorAll("[data-ban-countdown][data-expires]")) {
  startCountdown(el);
}
