// The console's only script (served by the app; CSP allows nothing inline): copy buttons,
// confirmations for destructive forms, the policy editor's check. Every page works without it.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (source && navigator.clipboard) {
    navigator.clipboard.writeText(source.textContent.trim()).then(() => {
      button.textContent = "Copied";
    });
  }
});
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
// The policy editor checks what is typed (the server validates it as an apply would; nothing is
// saved) and lists every error with its line under the editor. Text only: never markup.
const editor = document.getElementById("policy-source");
const live = document.getElementById("policy-live");
if (editor && live && editor.dataset.check) {
  let timer = null;
  let sent = 0;
  const show = (result) => {
    live.replaceChildren();
    live.className = result.ok ? "live notice ok" : "live notice bad";
    if (result.ok) {
      live.textContent = result.summary;
      editor.removeAttribute("aria-invalid");
      return;
    }
    editor.setAttribute("aria-invalid", "true");
    const list = document.createElement("ul");
    for (const found of result.problems) {
      const item = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = found.problem;
      item.append(code);
      if (found.line) {
        const line = document.createElement("pre");
        line.className = "at-line";
        line.textContent = `${found.line} | ${found.text}`;
        item.append(line);
      }
      list.append(item);
    }
    live.append(list);
  };
  editor.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++sent;
      const response = await fetch(editor.dataset.check, {
        method: "POST",
        body: new FormData(editor.form),
        credentials: "same-origin",
      });
      if (response.ok && mine === sent) show(await response.json());
    }, 400);
  });
}
