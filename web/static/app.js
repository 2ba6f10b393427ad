// Progressive enhancement of the upload form: preview, drag and drop, paste, submit on choose.
// Without this script (or without JavaScript) the form still posts and the server answers a page.
(function () {
  "use strict";
  const form = document.getElementById("classify-form");
  const input = document.getElementById("file");
  const zone = document.getElementById("dropzone");
  const preview = document.getElementById("preview");
  if (!form || !input || !zone) return;

  function showPreview(file) {
    if (!preview || !file || !file.type.startsWith("image/")) return;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  }

  // Put a dropped or pasted file into the real input, so HTMX and the plain form both send it.
  function useFile(file) {
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  input.addEventListener("change", function () {
    if (!input.files.length) return;
    showPreview(input.files[0]);
    form.requestSubmit();
  });

  // Another model for the same photo: classify it again rather than make the user re-upload.
  const model = document.getElementById("model");
  if (model) {
    model.addEventListener("change", function () {
      if (input.files.length) form.requestSubmit();
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
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) useFile(file);
  });

  document.addEventListener("paste", function (event) {
    const items = (event.clipboardData && event.clipboardData.files) || [];
    if (items.length) {
      event.preventDefault();
      useFile(items[0]);
    }
  });
})();
