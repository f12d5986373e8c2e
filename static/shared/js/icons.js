// SVG icons (lucide-static) and flags (flag-icons) as elements, the same markup the
// {% icon %} and {% flag %} template tags render: no emoji font needed.

export function icon(name, label = "") {
  const span = document.createElement("span");
  span.className = `icon icon-${name}`;
  if (label) {
    span.setAttribute("role", "img");
    span.setAttribute("aria-label", label);
  } else {
    span.setAttribute("aria-hidden", "true");
  }
  return span;
}

// `code` is an ISO 3166-1 alpha-2 code; anything else shows the "unknown" flag.
export function flag(code, name = "") {
  const span = document.createElement("span");
  const cc = /^[A-Za-z]{2}$/.test(code || "") ? code.toLowerCase() : "xx";
  span.className = `fi fi-${cc}`;
  span.setAttribute("role", "img");
  span.setAttribute("aria-label", name || (cc === "xx" ? "Country unknown" : cc.toUpperCase()));
  if (name) span.title = name;
  return span;
}
