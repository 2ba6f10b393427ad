// Progressive enhancement of the upload form: submit on choose, drag and drop, paste, thumbnails
// in the result cards. Without this script (or without JavaScript) the form still posts every
// chosen photo and the server answers a whole page with a card for each.
(function () {
  "use strict";
  const form = document.getElementById("classify-form");
  const input = document.getElementById("file");
  const camera = document.getElementById("camera");
  const zone = document.getElementById("dropzone");
  if (!form || !input || !zone) return;
  let sent = [];  // the photos of the last submission, in the order the form sends them
  let urls = [];

  form.addEventListener("submit", function () {
    sent = Array.from(input.files).concat(camera ? Array.from(camera.files) : []);
  });

  // Each card's thumbnail comes from the file the browser already has: nothing is fetched, and
  // no <img> exists until it has a picture to show.
  document.body.addEventListener("htmx:afterSwap", function () {
    urls.forEach(function (url) { URL.revokeObjectURL(url); });
    urls = [];
    document.querySelectorAll("#result .thumb[data-index]").forEach(function (slot) {
      const file = sent[Number(slot.dataset.index)];
      if (!file || !file.type.startsWith("image/")) return;
      const img = document.createElement("img");
      img.alt = slot.closest(".card").querySelector(".filename").textContent;
      img.src = URL.createObjectURL(file);
      urls.push(img.src);
      slot.replaceChildren(img);
    });
  });

  // Dropped or pasted files go into the real input, so HTMX and the plain form both send them.
  function useFiles(files) {
    const transfer = new DataTransfer();
    Array.from(files).forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
    if (camera) camera.value = "";
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  [input, camera].forEach(function (picker) {
    if (!picker) return;
    picker.addEventListener("change", function () {
      if (!picker.files.length) return;
      const other = picker === input ? camera : input;
      if (other) other.value = "";  // one choice at a time: the photos just chosen
      form.requestSubmit();
    });
  });

  // Another model for the same photos: classify them again rather than make the user re-upload.
  const model = document.getElementById("model");
  if (model) {
    model.addEventListener("change", function () {
      if (input.files.length || (camera && camera.files.length)) form.requestSubmit();
    });
  }

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) useFiles(files);
  });

  document.addEventListener("paste", function (event) {
    const files = event.clipboardData && event.clipboardData.files;
    if (files && files.length) {
      event.preventDefault();
      useFiles(files);
    }
  });
})();
