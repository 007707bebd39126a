// The review queue's keyboard: y confirms the tag, n rejects it, s skips, b goes back.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement) return;
  const actions = {
    y: () => document.getElementById("answer-yes")?.requestSubmit(),
    n: () => document.getElementById("answer-no")?.requestSubmit(),
    s: () => document.getElementById("skip")?.click(),
    ArrowRight: () => document.getElementById("skip")?.click(),
    b: () => document.getElementById("back")?.click(),
    ArrowLeft: () => document.getElementById("back")?.click(),
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
});
