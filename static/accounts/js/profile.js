// Profile page: previews a chosen photo before it is uploaded.
const preview = document.querySelector("[data-photo-preview]");
const input = document.querySelector("input[type=file][name=photo]");
if (preview && input) {
  input.addEventListener("change", () => {
    const file = input.files?.[0];
    if (!file || !file.type.startsWith("image/")) return;
    const img = document.createElement("img");
    img.alt = "Your new photo";
    img.src = URL.createObjectURL(file);
    img.onload = () => URL.revokeObjectURL(img.src);
    preview.replaceChildren(img);
  });
}
