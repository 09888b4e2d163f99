// The console works without JavaScript; this only adds "expand all" to the span list.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-toggle-details]");
  if (!button) return;
  const box = document.querySelector(button.dataset.toggleDetails);
  if (!box) return;
  const details = box.querySelectorAll("details");
  const open = Array.from(details).some((d) => !d.open);
  details.forEach((d) => { d.open = open; });
  button.textContent = open ? "collapse all" : "expand all";
});
